#include "rbd/migration.h"

#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstdio>
#include <rbd/librbd.hpp>

#include "rbd/cluster.h"
#include "rbd/error.h"
#include "rbd/new_image_options.h"

namespace rbdvault::rbd {
namespace {

// A JSON string literal: the spec is stored in the target's header and parsed by librbd, so a
// quote or backslash in a URL or path must not change its structure.
std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (const unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

const char* state_name(librbd::image_migration_state_t s) {
  switch (s) {
    case RBD_IMAGE_MIGRATION_STATE_ERROR:
      return "error";
    case RBD_IMAGE_MIGRATION_STATE_PREPARING:
      return "preparing";
    case RBD_IMAGE_MIGRATION_STATE_PREPARED:
      return "prepared";
    case RBD_IMAGE_MIGRATION_STATE_EXECUTING:
      return "executing";
    case RBD_IMAGE_MIGRATION_STATE_EXECUTED:
      return "executed";
    case RBD_IMAGE_MIGRATION_STATE_ABORTING:
      return "aborting";
    default:
      return "unknown";
  }
}

class ProgressAdapter : public librbd::ProgressContext {
 public:
  explicit ProgressAdapter(const ImportMigration::Progress& fn) : fn_(fn) {}
  // librbd ignores the return value of a migration's progress: it cannot be used to stop.
  int update_progress(uint64_t offset, uint64_t total) override {
    if (fn_) fn_(offset, total);
    return 0;
  }

 private:
  const ImportMigration::Progress& fn_;
};

}  // namespace

std::string raw_http_source_spec(const std::string& url) {
  return R"({"type":"raw","stream":{"type":"http","url":)" + json_string(url) + "}}";
}

std::string raw_file_source_spec(const std::string& path) {
  return R"({"type":"raw","stream":{"type":"file","file_path":)" + json_string(path) + "}}";
}

std::optional<MigrationStatus> migration_status(Cluster& cluster, const std::string& pool, const std::string& name) {
  librados::IoCtx io = cluster.open_pool(pool);
  librbd::RBD rbd;
  librbd::image_migration_status_t st;
  const int r = rbd.migration_status(io, name.c_str(), &st, sizeof st);
  // An image that is not being migrated has no migration header: librbd answers EINVAL.
  if (r == -EINVAL) return std::nullopt;
  check(r, "migration status of " + pool + "/" + name);
  return MigrationStatus{state_name(st.state), st.state_description};
}

void abort_migration(Cluster& cluster, const std::string& pool, const std::string& name) {
  librados::IoCtx io = cluster.open_pool(pool);
  librbd::RBD rbd;
  check(rbd.migration_abort(io, name.c_str()), "abort the migration of " + pool + "/" + name);
}

ImportMigration::ImportMigration(Cluster& cluster, const std::string& pool, const std::string& name,
                                 const std::string& source_spec, const NewImageOptions& image)
    : cluster_(cluster), pool_(pool), name_(name), target_(pool + "/" + name) {
  librados::IoCtx io = cluster.open_pool(pool);
  librbd::RBD rbd;
  librbd::ImageOptions opts;
  set_new_image_options(opts, image);
  const int r = rbd.migration_prepare_import(source_spec.c_str(), io, name.c_str(), opts);
  if (r == -EEXIST) throw CephError("image " + target_ + " already exists; refusing to overwrite it", r);
  // A failed prepare removes what it created (librbd's own rollback), so there is nothing to abort.
  check(r, "prepare the import of " + target_);
}

ImportMigration::~ImportMigration() {
  if (done_) return;
  try {
    abort_migration(cluster_, pool_, name_);
    spdlog::warn("aborted the migration of {}: the image is removed", target_);
  } catch (const std::exception& e) {
    spdlog::error("could not abort the migration of {} ({}); remove it with `rbd migration abort {}`", target_,
                  e.what(), target_);
  }
}

void ImportMigration::execute(const Progress& progress) {
  librados::IoCtx io = cluster_.open_pool(pool_);
  librbd::RBD rbd;
  ProgressAdapter adapter(progress);
  check(rbd.migration_execute_with_progress(io, name_.c_str(), adapter), "execute the migration of " + target_);
}

void ImportMigration::commit() {
  librados::IoCtx io = cluster_.open_pool(pool_);
  librbd::RBD rbd;
  check(rbd.migration_commit(io, name_.c_str()), "commit the migration of " + target_);
  done_ = true;
}

void ImportMigration::abort() {
  done_ = true;  // one attempt: a failure is reported here, not repeated by the destructor
  abort_migration(cluster_, pool_, name_);
}

}  // namespace rbdvault::rbd
