#include "store/manifest.h"

#include <openssl/evp.h>

#include <cstdio>
#include <cstring>

#include "store/error.h"
#include "store/object_store.h"

namespace rbdvault::store {
namespace {

[[noreturn]] void corrupt(const std::string& what) {
  throw StoreError(StoreError::Kind::kCorrupt, "revision manifest: " + what);
}

void put_le(std::string& s, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) s.push_back(static_cast<char>((v >> (i * 8)) & 0xff));
}
uint64_t get_le(const char* p, int bytes) {
  uint64_t x = 0;
  for (int i = 0; i < bytes; ++i) x |= uint64_t(uint8_t(p[i])) << (i * 8);
  return x;
}
void put_varint(std::string& s, uint64_t v) {
  while (v >= 0x80) {
    s.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  s.push_back(static_cast<char>(v));
}

EVP_MD_CTX* new_sha() {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr) != 1) {
    EVP_MD_CTX_free(ctx);
    throw StoreError(StoreError::Kind::kIO, "SHA-256 failed in OpenSSL");
  }
  return ctx;
}
void free_sha(void* ctx) { EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(ctx)); }
void sha_update(void* ctx, std::string_view d) {
  if (EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(ctx), d.data(), d.size()) != 1)
    throw StoreError(StoreError::Kind::kIO, "SHA-256 failed in OpenSSL");
}
Hash sha_final(void* ctx) {
  Hash out{};
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(static_cast<EVP_MD_CTX*>(ctx), out.data(), &len) != 1)
    throw StoreError(StoreError::Kind::kIO, "SHA-256 failed in OpenSSL");
  return out;
}

std::string header() {
  std::string h(kManifestMagic);
  put_le(h, 1, 1);  // manifest encoding version
  h.append(7, '\0');
  return h;
}

// Largest block number any valid revision can have (kMaxImageSize / kMinBlockSize).
constexpr uint64_t kMaxBlock = kMaxImageSize / kMinBlockSize;
constexpr size_t kReadPiece = 1u << 20;

class MemoryObject final : public ObjectReader {
 public:
  explicit MemoryObject(std::string b) : bytes_(std::move(b)) {}
  bool read_at(uint64_t offset, char* buf, size_t n) const override {
    if (offset > bytes_.size() || n > bytes_.size() - offset) return false;
    std::memcpy(buf, bytes_.data() + offset, n);
    return true;
  }
  uint64_t size() const override { return bytes_.size(); }

 private:
  std::string bytes_;
};

}  // namespace

std::string manifest_name(uint64_t revision, uint32_t generation) {
  char buf[40];
  std::snprintf(buf, sizeof(buf), "%016llx.%08x", static_cast<unsigned long long>(revision), generation);
  return std::string(kManifestPrefix) + buf;
}

std::optional<std::pair<uint64_t, uint32_t>> parse_manifest_name(std::string_view name) {
  if (!name.starts_with(kManifestPrefix)) return std::nullopt;
  name.remove_prefix(kManifestPrefix.size());
  if (name.size() != 25 || name[16] != '.') return std::nullopt;
  uint64_t rev = 0, gen = 0;
  for (size_t i = 0; i < 25; ++i) {
    if (i == 16) continue;
    const char c = name[i];
    int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
    if (d < 0) return std::nullopt;
    (i < 16 ? rev : gen) = (i < 16 ? rev : gen) * 16 + d;
  }
  if (rev == 0) return std::nullopt;
  return std::make_pair(rev, static_cast<uint32_t>(gen));
}

ManifestEncoder::ManifestEncoder(ObjectSink& sink) : sink_(sink), sha_(new_sha(), free_sha) { emit(header()); }

void ManifestEncoder::emit(std::string_view bytes) {
  buf_.append(bytes);
  if (buf_.size() >= kReadPiece) drain();
}

void ManifestEncoder::drain() {
  sha_update(sha_.get(), buf_);
  sink_.append(buf_);
  buf_.clear();
}

// An entry is varint((block - previous block - 1) * 2 + has_hash), then the hash when it has one.
void ManifestEncoder::add(uint64_t block, const std::optional<Hash>& hash) {
  if (last_block_ && block <= *last_block_) throw std::logic_error("manifest entries must ascend");
  const uint64_t gap = last_block_ ? block - *last_block_ - 1 : block;
  last_block_ = block;
  std::string e;
  put_varint(e, gap * 2 + (hash ? 1 : 0));
  if (hash) e.append(as_view(*hash));
  entry_bytes_ += e.size();
  ++entries_;
  emit(e);
}

void ManifestEncoder::finish(const ManifestTail& tail) {
  std::string t;
  const std::string rec = encode(tail.rev);
  put_le(t, rec.size(), 4);
  t.append(rec);
  put_le(t, tail.generation, 4);
  put_le(t, tail.absorbed.size(), 4);
  for (uint64_t a : tail.absorbed) put_le(t, a, 8);
  std::string footer;
  put_le(footer, t.size(), 4);
  put_le(footer, entries_, 8);
  put_le(footer, entry_bytes_, 8);
  emit(t);
  emit(footer);
  drain();
  const Hash h = sha_final(sha_.get());
  sink_.append(as_view(h));
}

std::string encode_manifest(const ManifestTail& tail,
                            const std::vector<std::pair<uint64_t, std::optional<Hash>>>& entries) {
  class StringSink final : public ObjectSink {
   public:
    void append(std::string_view b) override { s.append(b); }
    uint64_t size() const override { return s.size(); }
    void commit() override {}
    std::string s;
  } sink;
  ManifestEncoder enc(sink);
  for (const auto& [b, h] : entries) enc.add(b, h);
  enc.finish(tail);
  return std::move(sink.s);
}

std::unique_ptr<ObjectReader> memory_object(std::string bytes) {
  return std::make_unique<MemoryObject>(std::move(bytes));
}

ManifestReader::ManifestReader(const ObjectReader& object) : object_(object) {
  const uint64_t size = object.size();
  if (size < kManifestHeaderSize + kManifestFooterSize + 32) corrupt("too short");
  // The trailer covers every byte before it: check it first, streaming. The header, footer and
  // tail are taken from the very bytes hashed, not read again: a second read could differ (a bad
  // read), and what is decoded must be what was verified.
  const uint64_t end = size - 32;
  const uint64_t keep_from = end - std::min<uint64_t>(end, kMaxManifestTail + kManifestFooterSize);
  std::string head, suffix;  // bytes [0, header) and [keep_from, end), as hashed
  {
    std::unique_ptr<void, void (*)(void*)> sha(new_sha(), free_sha);
    std::string piece;
    for (uint64_t off = 0; off < end;) {
      piece.resize(std::min<uint64_t>(kReadPiece, end - off));
      if (!object.read_at(off, piece.data(), piece.size())) corrupt("short read");
      sha_update(sha.get(), piece);
      if (off < kManifestHeaderSize)
        head.append(piece, 0, std::min<uint64_t>(piece.size(), kManifestHeaderSize - off));
      if (off + piece.size() > keep_from) suffix.append(piece, off >= keep_from ? 0 : keep_from - off);
      off += piece.size();
    }
    if (!object.read_at(end, reinterpret_cast<char*>(want_.data()), 32)) corrupt("short read");
    if (sha_final(sha.get()) != want_) corrupt("SHA-256 trailer does not match");
  }
  const char* foot = suffix.data() + suffix.size() - kManifestFooterSize;
  if (head != header()) corrupt("bad magic or version");
  const uint64_t tail_len = get_le(foot, 4);
  entries_ = get_le(foot + 4, 8);
  entry_bytes_ = get_le(foot + 12, 8);
  const uint64_t body = size - 32 - kManifestFooterSize - kManifestHeaderSize;  // entries + tail
  if (tail_len > kMaxManifestTail || tail_len > body || entry_bytes_ != body - tail_len)
    corrupt("section lengths disagree with the object's size");
  if (entries_ > entry_bytes_ || entry_bytes_ > entries_ * 42) corrupt("entry count disagrees with their length");
  // suffix holds at least tail + footer: tail_len <= kMaxManifestTail and tail_len <= body.
  tail_and_footer_ = suffix.substr(suffix.size() - kManifestFooterSize - tail_len);
  const std::string t = tail_and_footer_.substr(0, tail_len);
  if (t.size() < 4) corrupt("tail too short");
  const uint64_t rec_len = get_le(t.data(), 4);
  if (rec_len > t.size() - 4 || t.size() - 4 - rec_len < 8) corrupt("tail too short");
  tail_.rev = decode_revision(std::string_view(t).substr(4, rec_len));
  const char* p = t.data() + 4 + rec_len;
  tail_.generation = static_cast<uint32_t>(get_le(p, 4));
  const uint64_t n = get_le(p + 4, 4);
  if (n > kMaxAbsorbed || t.size() - 4 - rec_len - 8 != n * 8) corrupt("absorbed list disagrees with its length");
  for (uint64_t i = 0; i < n; ++i) tail_.absorbed.push_back(get_le(p + 8 + i * 8, 8));
  if (tail_.rev.id == 0) corrupt("revision id 0");
}

void ManifestReader::for_each_entry(const std::function<void(uint64_t, const std::optional<Hash>&)>& fn) const {
  std::string buf;
  size_t pos = 0;
  uint64_t off = kManifestHeaderSize, left = entry_bytes_;
  // The entries are read again here: hashed with the verified header, tail and footer, they must
  // give the trailer once more, or this read was not the one verified (a bad read: kCorrupt, and
  // the caller drops what fn was given).
  std::unique_ptr<void, void (*)(void*)> sha(new_sha(), free_sha);
  sha_update(sha.get(), header());
  // Keeps at least one whole entry (at most 10 + 32 bytes) in buf while bytes remain.
  auto need = [&](size_t n) {
    if (buf.size() - pos >= n) return true;
    buf.erase(0, pos);
    pos = 0;
    const size_t take = std::min<uint64_t>(left, kReadPiece);
    const size_t old = buf.size();
    buf.resize(old + take);
    if (take && !object_.read_at(off, buf.data() + old, take)) corrupt("short read");
    sha_update(sha.get(), std::string_view(buf).substr(old, take));
    off += take;
    left -= take;
    return buf.size() - pos >= n;
  };
  std::optional<uint64_t> last;
  for (uint64_t i = 0; i < entries_; ++i) {
    uint64_t v = 0;
    for (int shift = 0;; shift += 7) {
      if (shift > 63 || !need(1)) corrupt("entry truncated");
      const uint8_t c = uint8_t(buf[pos++]);
      if (shift == 63 && c > 1) corrupt("entry varint too long");
      v |= uint64_t(c & 0x7f) << shift;
      if (!(c & 0x80)) break;
    }
    const uint64_t gap = v >> 1;
    if (gap > kMaxBlock || (last && gap > kMaxBlock - *last - 1)) corrupt("block number out of range");
    const uint64_t block = last ? *last + 1 + gap : gap;
    last = block;
    std::optional<Hash> h;
    if (v & 1) {
      if (!need(32)) corrupt("entry truncated");
      h.emplace();
      std::memcpy(h->data(), buf.data() + pos, 32);
      pos += 32;
    }
    fn(block, h);
  }
  if (pos != buf.size() || left != 0) corrupt("bytes after the last entry");
  sha_update(sha.get(), tail_and_footer_);
  if (sha_final(sha.get()) != want_) corrupt("entries differ from the verified ones (a bad read)");
}

}  // namespace rbdvault::store
