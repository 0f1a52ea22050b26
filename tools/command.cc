// Helpers every command handler shares (see command.h).
#include "tools/command.h"

#include <spdlog/spdlog.h>

#include <cstdio>

#include "store/error.h"
#include "store/oplog.h"
#include "store/rados_cache.h"

namespace rbdvault::tools {

int64_t whole_option(const Args& a, const char* name, const agent::Range& r) {
  return numeric(a, name, [&](const std::string& t) { return agent::parse_whole(t, r); });
}

int64_t duration_option(const Args& a, const char* name, const agent::Range& r) {
  return numeric(a, name, [&](const std::string& t) { return agent::parse_duration_in(t, r); });
}

double real_option(const Args& a, const char* name, const agent::RealRange& r) {
  return numeric(a, name, [&](const std::string& t) { return agent::parse_real(t, r); });
}

std::pair<std::string, uint16_t> listen_option(const Args& a) {
  constexpr agent::Range kPortRange{0, 65535};
  const std::string text = a.str("listen");
  const size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == text.size())
    throw UsageError("bad --listen '" + text + "': expected HOST:PORT (IPv6: [ADDR]:PORT)");
  std::string host = text.substr(0, colon);
  if (host.front() == '[') {
    if (host.back() != ']' || host.size() < 3) throw UsageError("bad --listen '" + text + "': unclosed [");
    host = host.substr(1, host.size() - 2);
  } else if (host.find(':') != std::string::npos) {
    throw UsageError("bad --listen '" + text + "': write an IPv6 address as [ADDR]:PORT");
  }
  try {
    return {host, static_cast<uint16_t>(agent::parse_whole(text.substr(colon + 1), kPortRange))};
  } catch (const std::invalid_argument& e) {
    throw UsageError("bad --listen '" + text + "': port " + e.what());
  }
}

std::string require_store(const Args& a) {
  std::string s = a.str("store");
  if (s.empty()) throw UsageError(a.command + ": --store DIR is required");
  // A store in a pool is opened through its index directory, brought up to date first.
  if (const auto r = rados_store(a)) {
    store::refresh_rados_cache(r->first, r->second);
    return r->second.string();
  }
  return s;
}

std::optional<std::pair<store::RadosLocation, std::filesystem::path>> rados_store(const Args& a) {
  auto where = store::parse_rados_spec(a.str("store"));
  if (!where) {
    for (const char* o : {"store-conf", "store-id", "store-keyring", "index-dir"})
      if (!a.str(o).empty()) throw UsageError(a.command + ": --" + std::string(o) + " is only for a rados:POOL store");
    return std::nullopt;
  }
  // The backup cluster is the one of -c/--id/--keyring unless named apart.
  auto pick = [&](const char* own, const char* ceph) { return a.str(own).empty() ? a.str(ceph) : a.str(own); };
  where->conf = pick("store-conf", "conf");
  where->id = pick("store-id", "id");
  where->keyring = pick("store-keyring", "keyring");
  // --op-timeout (commands talking to Ceph) bounds the backup cluster's operations too.
  if (a.vm.count("op-timeout")) {
    const int64_t t = duration_option(a, "op-timeout", agent::kOpTimeoutRange);
    if (t > 0) where->op_timeout_seconds = static_cast<int>(t);
  }
  const std::string dir = a.str("index-dir");
  return std::make_pair(*where, dir.empty() ? store::default_index_dir(*where) : std::filesystem::path(dir));
}

std::string one_positional(const Args& a, const char* what) {
  if (a.positional.size() != 1) throw UsageError(a.command + ": expected exactly one " + what);
  return a.positional.front();
}

void no_positional(const Args& a) {
  if (!a.positional.empty()) throw UsageError(a.command + ": unexpected argument " + a.positional.front());
}

void at_most_one_positional(const Args& a, const char* what) {
  if (a.positional.size() > 1) throw UsageError(a.command + ": expected at most one " + what);
}

rbd::ImageSpec parse_spec(const std::string& text) {
  try {
    return rbd::ImageSpec::parse(text);
  } catch (const std::invalid_argument& e) {
    throw UsageError(e.what());
  }
}

rbd::ImageSpec parse_image_spec(const Args& a, const std::string& text) {
  rbd::ImageSpec spec = parse_spec(text);
  // A command that acts on a whole image must not quietly drop a revision the operator named:
  // `expire POOL/IMAGE@3` would otherwise apply the policy to every revision of the image.
  if (!spec.snap.empty())
    throw UsageError(a.command + ": give POOL/IMAGE without @REV (" + text + "); this command takes whole images");
  return spec;
}

rbd::ConnectOptions connect_options(const Args& a) {
  rbd::ConnectOptions o;
  o.conf_path = a.str("conf");
  o.client_id = a.str("id");
  o.keyring = a.str("keyring");
  o.timeout_seconds = static_cast<int>(duration_option(a, "connect-timeout", agent::kConnectTimeoutRange));
  o.op_timeout_seconds = static_cast<int>(duration_option(a, "op-timeout", agent::kOpTimeoutRange));
  return o;
}

store::ImageRecord find_image(store::ReadOnlyStore& st, const rbd::ImageSpec& spec) {
  auto image = st.find_image(spec.pool, spec.image);
  if (!image)
    throw store::StoreError(store::StoreError::Kind::kNotFound,
                            "no backups of " + spec.pool + "/" + spec.image + " in this store");
  return *image;
}

namespace {

// "@REV": digits only. std::stoull alone takes " 7" and "+7", and wraps "-1" to a valid-looking
// number that may name a real revision.
uint64_t revision_number(const std::string& rev, const std::string& text) {
  try {
    if (rev.find_first_not_of("0123456789") != std::string::npos) throw std::invalid_argument("");
    return std::stoull(rev);
  } catch (const std::exception&) {
    throw UsageError("bad revision '" + rev + "' in " + text + ": expected a revision number (see rbdvault ls)");
  }
}

}  // namespace

store::RevisionRecord resolve_revision(store::ReadOnlyStore& st, const std::string& text) {
  const rbd::ImageSpec spec = parse_spec(text);
  // Checked before the store is asked: a mistyped number is a usage error whatever the store holds.
  const std::optional<uint64_t> id = spec.snap.empty() ? std::nullopt : std::optional(revision_number(spec.snap, text));
  const store::ImageRecord image = find_image(st, spec);
  if (!id) {
    auto latest = st.latest_revision(image.key);
    if (!latest)
      throw store::StoreError(store::StoreError::Kind::kNotFound,
                              "no revisions of " + spec.pool + "/" + spec.image + " in this store");
    return *latest;
  }
  auto rev = st.revision(*id);
  if (!rev || rev->image != image.key || (rev->flags & store::kRevisionForgetting))
    throw store::StoreError(store::StoreError::Kind::kNotFound,
                            "revision " + spec.snap + " of " + spec.pool + "/" + spec.image + " does not exist");
  return *rev;
}

int logged(const Args& a, const std::string& op, const std::string& image, const std::function<int(uint64_t&)>& body) {
  return logged_at(require_store(a), a, op, image, body);
}

int logged_at(const std::string& dir, const Args& a, const std::string& op, const std::string& image,
              const std::function<int(uint64_t&)>& body) {
  uint64_t ignored = 0;
  if (!store::Store::is_store(dir)) return body(ignored);
  store::OpLog log(dir);
  std::string id;
  try {
    id = log.begin(op, image, a.command_line);
  } catch (const store::StoreError& e) {
    // A store on read-only media can still be restored from; the log is not worth failing for.
    // Said after the command, and only when it succeeds: a writer refused for the same reason
    // (read-only, full) then gives one error line, not a warning first.
    const std::string warning = std::string(e.what()) + " (continued without the operation log)";
    const int rc = body(ignored);
    spdlog::warn("{}", warning);
    return rc;
  }
  uint64_t bytes = 0;
  auto end = [&](bool ok, const std::string& error) {
    try {
      log.end(id, ok, error, bytes);
    } catch (const store::StoreError& e) {
      spdlog::warn("{}", e.what());  // never mask the operation's own result
    }
  };
  try {
    const int rc = body(bytes);
    end(rc == 0, rc == 0 ? "" : "exit status " + std::to_string(rc));
    return rc;
  } catch (const std::exception& e) {
    end(false, e.what());
    throw;
  }
}

void print_json(const Json& j) { std::cout << j.dump(-1, ' ', false, Json::error_handler_t::replace) << "\n"; }

}  // namespace rbdvault::tools
