// What libblkid finds in a file: its partition table (MBR or GPT) and the file system in it. The
// file may be our own FUSE view of a revision: libblkid reads it like any other seekable file.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace rbdvault::view {

struct Partition {
  int number = 0;       // as the kernel would number it (sda1, ...)
  uint64_t offset = 0;  // bytes from the start of the disk
  uint64_t size = 0;    // bytes
};

// The data partitions of the table at the start of `path` (extended MBR containers left out), or
// none when there is no table. Throws std::runtime_error when the file cannot be read.
[[nodiscard]] std::vector<Partition> probe_partitions(const std::string& path);

struct FileSystem {
  std::string type;   // blkid's TYPE: ext4, xfs, vfat, swap, ...
  std::string label;  // may be empty
  bool bad_checksum = false;  // found, but its superblock checksum does not match
};

// The file system (or other superblock) at the start of `path`, if libblkid knows it. A superblock
// with a bad checksum is still reported, so that its checker can say what is wrong.
[[nodiscard]] std::optional<FileSystem> probe_filesystem(const std::string& path);

}  // namespace rbdvault::view
