// The batch configuration: one file describing a whole cluster's backups (connection, store,
// defaults, limits, jobs selecting images by pool and glob). Syntax is Boost.ProgramOptions'
// config-file syntax: `key = value` lines under `[section]` headers, a key may repeat where it
// takes a list; a `#` at the start of a line or after a blank starts a comment (one inside a value,
// `a#b`, is part of it). deploy/rbdvault.conf.example documents every key.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "agent/copy_config.h"
#include "agent/hooks.h"
#include "agent/retention.h"
#include "agent/schedule.h"

namespace rbdvault::agent {

// A config that cannot be used; the message names the file, the line and the key ("FILE:LINE: ...").
struct ConfigError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Settings an image takes from [defaults], then its [job.*], then its own [image.POOL/NAME].
struct ImageSettings {
  Schedule schedule = Schedule::parse("daily 02:00");
  int64_t jitter_seconds = 0;        // each image starts up to this long after its slot (spread load)
  RetentionPolicy retention;         // empty: no expiry
  unsigned full_every = 0;           // a full read after N deltas (0: never)
  // Percent of each new revision's blocks compared with its snapshot right after the backup (0:
  // off). The default finds an object-sized wrong diff with 72% per backup and 99.98% within a
  // week of daily backups, for 2% of the image read again (docs/usage.md).
  double verify_sample_percent = 2;
  size_t reads_in_flight = 16;       // per image
  unsigned retries = 2;              // extra attempts after a transient Ceph error
  int64_t retry_delay_seconds = 30;  // first backoff; doubles per attempt
  bool skip = false;                 // leave this image out (history is kept)
  // fsck = yes: after a successful backup, check the file systems in the new revision (rbdvault
  // fsck: read-only, from the store, never from Ceph); the result goes to the report, the log,
  // status and check. A damaged file system does not fail the backup: the revision is a faithful
  // copy, and a retry would copy the same damage.
  bool fsck = false;
  // pre-snapshot, post-snapshot, hook-timeout, on-hook-failure: commands around the snapshot.
  SnapshotHooks hooks;
};

struct JobConfig {
  std::string name;
  std::string pool;
  std::vector<std::string> include;  // globs over image names; none means every image
  std::vector<std::string> exclude;
  ImageSettings settings;  // defaults overlaid with the job's keys
  // Whether the job's pool and globs select pool/name.
  bool selects(const std::string& pool, const std::string& name) const;
};

// [group.NAME]: images snapshotted at one instant, back to back between one pre and one post hook,
// then each backed up as usual (docs/operations.md "Consistency groups").
struct GroupConfig {
  std::string name;
  std::vector<std::string> images;  // pool/name, in config order; each selected by some job
  std::string rbd_group;            // rbd-group = POOL/GROUP: the members are that RBD group's, at run time
  SnapshotHooks hooks;              // the group's own; the members' per-image hooks do not run
  std::string where;                // "FILE:LINE" of the section header, for messages
};

struct Limits {
  size_t images_in_parallel = 2;  // concurrent image backups in this process
  uint64_t read_bandwidth = 0;    // bytes/s read from the cluster by this process; 0: unlimited
  uint64_t write_bandwidth = 0;   // bytes/s of new chunk data written to the store; 0: unlimited
  size_t host_slots = 0;          // concurrent image backups on this host, shared by all processes; 0: off
  std::string host_slots_dir = "/run/lock/rbdvault";
};

struct MaintenanceConfig {
  std::optional<Schedule> gc;  // agent only; none: never
  std::optional<Schedule> scrub;
  bool scrub_deep = false;
  double gc_max_unused_percent = 5;
};

struct BatchConfig {
  std::string path;  // the file it came from
  // [ceph]
  std::string ceph_conf, ceph_id, ceph_keyring;
  int connect_timeout = 15, op_timeout = 0;
  // [store]
  std::string store;  // path: a directory or rados:POOL[/NAMESPACE] (issue 13)
  // A rados: store's backup cluster (conf, id, keyring; default: [ceph]'s) and index directory.
  std::string store_conf, store_id, store_keyring, index_dir;
  // What to open: `store`, or a rados: store's index directory brought up to date from the pool.
  // Call it at every open (another host may have written since). Throws store::StoreError.
  [[nodiscard]] std::string store_dir() const;
  // The same directory without contacting the pool (for the local operation log).
  [[nodiscard]] std::string local_dir() const;
  std::string metrics_file;  // Prometheus textfile; empty: none
  std::string log_file;      // extra log file; empty: stderr/journald only
  Limits limits;
  MaintenanceConfig maintenance;
  std::vector<JobConfig> jobs;
  // [image.POOL/NAME] sections: raw key/value overrides applied on top of the job's settings.
  struct Override {
    std::map<std::string, std::string> values;
    std::string where;  // "FILE:LINE" of the section header, for errors
  };
  std::map<std::string, Override> image_overrides;
  std::vector<GroupConfig> groups;
  // [copy]: an offsite copy after the backups (agent/copy_config.h, copy_step.h); none: no copy step.
  std::optional<CopyConfig> copy;

  // The group pool/name belongs to, if any (an image is in at most one group).
  const GroupConfig* group_of(const std::string& image) const;

  // Settings for pool/name selected by `job` (job settings plus the image's overrides).
  ImageSettings settings_for(const JobConfig& job, const std::string& image) const;
  // The settings of pool/name under the first job selecting it; nullopt if no job does.
  std::optional<ImageSettings> find_settings(const std::string& pool, const std::string& name) const;
};

// A config of thousands of jobs is a few hundred KiB; a larger file is refused before parsing.
inline constexpr size_t kMaxBatchConfigBytes = 4u << 20;

// Reads and validates the whole file; throws ConfigError (never runs anything half-configured).
BatchConfig load_batch_config(const std::string& path);
// The same from text (tests); `path` is only used in messages.
BatchConfig parse_batch_config(const std::string& text, const std::string& path);

// Shell-style glob match (*, ?, [...]) of an image name.
bool glob_match(const std::string& pattern, const std::string& name);

// "64K", "200M", "1.5G", "0" -> bytes (binary units); throws std::invalid_argument.
uint64_t parse_bytes(const std::string& text);

}  // namespace rbdvault::agent
