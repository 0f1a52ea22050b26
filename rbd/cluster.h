// A connection to a Ceph cluster (RAII over librados::Rados) and pool handles.
#pragma once

#include <memory>
#include <rados/librados.hpp>
#include <string>
#include <vector>

namespace rbdvault::rbd {

// How to reach the cluster; mirrors the `rbd` CLI's -c/--conf, --id and --keyring.
struct ConnectOptions {
  // Path of ceph.conf. Empty: librados' default search ($CEPH_CONF, /etc/ceph/ceph.conf, ...).
  std::string conf_path;
  // Client id without the "client." prefix. Empty: "admin".
  std::string client_id;
  // Keyring path. Empty: whatever ceph.conf says.
  std::string keyring;
  // Seconds to wait for the monitors before giving up; keeps an unreachable cluster from hanging us.
  int timeout_seconds = 15;
  // Seconds after which a monitor or OSD operation fails instead of waiting (rados_mon_op_timeout,
  // rados_osd_op_timeout). 0: wait as long as Ceph does, e.g. through a full cluster until space
  // is freed, like the rbd CLI.
  int op_timeout_seconds = 0;
};

struct ImageEntry {
  std::string id;  // Ceph image id (changes when an image is deleted and re-created)
  std::string name;
};

class Cluster {
 public:
  // Connects or throws CephError naming what failed (conf file, keyring, monitors).
  explicit Cluster(const ConnectOptions& options);
  ~Cluster();
  Cluster(const Cluster&) = delete;
  Cluster& operator=(const Cluster&) = delete;

  // An I/O context for `pool`; throws CephError ("pool 'x' does not exist") otherwise.
  librados::IoCtx open_pool(const std::string& pool);

  // Images of a pool, sorted by name.
  std::vector<ImageEntry> list_images(const std::string& pool);

  // The images of RBD group pool/group ("rbd group create"), as "POOL/NAME" in Ceph's order; the
  // members may live in other pools. Throws CephError (ENOENT: no such group).
  std::vector<std::string> list_group_images(const std::string& pool, const std::string& group);

  librados::Rados& rados() { return rados_; }

 private:
  librados::Rados rados_;
  bool connected_ = false;
};

}  // namespace rbdvault::rbd
