#include "store/pack.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "store/chunk_codec.h"
#include "store/error.h"
#include "store/posix_file.h"

namespace rbdvault::store {
namespace {

constexpr size_t kWriteBuffer = 4 << 20;
constexpr size_t kDirectWrite = 32 << 10;

void put_le32(std::string& s, uint32_t v) {
  for (int i = 0; i < 4; ++i) s.push_back(static_cast<char>((v >> (i * 8)) & 0xff));
}
uint32_t get_le32(const char* p) {
  return uint32_t(uint8_t(p[0])) | uint32_t(uint8_t(p[1])) << 8 | uint32_t(uint8_t(p[2])) << 16 |
         uint32_t(uint8_t(p[3])) << 24;
}

}  // namespace

void throw_errno(const std::string& what) {
  const int e = errno;
  throw StoreError(e == ENOSPC || e == EDQUOT ? StoreError::Kind::kNoSpace : StoreError::Kind::kIO,
                   what + ": " + std::strerror(e));
}

std::string pack_file_name(uint32_t pack) {
  char name[32];
  std::snprintf(name, sizeof(name), "%08x.pack", pack);
  return name;
}

ChunkHeader parse_chunk_header(std::string_view b) {
  auto corrupt = [](const std::string& what) { return StoreError(StoreError::Kind::kCorrupt, "chunk header: " + what); };
  if (b.size() < kChunkHeaderSize) throw corrupt("truncated");
  if (b.substr(0, 4) != kChunkMagic) throw corrupt("bad magic");
  if (b[5] != 0 || b[6] != 0 || b[7] != 0) throw corrupt("reserved bytes are not zero");
  ChunkHeader h;
  h.flags = static_cast<uint8_t>(b[4]);
  h.raw_len = get_le32(b.data() + 8);
  h.stored_len = get_le32(b.data() + 12);
  std::memcpy(h.hash.data(), b.data() + 16, h.hash.size());
  if (h.flags != kChunkRaw && h.flags != kChunkZstd) throw corrupt("unknown flags " + std::to_string(h.flags));
  if (h.raw_len > kMaxBlockSize) throw corrupt("raw length " + std::to_string(h.raw_len) + " is above 4 MiB");
  const bool stored_ok = h.flags == kChunkRaw ? h.stored_len == h.raw_len : h.stored_len <= max_stored_len(h.raw_len);
  if (!stored_ok) throw corrupt("stored length " + std::to_string(h.stored_len) + " is impossible for raw length " +
                                std::to_string(h.raw_len));
  return h;
}

void scan_pack(uint64_t size, const ReadAt& read, std::optional<uint32_t> expected_id,
               const std::function<bool(uint64_t, const ChunkHeader&)>& visit) {
  auto corrupt = [](const std::string& what) { return StoreError(StoreError::Kind::kCorrupt, "pack scan: " + what); };
  char header[kPackHeaderSize];
  if (size < kPackHeaderSize || !read(0, header, sizeof(header))) throw corrupt("no pack header");
  if (std::string_view(header, 8) != kPackMagic) throw corrupt("bad pack magic");
  if (expected_id && get_le32(header + 8) != *expected_id) throw corrupt("pack id does not match the file name");
  uint64_t off = kPackHeaderSize;
  char chunk[kChunkHeaderSize];
  while (off < size) {
    // Lengths are checked as "what remains" so no sum can wrap.
    if (size - off < kChunkHeaderSize || !read(off, chunk, sizeof(chunk)))
      throw corrupt("truncated chunk header at " + std::to_string(off));
    const ChunkHeader h = parse_chunk_header(std::string_view(chunk, sizeof(chunk)));
    if (size - off - kChunkHeaderSize < h.stored_len) throw corrupt("truncated chunk at " + std::to_string(off));
    if (!visit(off, h)) return;
    off += kChunkHeaderSize + h.stored_len;
  }
}

PackWriter::PackWriter(const std::filesystem::path& data_dir, uint32_t id)
    : dir_(data_dir),
      tmp_path_(data_dir / (pack_file_name(id) + ".tmp")),
      final_path_(data_dir / pack_file_name(id)),
      id_(id) {
  // A .tmp left by a killed writer is garbage by definition: nothing in the index points into it.
  fd_ = ::open(tmp_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) throw_errno("create pack " + tmp_path_.string());
  buffer_.reserve(kWriteBuffer + (1 << 20));
  buffer_.append(kPackMagic);
  put_le32(buffer_, id);
  put_le32(buffer_, 0);
  size_ = kPackHeaderSize;
}

PackWriter::~PackWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!sealed_) ::unlink(tmp_path_.c_str());
}

uint64_t PackWriter::append(const Hash& hash, uint8_t flags, uint32_t raw_len, std::string_view payload) {
  uint64_t offset = size_;
  buffer_.append(kChunkMagic);
  buffer_.push_back(static_cast<char>(flags));
  buffer_.append(3, '\0');
  put_le32(buffer_, raw_len);
  put_le32(buffer_, static_cast<uint32_t>(payload.size()));
  buffer_.append(as_view(hash));
  size_ += kChunkHeaderSize + payload.size();
  ++chunks_;
  if (payload.size() >= kDirectWrite) {
    // Large payloads go to the file from where they are: copying them into the buffer first cost
    // as much CPU as writing them.
    flush_buffer();
    write_all(fd_, payload.data(), payload.size(), tmp_path_);
    return offset;
  }
  buffer_.append(payload);
  if (buffer_.size() >= kWriteBuffer) flush_buffer();
  return offset;
}

void PackWriter::flush_buffer() {
  write_all(fd_, buffer_.data(), buffer_.size(), tmp_path_);
  buffer_.clear();
}

PackRecord PackWriter::seal() {
  flush_buffer();
  if (::fsync(fd_) != 0) throw_errno("fsync " + tmp_path_.string());
  if (::close(fd_) != 0) {
    fd_ = -1;
    throw_errno("close " + tmp_path_.string());
  }
  fd_ = -1;
  // Never over an existing pack: a file of that name holds sealed chunks the index may point into (a
  // pack counter set back by damage, a copy restored by hand). Refused, the new pack stays a .tmp
  // that the destructor removes, and the old one is untouched.
  if (::renameat2(AT_FDCWD, tmp_path_.c_str(), AT_FDCWD, final_path_.c_str(), RENAME_NOREPLACE) != 0) {
    if (errno == EEXIST)
      throw StoreError(StoreError::Kind::kCorrupt,
                       "pack " + final_path_.string() + " already exists; refusing to overwrite it");
    // A file system without RENAME_NOREPLACE (EINVAL): link(2) refuses an existing name too.
    if (errno != EINVAL) throw_errno("rename " + tmp_path_.string());
    if (::link(tmp_path_.c_str(), final_path_.c_str()) != 0) {
      if (errno == EEXIST)
        throw StoreError(StoreError::Kind::kCorrupt,
                         "pack " + final_path_.string() + " already exists; refusing to overwrite it");
      throw_errno("link " + tmp_path_.string());
    }
    ::unlink(tmp_path_.c_str());
  }
  sealed_ = true;
  fsync_dir(dir_);
  return PackRecord{size_, chunks_};
}

PackReader::~PackReader() = default;

PackReader::OpenPack::~OpenPack() {
  if (fd >= 0) ::close(fd);
}

std::shared_ptr<const PackReader::OpenPack> PackReader::open_pack(uint32_t pack) {
  std::lock_guard<std::mutex> guard(mu_);
  auto it = fds_.find(pack);
  if (it != fds_.end()) return it->second;
  // Full: start over. Reads still using a dropped entry keep its descriptor open until they finish.
  if (fds_.size() >= max_open_) fds_.clear();
  auto path = dir_ / pack_file_name(pack);
  auto file = std::make_shared<OpenPack>();
  file->fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (file->fd < 0) {
    if (errno == ENOENT) throw StoreError(StoreError::Kind::kCorrupt, "pack file missing: " + path.string());
    throw_errno("open " + path.string());
  }
  fds_.emplace(pack, file);
  return file;
}

void PackReader::forget_pack(uint32_t pack) {
  std::lock_guard<std::mutex> guard(mu_);
  fds_.erase(pack);
}

std::string PackReader::read_payload(const Hash& hash, const ChunkRecord& rec) {
  std::string raw = read(hash, rec);
  (void)raw;  // verified
  // read() left the payload in its buffer; re-reading keeps the interface simple and gc is rare.
  std::string buf(rec.stored_len, '\0');
  const auto file = open_pack(rec.pack);
  const int fd = file->fd;
  size_t got = 0;
  while (got < buf.size()) {
    ssize_t r =
        ::pread(fd, buf.data() + got, buf.size() - got, static_cast<off_t>(rec.offset + kChunkHeaderSize + got));
    if (r <= 0) {
      if (r < 0 && errno == EINTR) continue;
      throw StoreError(StoreError::Kind::kCorrupt, "chunk " + to_hex(hash) + ": short read");
    }
    got += static_cast<size_t>(r);
  }
  return buf;
}

std::string PackReader::read(const Hash& hash, const ChunkRecord& rec) {
  const std::string where =
      "chunk " + to_hex(hash) + " in " + pack_file_name(rec.pack) + " at " + std::to_string(rec.offset);
  const auto file = open_pack(rec.pack);  // held until the last pread is done
  const int fd = file->fd;
  std::string buf(kChunkHeaderSize + rec.stored_len, '\0');
  size_t got = 0;
  while (got < buf.size()) {
    ssize_t r = ::pread(fd, buf.data() + got, buf.size() - got, static_cast<off_t>(rec.offset + got));
    if (r < 0) {
      if (errno == EINTR) continue;
      throw_errno("read " + where);
    }
    if (r == 0) throw StoreError(StoreError::Kind::kCorrupt, where + ": pack file is truncated");
    got += static_cast<size_t>(r);
  }
  ChunkHeader h;
  try {
    h = parse_chunk_header(buf);
  } catch (const StoreError& e) {
    throw StoreError(StoreError::Kind::kCorrupt, where + ": " + e.what());
  }
  if (h.flags != rec.flags || h.raw_len != rec.raw_len || h.stored_len != rec.stored_len || h.hash != hash)
    throw StoreError(StoreError::Kind::kCorrupt, where + ": chunk header does not match the index");
  std::string raw = decode_chunk(h.flags, std::string_view(buf).substr(kChunkHeaderSize), rec.raw_len);
  if (sha256(raw) != hash) throw StoreError(StoreError::Kind::kCorrupt, where + ": content does not match its SHA-256");
  return raw;
}

}  // namespace rbdvault::store
