#include "store/format.h"

#include <cstring>

#include "store/chunk_codec.h"
#include "store/error.h"
#include "store/patch_codec.h"

namespace rbdvault::store {
namespace {

void put_be64(std::string& s, uint64_t v) {
  for (int i = 7; i >= 0; --i) s.push_back(static_cast<char>((v >> (i * 8)) & 0xff));
}
void put_be32(std::string& s, uint32_t v) {
  for (int i = 3; i >= 0; --i) s.push_back(static_cast<char>((v >> (i * 8)) & 0xff));
}
void put_le(std::string& s, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) s.push_back(static_cast<char>((v >> (i * 8)) & 0xff));
}
void put_str(std::string& s, std::string_view v) {
  put_le(s, v.size(), 4);
  s.append(v);
}

// Reads little-endian fields from a value, throwing kCorrupt when it runs short.
class Reader {
 public:
  Reader(std::string_view v, const char* what) : v_(v), what_(what) {}
  uint64_t le(int bytes) {
    need(bytes);
    uint64_t x = 0;
    for (int i = 0; i < bytes; ++i) x |= uint64_t(uint8_t(v_[pos_ + i])) << (i * 8);
    pos_ += bytes;
    return x;
  }
  std::string str() {
    uint64_t n = le(4);
    need(n);
    std::string s(v_.substr(pos_, n));
    pos_ += n;
    return s;
  }
  Hash hash() {
    need(32);
    Hash h;
    std::memcpy(h.data(), v_.data() + pos_, 32);
    pos_ += 32;
    return h;
  }
  void done() {
    if (pos_ != v_.size()) fail();
  }
  // A field that decoded but is out of range: the record is corrupt, and using the value could
  // allocate gigabytes or wrap an offset.
  void require(bool ok, const char* field) {
    if (!ok)
      throw StoreError(StoreError::Kind::kCorrupt,
                       std::string("malformed ") + what_ + " record in index: " + field + " out of range");
  }

 private:
  void need(uint64_t n) {
    // Compared as "remaining < n" so that no length, however large, can overflow the sum.
    if (n > v_.size() - pos_) fail();
  }
  [[noreturn]] void fail() {
    throw StoreError(StoreError::Kind::kCorrupt, std::string("malformed ") + what_ + " record in index");
  }
  std::string_view v_;
  const char* what_;
  size_t pos_ = 0;
};

constexpr uint8_t kRecordVersion = 1;

void check_version(Reader& r, const char* what) {
  if (r.le(1) != kRecordVersion)
    throw StoreError(StoreError::Kind::kCorrupt, std::string("unknown ") + what + " record version");
}

}  // namespace

bool valid_block_size(uint64_t bs) {
  return bs >= kMinBlockSize && bs <= kMaxBlockSize && (bs & (bs - 1)) == 0;
}

uint64_t read_be64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | uint8_t(p[i]);
  return v;
}

std::string counter_key(std::string_view name) { return std::string(1, kKeyCounter) + std::string(name); }

std::string image_name_key(std::string_view pool, std::string_view name) {
  std::string k(1, kKeyImageName);
  k.append(pool);
  k.push_back('\0');
  k.append(name);
  return k;
}

std::string image_key(uint64_t image) {
  std::string k(1, kKeyImage);
  put_be64(k, image);
  return k;
}

std::string revision_key(uint64_t rev) {
  std::string k(1, kKeyRevision);
  put_be64(k, rev);
  return k;
}

std::string image_rev_prefix(uint64_t image) {
  std::string k(1, kKeyImageRev);
  put_be64(k, image);
  return k;
}

std::string image_rev_key(uint64_t image, uint64_t rev) {
  std::string k = image_rev_prefix(image);
  put_be64(k, rev);
  return k;
}

std::string block_prefix(uint64_t image) {
  std::string k(1, kKeyBlock);
  put_be64(k, image);
  return k;
}

std::string block_key(uint64_t image, uint64_t block, uint64_t rev) {
  std::string k = block_prefix(image);
  put_be64(k, block);
  put_be64(k, rev);
  return k;
}

std::string chunk_key(const Hash& hash) { return std::string(1, kKeyChunk) + std::string(as_view(hash)); }

std::string pack_key(uint32_t pack) {
  std::string k(1, kKeyPack);
  put_be32(k, pack);
  return k;
}

std::string pending_key(uint64_t rev) {
  std::string k(1, kKeyPending);
  put_be64(k, rev);
  return k;
}

std::optional<BlockKey> parse_block_key(std::string_view key) {
  if (key.size() != 25 || key[0] != kKeyBlock) return std::nullopt;
  return BlockKey{read_be64(key.data() + 1), read_be64(key.data() + 9), read_be64(key.data() + 17)};
}

std::optional<uint64_t> parse_image_rev_key(std::string_view key) {
  if (key.size() != 17 || key[0] != kKeyImageRev) return std::nullopt;
  return read_be64(key.data() + 9);
}

uint32_t parse_pack_key(std::string_view key) {
  if (key.size() != 5 || key[0] != kKeyPack) return 0;
  uint32_t v = 0;
  for (int i = 1; i < 5; ++i) v = (v << 8) | uint8_t(key[i]);
  return v;
}

std::optional<Hash> parse_chunk_key(std::string_view key) {
  Hash h;
  if (key.size() != 1 + h.size() || key[0] != kKeyChunk) return std::nullopt;
  std::memcpy(h.data(), key.data() + 1, h.size());
  return h;
}

Hash chunk_hash_of_key(std::string_view key) {
  auto h = parse_chunk_key(key);
  if (!h) throw StoreError(StoreError::Kind::kCorrupt, "malformed chunk key in index (" + std::to_string(key.size()) + " bytes)");
  return *h;
}

std::string encode_u64(uint64_t v) {
  std::string s;
  put_le(s, v, 8);
  return s;
}

uint64_t decode_u64(std::string_view v) {
  Reader r(v, "counter");
  uint64_t x = r.le(8);
  r.done();
  return x;
}

std::string encode(const ImageRecord& rec) {
  std::string s;
  put_le(s, kRecordVersion, 1);
  put_le(s, rec.key, 8);
  put_str(s, rec.pool);
  put_str(s, rec.name);
  return s;
}

ImageRecord decode_image(std::string_view v) {
  Reader r(v, "image");
  check_version(r, "image");
  ImageRecord rec;
  rec.key = r.le(8);
  rec.pool = r.str();
  rec.name = r.str();
  r.done();
  return rec;
}

std::string encode(const RevisionRecord& rec) {
  std::string s;
  put_le(s, kRecordVersion, 1);
  put_le(s, rec.id, 8);
  put_le(s, rec.image, 8);
  put_str(s, rec.pool);
  put_str(s, rec.name);
  put_str(s, rec.ceph_image_id);
  put_str(s, rec.snap_name);
  put_le(s, rec.snap_id, 8);
  put_le(s, static_cast<uint64_t>(rec.created), 8);
  put_le(s, rec.size, 8);
  put_le(s, rec.parent, 8);
  put_le(s, static_cast<uint8_t>(rec.kind), 1);
  put_le(s, rec.block_size, 4);
  put_le(s, rec.order, 1);
  put_le(s, rec.features, 8);
  put_le(s, rec.bytes_read, 8);
  put_le(s, rec.bytes_stored, 8);
  put_le(s, rec.new_chunks, 8);
  put_le(s, rec.map_entries, 8);
  s.append(as_view(rec.digest));
  put_le(s, rec.flags, 1);
  if (rec.flags & kRevisionGroup) {
    put_str(s, rec.group);
    put_le(s, rec.group_run, 8);
    put_le(s, rec.group_gap_us, 8);
  }
  return s;
}

RevisionRecord decode_revision(std::string_view v) {
  Reader r(v, "revision");
  check_version(r, "revision");
  RevisionRecord rec;
  rec.id = r.le(8);
  rec.image = r.le(8);
  rec.pool = r.str();
  rec.name = r.str();
  rec.ceph_image_id = r.str();
  rec.snap_name = r.str();
  rec.snap_id = r.le(8);
  rec.created = static_cast<int64_t>(r.le(8));
  rec.size = r.le(8);
  rec.parent = r.le(8);
  const uint64_t kind = r.le(1);
  r.require(kind <= static_cast<uint8_t>(RevisionKind::kDelta), "kind");
  rec.kind = static_cast<RevisionKind>(kind);
  rec.block_size = static_cast<uint32_t>(r.le(4));
  rec.order = static_cast<uint8_t>(r.le(1));
  rec.features = r.le(8);
  rec.bytes_read = r.le(8);
  rec.bytes_stored = r.le(8);
  rec.new_chunks = r.le(8);
  rec.map_entries = r.le(8);
  rec.digest = r.hash();
  rec.flags = static_cast<uint8_t>(r.le(1));
  if (rec.flags & kRevisionGroup) {
    rec.group = r.str();
    rec.group_run = r.le(8);
    rec.group_gap_us = r.le(8);
    r.require(!rec.group.empty() && rec.group.size() <= kMaxGroupName, "group");
    r.require(rec.group_run != 0, "group_run");
    r.require(rec.group_gap_us <= kMaxGroupGapUs, "group_gap_us");
  }
  r.done();
  r.require(rec.size <= kMaxImageSize, "size");
  r.require(valid_block_size(rec.block_size), "block_size");
  r.require(rec.order == 0 || (rec.order >= kMinOrder && rec.order <= kMaxOrder), "order");
  return rec;
}

std::string encode(const ChunkRecord& rec) {
  std::string s;
  put_le(s, kRecordVersion, 1);
  put_le(s, rec.pack, 4);
  put_le(s, rec.offset, 8);
  put_le(s, rec.stored_len, 4);
  put_le(s, rec.raw_len, 4);
  put_le(s, rec.flags, 1);
  put_le(s, rec.refs, 8);
  if (is_patch(rec.flags)) s.append(reinterpret_cast<const char*>(rec.base.data()), rec.base.size());
  return s;
}

ChunkRecord decode_chunk_record(std::string_view v) {
  Reader r(v, "chunk");
  check_version(r, "chunk");
  ChunkRecord rec;
  rec.pack = static_cast<uint32_t>(r.le(4));
  rec.offset = r.le(8);
  rec.stored_len = static_cast<uint32_t>(r.le(4));
  rec.raw_len = static_cast<uint32_t>(r.le(4));
  rec.flags = static_cast<uint8_t>(r.le(1));
  rec.refs = r.le(8);
  if (is_patch(rec.flags)) rec.base = r.hash();
  r.done();
  // A chunk is one block: raw_len bounds what a read allocates, stored_len what it reads.
  r.require(valid_chunk_flags(rec.flags), "flags");
  r.require(rec.raw_len <= kMaxBlockSize, "raw_len");
  r.require(chunk_lengths_valid(rec.flags, rec.raw_len, rec.stored_len), "stored_len");
  r.require(rec.offset >= kPackHeaderSize && rec.offset <= kMaxPackBytes, "offset");
  return rec;
}

std::string encode(const PackRecord& rec) {
  std::string s;
  put_le(s, kRecordVersion, 1);
  put_le(s, rec.bytes, 8);
  put_le(s, rec.chunks, 8);
  return s;
}

PackRecord decode_pack(std::string_view v) {
  Reader r(v, "pack");
  check_version(r, "pack");
  PackRecord rec;
  rec.bytes = r.le(8);
  rec.chunks = r.le(8);
  r.done();
  r.require(rec.bytes >= kPackHeaderSize && rec.bytes <= kMaxPackBytes, "bytes");
  r.require(rec.chunks <= (rec.bytes - kPackHeaderSize) / kChunkHeaderSize, "chunks");
  return rec;
}

std::string encode(const PendingRecord& rec) {
  std::string s;
  put_le(s, kRecordVersion, 1);
  put_le(s, rec.revision, 8);
  put_le(s, rec.image, 8);
  return s;
}

PendingRecord decode_pending(std::string_view v) {
  Reader r(v, "pending");
  check_version(r, "pending");
  PendingRecord rec;
  rec.revision = r.le(8);
  rec.image = r.le(8);
  r.done();
  return rec;
}

Hash RevisionDigest::term(uint64_t block, const Hash& chunk) {
  std::string b;
  put_le(b, block, 8);
  return sha256(b, as_view(chunk));
}

Hash RevisionDigest::size_term(uint64_t size) {
  std::string b = "size";
  put_le(b, size, 8);
  return sha256(b);
}

void RevisionDigest::add(Hash& acc, const Hash& t) {
  unsigned carry = 0;
  for (size_t i = 0; i < acc.size(); ++i) {
    unsigned sum = unsigned(acc[i]) + t[i] + carry;
    acc[i] = static_cast<uint8_t>(sum);
    carry = sum >> 8;
  }
}

void RevisionDigest::subtract(Hash& acc, const Hash& t) {
  int borrow = 0;
  for (size_t i = 0; i < acc.size(); ++i) {
    int d = int(acc[i]) - t[i] - borrow;
    borrow = d < 0;
    acc[i] = static_cast<uint8_t>(d + (borrow ? 256 : 0));
  }
}

}  // namespace rbdvault::store
