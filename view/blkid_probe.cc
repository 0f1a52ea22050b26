#include "view/blkid_probe.h"

#include <blkid/blkid.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <stdexcept>

namespace rbdvault::view {
namespace {

struct ProbeFree {
  void operator()(blkid_struct_probe* p) const { blkid_free_probe(p); }
};
using Probe = std::unique_ptr<blkid_struct_probe, ProbeFree>;

Probe open_probe(const std::string& path) {
  Probe pr(blkid_new_probe_from_filename(path.c_str()));
  if (!pr) throw std::runtime_error("cannot probe " + path + ": " + std::strerror(errno));
  return pr;
}

std::string value(blkid_probe pr, const char* name) {
  const char* data = nullptr;
  size_t len = 0;
  if (blkid_probe_lookup_value(pr, name, &data, &len) != 0 || !data) return {};
  return std::string(data, strnlen(data, len));
}

}  // namespace

std::vector<Partition> probe_partitions(const std::string& path) {
  Probe pr = open_probe(path);
  blkid_probe_enable_superblocks(pr.get(), 0);
  blkid_probe_enable_partitions(pr.get(), 1);
  std::vector<Partition> parts;
  blkid_partlist list = blkid_probe_get_partitions(pr.get());
  if (!list) return parts;  // no partition table
  const int n = blkid_partlist_numof_partitions(list);
  for (int i = 0; i < n; ++i) {
    blkid_partition p = blkid_partlist_get_partition(list, i);
    if (!p || blkid_partition_is_extended(p)) continue;
    // blkid counts 512-byte sectors whatever the table's logical sector size.
    const auto start = blkid_partition_get_start(p), size = blkid_partition_get_size(p);
    if (start < 0 || size <= 0) continue;
    parts.push_back({blkid_partition_get_partno(p), static_cast<uint64_t>(start) * 512,
                     static_cast<uint64_t>(size) * 512});
  }
  return parts;
}

std::optional<FileSystem> probe_filesystem(const std::string& path) {
  Probe pr = open_probe(path);
  blkid_probe_enable_partitions(pr.get(), 0);
  blkid_probe_enable_superblocks(pr.get(), 1);
  blkid_probe_set_superblocks_flags(pr.get(), BLKID_SUBLKS_TYPE | BLKID_SUBLKS_LABEL | BLKID_SUBLKS_BADCSUM);
  // 0: found; 1: nothing; -2: more than one candidate (ambivalent); -1: error.
  const int rc = blkid_do_safeprobe(pr.get());
  if (rc == -1) throw std::runtime_error("cannot probe " + path + ": " + std::strerror(errno));
  if (rc != 0) return std::nullopt;
  FileSystem fs{value(pr.get(), "TYPE"), value(pr.get(), "LABEL"), blkid_probe_has_value(pr.get(), "SBBADCSUM") != 0};
  if (fs.type.empty()) return std::nullopt;
  return fs;
}

}  // namespace rbdvault::view
