#include "store/chunk_check.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "store/chunk_codec.h"
#include "store/pack.h"
#include "store/store.h"

namespace rbdvault::store {

ChunkChecker::~ChunkChecker() {
  for (auto& [id, fd] : fds_)
    if (fd >= 0) ::close(fd);
}

int ChunkChecker::fd_for(uint32_t pack) {
  auto it = fds_.find(pack);
  if (it != fds_.end()) return it->second;
  if (fds_.size() >= 128) {  // stay far from the open-file limit on stores with many packs
    for (auto& [id, fd] : fds_) ::close(fd);
    fds_.clear();
  }
  int fd = ::open((store_.data_dir() / pack_file_name(pack)).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd >= 0) fds_[pack] = fd;
  return fd;
}

std::string ChunkChecker::examine(const Hash& hash) {
  const std::string name = "chunk " + to_hex(hash).substr(0, 16);
  std::optional<ChunkRecord> rec;
  try {
    rec = store_.chunk(hash);
  } catch (const StoreError& e) {
    if (e.kind() != StoreError::Kind::kCorrupt) throw;
    return name + " has a malformed index record (" + e.what() + ")";  // damage to report, not to stop at
  }
  if (!rec) return name + " is referenced but has no index record";
  uint64_t ignored = 0;
  return examine(hash, *rec, ignored);
}

std::string ChunkChecker::examine(const Hash& hash, const ChunkRecord& rec, uint64_t& bytes_verified) {
  const std::string where =
      "chunk " + to_hex(hash).substr(0, 16) + " (" + pack_file_name(rec.pack) + " at " + std::to_string(rec.offset) + ")";
  int fd = fd_for(rec.pack);
  if (fd < 0) {
    if (errno == ENOENT) return where + ": pack file is missing";
    throw_errno("open pack " + pack_file_name(rec.pack));  // not damage: an I/O problem here
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) return where + ": cannot stat pack file";
  if (rec.offset + kChunkHeaderSize + rec.stored_len > static_cast<uint64_t>(st.st_size))
    return where + ": pack file is truncated (" + std::to_string(st.st_size) + " bytes)";
  const size_t len = deep_ ? kChunkHeaderSize + rec.stored_len : kChunkHeaderSize;
  std::string buf(len, '\0');
  if (::pread(fd, buf.data(), len, static_cast<off_t>(rec.offset)) != static_cast<ssize_t>(len))
    return where + ": read failed";
  auto le32 = [&](size_t at) {
    uint32_t v;
    std::memcpy(&v, buf.data() + at, 4);
    return v;  // little-endian host (x86_64, aarch64)
  };
  if (buf.compare(0, 4, kChunkMagic) != 0) return where + ": bad chunk header magic";
  if (static_cast<uint8_t>(buf[4]) != rec.flags || le32(8) != rec.raw_len || le32(12) != rec.stored_len)
    return where + ": chunk header disagrees with the index (flags/length)";
  if (std::memcmp(buf.data() + 16, hash.data(), 32) != 0) return where + ": chunk header names another hash";
  if (rec.raw_len != store_.block_size()) return where + ": raw length is not the block size";
  if (deep_) {
    try {
      std::string raw = decode_chunk(rec.flags, std::string_view(buf).substr(kChunkHeaderSize), rec.raw_len);
      if (sha256(raw) != hash) return where + ": content does not match its SHA-256";
    } catch (const StoreError& e) {
      return where + ": " + e.what();
    }
    bytes_verified += rec.stored_len;
  }
  return {};
}

}  // namespace rbdvault::store
