#include "rbd/cluster.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <rbd/librbd.hpp>

#include "rbd/error.h"

namespace rbdvault::rbd {

CephError::CephError(const std::string& what, int code)
    : std::runtime_error(what + ": " + std::strerror(code < 0 ? -code : code)), code_(code) {}

bool CephError::not_found() const { return code_ == -ENOENT; }

long check(long r, const std::string& what) {
  if (r < 0) throw CephError(what, static_cast<int>(r));
  return r;
}

Cluster::Cluster(const ConnectOptions& options) {
  const std::string id = options.client_id.empty() ? "admin" : options.client_id;
  check(rados_.init2(("client." + id).c_str(), "ceph", 0), "initialise client." + id);
  if (!options.conf_path.empty()) {
    // librados reports a missing file as a bare ENOENT; say which file.
    if (!std::filesystem::exists(options.conf_path)) throw CephError("read ceph config " + options.conf_path, -ENOENT);
    check(rados_.conf_read_file(options.conf_path.c_str()), "read ceph config " + options.conf_path);
  } else {
    int r = rados_.conf_read_file(nullptr);
    if (r < 0) spdlog::debug("no default ceph.conf found ({})", r);
  }
  // CEPH_ARGS and friends, like the rbd CLI.
  rados_.conf_parse_env(nullptr);
  if (!options.keyring.empty()) {
    if (!std::filesystem::exists(options.keyring)) throw CephError("read keyring " + options.keyring, -ENOENT);
    check(rados_.conf_set("keyring", options.keyring.c_str()), "set keyring");
  }
  const std::string timeout = std::to_string(options.timeout_seconds);
  check(rados_.conf_set("client_mount_timeout", timeout.c_str()), "set client_mount_timeout");
  if (options.op_timeout_seconds > 0) {
    const std::string op = std::to_string(options.op_timeout_seconds);
    check(rados_.conf_set("rados_mon_op_timeout", op.c_str()), "set rados_mon_op_timeout");
    check(rados_.conf_set("rados_osd_op_timeout", op.c_str()), "set rados_osd_op_timeout");
  }
  // Backups read each byte once and restores write each byte once: librbd's cache would only
  // double the memory (32 MiB) and copies.
  check(rados_.conf_set("rbd_cache", "false"), "set rbd_cache");
  std::string mon_host;
  rados_.conf_get("mon_host", mon_host);
  check(rados_.connect(), "connect to cluster (mon host '" + mon_host + "', client." + id + ")");
  connected_ = true;
  spdlog::debug("connected to cluster as client.{} via {}", id, mon_host);
}

Cluster::~Cluster() { rados_.shutdown(); }

librados::IoCtx Cluster::open_pool(const std::string& pool) {
  librados::IoCtx io;
  int r = rados_.ioctx_create(pool.c_str(), io);
  if (r == -ENOENT) throw CephError("pool '" + pool + "' does not exist", r);
  check(r, "open pool '" + pool + "'");
  return io;
}

std::vector<ImageEntry> Cluster::list_images(const std::string& pool) {
  librados::IoCtx io = open_pool(pool);
  librbd::RBD rbd;
  std::vector<librbd::image_spec_t> specs;
  check(rbd.list2(io, &specs), "list images of pool '" + pool + "'");
  std::vector<ImageEntry> out;
  out.reserve(specs.size());
  for (auto& s : specs) out.push_back({s.id, s.name});
  std::sort(out.begin(), out.end(), [](auto& a, auto& b) { return a.name < b.name; });
  return out;
}

std::vector<std::string> Cluster::list_group_images(const std::string& pool, const std::string& group) {
  librados::IoCtx io = open_pool(pool);
  librbd::RBD rbd;
  std::vector<librbd::group_image_info_t> members;
  const std::string what = "list the images of RBD group " + pool + "/" + group;
  check(rbd.group_image_list(io, group.c_str(), &members, sizeof(librbd::group_image_info_t)), what);
  std::vector<std::string> out;
  for (const auto& m : members) {
    std::string member_pool;
    check(rados_.pool_reverse_lookup(m.pool, &member_pool), what);
    out.push_back(member_pool + "/" + m.name);
  }
  return out;
}

}  // namespace rbdvault::rbd
