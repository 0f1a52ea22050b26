// Commands on the list of revisions: ls, forget, expire, protect, unprotect.
#include <cstdio>
#include <iostream>

#include "agent/expire.h"
#include "agent/retention.h"
#include "store/error.h"
#include "tools/command.h"
#include "view/presentation.h"

namespace rbdvault::tools {
namespace {

const char* kind_name(store::RevisionKind k) { return k == store::RevisionKind::kFull ? "full" : "delta"; }

// "NAME#RUN" (the revisions of one group run share it), "-" outside a group.
std::string group_text(const store::RevisionRecord& r) {
  return (r.flags & store::kRevisionGroup) ? r.group + "#" + std::to_string(r.group_run) : "-";
}

int cmd_ls(const Args& a) {
  at_most_one_positional(a, "POOL/IMAGE");
  auto st = store::Store::open(require_store(a), store::OpenMode::kReadOnly);
  const std::vector<store::RevisionRecord> revs =
      a.positional.empty() ? st->revisions() : st->revisions(find_image(*st, parse_image_spec(a, a.positional.front())).key);
  if (a.json()) {
    Json list = Json::array();
    for (const auto& r : revs) list.push_back(view::revision_json(r));
    print_json(list);
    return 0;
  }
  std::printf("%-8s %-32s %-20s %10s %8s %-5s %10s %10s %-11s %-16s %s\n", "ID", "IMAGE", "CREATED", "SIZE",
              "PARENT", "KIND", "READ", "STORED", "CONSISTENCY", "GROUP", "NOTE");
  for (const auto& r : revs) {
    std::string note = (r.flags & store::kRevisionProtected) ? "protected" : "";
    if (r.flags & store::kRevisionVerifyFailed)
      note += note.empty() ? "differs-from-snapshot" : ",differs-from-snapshot";
    std::printf("%-8llu %-32s %-20s %10s %8s %-5s %10s %10s %-11s %-16s %s\n", static_cast<unsigned long long>(r.id),
                (r.pool + "/" + r.name).c_str(), view::iso_time(r.created).c_str(), view::human_size(r.size).c_str(),
                r.parent ? std::to_string(r.parent).c_str() : "-", kind_name(r.kind), view::human_size(r.bytes_read).c_str(),
                view::human_size(r.bytes_stored).c_str(), store::consistency_name(r.flags), group_text(r).c_str(),
                note.c_str());
  }
  return 0;
}

// POOL/IMAGE@REV with a revision number required.
store::RevisionRecord resolve_exact_revision(store::Store& st, const std::string& text) {
  if (parse_spec(text).snap.empty()) throw UsageError(text + ": give the revision as POOL/IMAGE@REV");
  return resolve_revision(st, text);
}

int cmd_forget(const Args& a) {
  const std::string spec = one_positional(a, "POOL/IMAGE@REV");
  if (parse_spec(spec).snap.empty()) throw UsageError(spec + ": give the revision as POOL/IMAGE@REV");
  return logged(a, "forget", spec, [&](uint64_t&) {
    auto st = store::Store::open(require_store(a), store::OpenMode::kWriter, "rbdvault forget " + spec);
    const store::RevisionRecord rev = resolve_exact_revision(*st, spec);
    st->forget(rev.id);
    if (!a.quiet())
      std::cout << "forgot " << rev.pool << "/" << rev.name << "@" << rev.id << " (run gc to free space)\n";
    return 0;
  });
}

int cmd_protect(const Args& a, bool on) {
  const std::string spec = one_positional(a, "POOL/IMAGE@REV");
  if (parse_spec(spec).snap.empty()) throw UsageError(spec + ": give the revision as POOL/IMAGE@REV");
  auto st = store::Store::open(require_store(a), store::OpenMode::kWriter, "rbdvault " + a.command + " " + spec);
  const store::RevisionRecord rev = resolve_exact_revision(*st, spec);
  st->set_protected(rev.id, on);
  if (!a.quiet())
    std::cout << (on ? "protected " : "unprotected ") << rev.pool << "/" << rev.name << "@" << rev.id << "\n";
  return 0;
}

agent::RetentionPolicy retention_policy(const Args& a) {
  agent::RetentionPolicy p;
  p.keep_last = static_cast<int>(whole_option(a, "keep-last", agent::kKeepRange));
  p.keep_hourly = static_cast<int>(whole_option(a, "keep-hourly", agent::kKeepRange));
  p.keep_daily = static_cast<int>(whole_option(a, "keep-daily", agent::kKeepRange));
  p.keep_weekly = static_cast<int>(whole_option(a, "keep-weekly", agent::kKeepRange));
  p.keep_monthly = static_cast<int>(whole_option(a, "keep-monthly", agent::kKeepRange));
  return p;
}

int cmd_expire(const Args& a) {
  const agent::RetentionPolicy policy = retention_policy(a);
  at_most_one_positional(a, "POOL/IMAGE");
  if (policy.empty()) throw UsageError("expire: give at least one --keep-* option (refusing to expire everything)");
  const bool dry = a.flag("dry-run");
  const std::string only = a.positional.empty() ? "" : a.positional.front();
  const std::optional<rbd::ImageSpec> only_spec = only.empty() ? std::nullopt : std::optional(parse_image_spec(a, only));
  return logged(a, "expire", only, [&](uint64_t&) {
    auto st = store::Store::open(require_store(a), dry ? store::OpenMode::kReadOnly : store::OpenMode::kWriter,
                                 "rbdvault expire " + only);
    const std::vector<store::ImageRecord> images =
        only_spec ? std::vector<store::ImageRecord>{find_image(*st, *only_spec)} : st->images();
    Json list = Json::array();
    uint64_t forgotten = 0;
    for (const auto& img : images) {
      for (const auto& [d, r] : agent::expire_image(*st, img.key, policy, dry)) {
        if (a.json()) {
          list.push_back(Json{{"image", img.pool + "/" + img.name},
                              {"id", d.id},
                              {"created", view::iso_time(r.created)},
                              {"action", d.keep ? "keep" : "forget"},
                              {"reasons", d.reasons}});
        } else if (!a.quiet()) {
          std::printf("%-32s %-8llu %-20s %-6s %s\n", (img.pool + "/" + img.name).c_str(),
                      static_cast<unsigned long long>(d.id), view::iso_time(r.created).c_str(), d.keep ? "keep" : "forget",
                      d.reasons.c_str());
        }
        if (!d.keep && !dry) ++forgotten;
      }
    }
    if (a.json())
      print_json(list);
    else if (!a.quiet())
      std::cout << (dry ? "dry run: nothing removed\n"
                        : std::to_string(forgotten) + " revision(s) forgotten; run gc to free space\n");
    return 0;
  });
}

void keep_options(po::options_description& o) {
  // clang-format off
  o.add_options()
      ("keep-last", po::value<std::string>()->default_value("0")->value_name("N"), "keep the N newest revisions")
      ("keep-hourly", po::value<std::string>()->default_value("0")->value_name("N"), "keep the newest of each of N hours")
      ("keep-daily", po::value<std::string>()->default_value("0")->value_name("N"), "keep the newest of each of N days")
      ("keep-weekly", po::value<std::string>()->default_value("0")->value_name("N"), "keep the newest of each of N weeks")
      ("keep-monthly", po::value<std::string>()->default_value("0")->value_name("N"),
       "keep the newest of each of N months")
      ("dry-run", po::bool_switch(), "show what would be forgotten, change nothing");
  // clang-format on
}

}  // namespace

std::vector<Command> history_commands() {
  std::vector<Command> c;
  c.push_back({"ls", "--store DIR [POOL/IMAGE]", "List revisions.", kStoreOption | kFormatOption, nullptr, cmd_ls});
  c.push_back({"forget", "--store DIR POOL/IMAGE@REV",
               "Remove one revision (its blocks are merged into the next); run gc to free space.", kStoreOption,
               nullptr, cmd_forget});
  c.push_back({"expire",
               "--store DIR [POOL/IMAGE] --keep-last N --keep-hourly N --keep-daily N --keep-weekly N "
               "--keep-monthly N [--dry-run]",
               "Apply a retention policy: forget the revisions no --keep-* option keeps.", kStoreOption | kFormatOption,
               keep_options, cmd_expire});
  c.push_back({"protect", "--store DIR POOL/IMAGE@REV", "Exempt a revision from forget and expire.", kStoreOption,
               nullptr, [](const Args& a) { return cmd_protect(a, true); }});
  c.push_back({"unprotect", "--store DIR POOL/IMAGE@REV", "Let forget and expire remove a revision again.",
               kStoreOption, nullptr, [](const Args& a) { return cmd_protect(a, false); }});
  return c;
}

}  // namespace rbdvault::tools
