// Commands that read a revision back: restore (to an image or a file), verify (against Ceph).
#include <iostream>

#include "agent/restore.h"
#include "agent/verify.h"
#include "store/error.h"
#include "tools/command.h"
#include "tools/human.h"
#include "tools/progress.h"

namespace rbdvault::tools {
namespace {

int cmd_restore(const Args& a) {
  const rbd::ConnectOptions connect = connect_options(a);
  const std::string spec_text = one_positional(a, "POOL/IMAGE[@REV]");
  const std::string to = a.str("to"), to_file = a.str("to-file");
  if (to.empty() == to_file.empty()) throw UsageError("restore: give exactly one of --to POOL/NAME or --to-file PATH");
  std::optional<rbd::ImageSpec> dst;
  if (!to.empty()) {
    dst = parse_spec(to);
    if (!dst->snap.empty()) throw UsageError("restore: --to takes POOL/NAME without @SNAP");
  }
  return logged(a, "restore", spec_text, [&](uint64_t& bytes) {
    auto st = store::open_read_only(require_store(a));
    const store::RevisionRecord rev = resolve_revision(*st, spec_text);
    Progress progress(!a.quiet());
    agent::RestoreOptions o;
    o.progress = progress.callback();
    o.check_digest = !a.flag("skip-digest-check");
    agent::RestoreResult r;
    std::string target;
    if (dst) {
      rbd::Cluster cluster(connect);
      r = agent::restore_to_image(cluster, *st, rev, dst->pool, dst->image, o);
      target = dst->str();
    } else {
      r = agent::restore_to_file(*st, rev, to_file, o);
      target = to_file;
    }
    if (a.json()) {
      print_json(Json{{"image", rev.pool + "/" + rev.name},
                      {"revision", rev.id},
                      {"target", target},
                      {"size", rev.size},
                      {"bytes_written", r.bytes_written},
                      {"zero_blocks_skipped", r.zero_blocks_skipped},
                      {"seconds", r.seconds}});
    } else if (!a.quiet()) {
      std::cout << "restored " << rev.pool << "/" << rev.name << "@" << rev.id << " to " << target << " ("
                << human_size(rev.size) << ", " << human_size(r.bytes_written) << " written)\n";
    }
    bytes = r.bytes_written;
    return 0;
  });
}

int cmd_verify(const Args& a) {
  agent::VerifyOptions o;
  o.sample_percent = real_option(a, "sample", agent::kSampleRange);
  const rbd::ConnectOptions connect = connect_options(a);
  const std::string target = one_positional(a, "POOL/IMAGE[@REV]");
  return logged(a, "verify", target, [&](uint64_t& bytes) {
    auto st = store::open_read_only(require_store(a));
    const store::RevisionRecord rev = resolve_revision(*st, target);
    rbd::Cluster cluster(connect);
    const agent::VerifyResult r = agent::verify_revision(cluster, *st, rev, o);
    bytes = r.blocks_compared * st->block_size();
    if (a.json()) {
      print_json(Json{{"image", rev.pool + "/" + rev.name},
                      {"revision", rev.id},
                      {"blocks_compared", r.blocks_compared},
                      {"mismatches", r.mismatches}});
    } else {
      std::cout << rev.pool << "/" << rev.name << "@" << rev.id << ": " << r.blocks_compared << " blocks compared with "
                << rev.snap_name << ", " << r.mismatches << " mismatch(es)";
      for (auto b : r.first_mismatches) std::cout << (b == r.first_mismatches.front() ? ": blocks " : ", ") << b;
      std::cout << "\n";
    }
    return r.mismatches ? agent::exit_code(agent::ErrorClass::kDamage) : 0;
  });
}

}  // namespace

std::vector<Command> restore_commands() {
  std::vector<Command> c;
  c.push_back(
      {"restore", "--store DIR POOL/IMAGE[@REV] --to POOL/NAME | --to-file PATH",
       "Restore a revision (default: the latest) to a new RBD image or a file. The target appears "
       "complete and digest-checked, or not at all.",
       kStoreOption | kCephOptions | kFormatOption,
       [](po::options_description& o) {
         // clang-format off
                 o.add_options()
                     ("to", po::value<std::string>()->value_name("POOL/NAME"), "restore to this new RBD image")
                     ("to-file", po::value<std::string>()->value_name("PATH"), "restore to this new file")
                     ("skip-digest-check", po::bool_switch(),
                      "restore even when the recomputed digest differs (salvage only)");
         // clang-format on
       },
       cmd_restore});
  c.push_back({"verify", "--store DIR POOL/IMAGE[@REV] [--sample PERCENT]",
               "Compare a revision with the Ceph snapshot it was taken from.",
               kStoreOption | kCephOptions | kFormatOption,
               [](po::options_description& o) {
                 o.add_options()("sample", po::value<std::string>()->default_value("100")->value_name("PERCENT"),
                                 "percent of the blocks to compare (0.01 to 100)");
               },
               cmd_verify});
  return c;
}

}  // namespace rbdvault::tools
