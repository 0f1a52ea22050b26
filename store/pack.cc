#include "store/pack.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <stdexcept>

#include "store/chunk_codec.h"
#include "store/error.h"
#include "store/patch_codec.h"

namespace rbdvault::store {
namespace {

constexpr size_t kDirectWrite = 32 << 10;  // payloads from this size are appended without a copy

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
  if (!valid_chunk_flags(h.flags)) throw corrupt("unknown flags " + std::to_string(h.flags));
  if (h.raw_len > kMaxBlockSize) throw corrupt("raw length " + std::to_string(h.raw_len) + " is above 4 MiB");
  if (!chunk_lengths_valid(h.flags, h.raw_len, h.stored_len)) throw corrupt("stored length " + std::to_string(h.stored_len) + " is impossible for raw length " +
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

std::string pack_object_name(uint32_t pack) { return "data/" + pack_file_name(pack); }

PackWriter::PackWriter(ObjectStore& objects, uint32_t id) : sink_(objects.create(pack_object_name(id))), id_(id) {
  std::string header(kPackMagic);
  put_le32(header, id);
  put_le32(header, 0);
  sink_->append(header);
  size_ = kPackHeaderSize;
}

PackWriter::~PackWriter() = default;

uint64_t PackWriter::append(const Hash& hash, uint8_t flags, uint32_t raw_len, std::string_view payload) {
  const uint64_t offset = size_;
  chunk_.clear();
  chunk_.append(kChunkMagic);
  chunk_.push_back(static_cast<char>(flags));
  chunk_.append(3, '\0');
  put_le32(chunk_, raw_len);
  put_le32(chunk_, static_cast<uint32_t>(payload.size()));
  chunk_.append(as_view(hash));
  if (payload.size() >= kDirectWrite) {
    // Large payloads go to the sink from where they are: copying them first cost as much CPU as
    // writing them.
    sink_->append(chunk_);
    sink_->append(payload);
  } else {
    chunk_.append(payload);
    sink_->append(chunk_);
  }
  size_ += kChunkHeaderSize + payload.size();
  ++chunks_;
  return offset;
}

PackRecord PackWriter::seal() {
  // Never over an existing pack: an object of that name holds sealed chunks the index may point
  // into (a pack counter set back by damage, a copy restored by hand). Refused, the new pack is
  // dropped with the sink and the old one is untouched.
  try {
    sink_->commit();
  } catch (const StoreError& e) {
    if (e.kind() == StoreError::Kind::kExists) throw StoreError(StoreError::Kind::kCorrupt, std::string("pack ") + e.what());
    throw;
  }
  return PackRecord{size_, chunks_};
}

PackReader::~PackReader() = default;

std::shared_ptr<const ObjectReader> PackReader::open_pack(uint32_t pack) {
  std::lock_guard<std::mutex> guard(mu_);
  auto it = readers_.find(pack);
  if (it != readers_.end()) return it->second;
  // Full: start over. Reads still using a dropped entry keep its reader open until they finish.
  if (readers_.size() >= max_open_) readers_.clear();
  std::shared_ptr<const ObjectReader> reader;
  try {
    reader = objects_.open(pack_object_name(pack));
  } catch (const StoreError& e) {
    if (e.kind() == StoreError::Kind::kNotFound)
      throw StoreError(StoreError::Kind::kCorrupt, "pack file missing: " + pack_object_name(pack));
    throw;
  }
  readers_.emplace(pack, reader);
  return reader;
}

void PackReader::forget_pack(uint32_t pack) {
  std::lock_guard<std::mutex> guard(mu_);
  readers_.erase(pack);
}

namespace {

// Where a chunk is, for error messages (built only when one is thrown: reads are hot).
std::string chunk_place(const Hash& hash, const ChunkRecord& rec) {
  return "chunk " + to_hex(hash) + " in " + pack_file_name(rec.pack) + " at " + std::to_string(rec.offset);
}

void require_full(const Hash& hash, const ChunkRecord& rec) {
  if (is_patch(rec.flags))
    throw StoreError(StoreError::Kind::kCorrupt, "chunk " + to_hex(hash) + " is a patch where a full chunk is needed");
}

}  // namespace

std::string PackReader::read_payload(const Hash& hash, const ChunkRecord& rec) {
  std::string payload = read_stored(hash, rec);
  // Verified before it is copied: a full chunk against its hash; a patch (whose content needs its
  // base) by its structure and its base, which gc leaves where it is.
  if (is_patch(rec.flags))
    (void)read_patch_from(hash, rec, payload);
  else
    (void)verify_full(hash, rec, std::string(payload));
  return payload;
}

std::string PackReader::read_stored(const Hash& hash, const ChunkRecord& rec) {
  const auto file = open_pack(rec.pack);  // held until the last read is done
  // The header and the payload each into their own buffer: the payload, often the content itself,
  // is then never moved or copied on its way to the caller.
  char head[kChunkHeaderSize];
  std::string payload(rec.stored_len, '\0');
  if (!file->read_split_at(rec.offset, head, sizeof head, payload.data(), payload.size()))
    throw StoreError(StoreError::Kind::kCorrupt, chunk_place(hash, rec) + ": pack file is truncated");
  ChunkHeader h;
  try {
    h = parse_chunk_header(std::string_view(head, sizeof head));
  } catch (const StoreError& e) {
    throw StoreError(StoreError::Kind::kCorrupt, chunk_place(hash, rec) + ": " + e.what());
  }
  if (h.flags != rec.flags || h.raw_len != rec.raw_len || h.stored_len != rec.stored_len || h.hash != hash)
    throw StoreError(StoreError::Kind::kCorrupt, chunk_place(hash, rec) + ": chunk header does not match the index");
  return payload;
}

std::string PackReader::verify_full(const Hash& hash, const ChunkRecord& rec, std::string&& payload) {
  require_full(hash, rec);
  std::string raw = decode_owned_chunk(rec.flags, std::move(payload), rec.raw_len);
  if (sha256(raw) != hash)
    throw StoreError(StoreError::Kind::kCorrupt, chunk_place(hash, rec) + ": content does not match its SHA-256");
  return raw;
}

Patch PackReader::read_patch_from(const Hash& hash, const ChunkRecord& rec, std::string_view payload) {
  Patch p;
  try {
    p = decode_patch(rec.flags, payload, rec.raw_len);
  } catch (const StoreError& e) {
    throw StoreError(StoreError::Kind::kCorrupt, chunk_place(hash, rec) + ": " + e.what());
  }
  if (p.base != rec.base)
    throw StoreError(StoreError::Kind::kCorrupt, chunk_place(hash, rec) + ": patch names another base than the index");
  if (p.base == hash)
    throw StoreError(StoreError::Kind::kCorrupt, chunk_place(hash, rec) + ": patch names itself as its base");
  return p;
}

std::string PackReader::read_unhashed(const Hash& hash, const ChunkRecord& rec) {
  require_full(hash, rec);
  return decode_owned_chunk(rec.flags, read_stored(hash, rec), rec.raw_len);
}

std::string PackReader::read(const Hash& hash, const ChunkRecord& rec) {
  return verify_full(hash, rec, read_stored(hash, rec));
}

Patch PackReader::read_patch(const Hash& hash, const ChunkRecord& rec) {
  if (!is_patch(rec.flags)) throw std::logic_error("read_patch on a full chunk");
  return read_patch_from(hash, rec, read_stored(hash, rec));
}

}  // namespace rbdvault::store
