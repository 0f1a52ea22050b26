#include "store/scrub.h"

#include <fcntl.h>
#include <rocksdb/db.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <unordered_map>

#include "store/chunk_codec.h"
#include "store/pack.h"
#include "store/store.h"

namespace fs = std::filesystem;

namespace rbdvault::store {
namespace {

struct HashKey {
  size_t operator()(const Hash& h) const {
    size_t v;
    std::memcpy(&v, h.data(), sizeof(v));
    return v;
  }
};

// Checks one chunk against its index record and its pack; caches the verdict per hash.
class ChunkChecker {
 public:
  ChunkChecker(Store& store, bool deep) : store_(store), deep_(deep) {}
  ~ChunkChecker() {
    for (auto& [id, fd] : fds_)
      if (fd >= 0) ::close(fd);
  }

  // Empty string: fine; otherwise what is wrong.
  const std::string& check(const Hash& hash, ScrubReport& report) {
    auto it = verdicts_.find(hash);
    if (it != verdicts_.end()) return it->second;
    ++report.chunks_checked;
    return verdicts_.emplace(hash, examine(hash, report)).first->second;
  }

 private:
  // -1 with errno set when the pack cannot be opened; failures are not cached.
  int fd_for(uint32_t pack) {
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

  std::string examine(const Hash& hash, ScrubReport& report) {
    const std::string name = "chunk " + to_hex(hash).substr(0, 16);
    std::optional<ChunkRecord> rec;
    try {
      rec = store_.chunk(hash);
    } catch (const StoreError& e) {
      if (e.kind() != StoreError::Kind::kCorrupt) throw;
      return name + " has a malformed index record (" + e.what() + ")";  // damage to report, not to stop at
    }
    if (!rec) return name + " is referenced but has no index record";
    const std::string where = name + " (" + pack_file_name(rec->pack) + " at " + std::to_string(rec->offset) + ")";
    int fd = fd_for(rec->pack);
    if (fd < 0) {
      if (errno == ENOENT) return where + ": pack file is missing";
      throw_errno("open pack " + pack_file_name(rec->pack));  // not damage: an I/O problem here
    }
    struct stat st {};
    if (::fstat(fd, &st) != 0) return where + ": cannot stat pack file";
    if (rec->offset + kChunkHeaderSize + rec->stored_len > static_cast<uint64_t>(st.st_size))
      return where + ": pack file is truncated (" + std::to_string(st.st_size) + " bytes)";
    const size_t len = deep_ ? kChunkHeaderSize + rec->stored_len : kChunkHeaderSize;
    std::string buf(len, '\0');
    if (::pread(fd, buf.data(), len, static_cast<off_t>(rec->offset)) != static_cast<ssize_t>(len))
      return where + ": read failed";
    auto le32 = [&](size_t at) {
      uint32_t v;
      std::memcpy(&v, buf.data() + at, 4);
      return v;  // little-endian host (x86_64, aarch64)
    };
    if (buf.compare(0, 4, kChunkMagic) != 0) return where + ": bad chunk header magic";
    if (static_cast<uint8_t>(buf[4]) != rec->flags || le32(8) != rec->raw_len || le32(12) != rec->stored_len)
      return where + ": chunk header disagrees with the index (flags/length)";
    if (std::memcmp(buf.data() + 16, hash.data(), 32) != 0) return where + ": chunk header names another hash";
    if (rec->raw_len != store_.block_size()) return where + ": raw length is not the block size";
    if (deep_) {
      try {
        std::string raw = decode_chunk(rec->flags, std::string_view(buf).substr(kChunkHeaderSize), rec->raw_len);
        if (sha256(raw) != hash) return where + ": content does not match its SHA-256";
      } catch (const StoreError& e) {
        return where + ": " + e.what();
      }
      report.bytes_verified += rec->stored_len;
    }
    return {};
  }

  Store& store_;
  bool deep_;
  std::unordered_map<Hash, std::string, HashKey> verdicts_;
  std::map<uint32_t, int> fds_;
};

void check_status(const rocksdb::Status& s, const std::string& what) {
  if (!s.ok()) throw StoreError(StoreError::Kind::kIO, what + ": " + s.ToString());
}

}  // namespace

std::vector<uint64_t> ScrubReport::damaged_revisions() const {
  std::set<uint64_t> revs;
  for (auto& i : issues)
    if (i.revision) revs.insert(i.revision);
  return {revs.begin(), revs.end()};
}

ScrubReport scrub(Store& store, const ScrubOptions& options) {
  ScrubReport report;
  ChunkChecker chunks(store, options.deep);
  auto add = [&](const RevisionRecord* r, std::string problem) {
    report.issues.push_back({r ? r->id : 0, r ? r->pool + "/" + r->name : std::string(), std::move(problem)});
  };

  for (const ImageRecord& image : store.images()) {
    if (options.image && *options.image != image.key) continue;
    const std::vector<RevisionRecord> revs = store.revisions(image.key);
    uint64_t previous = 0;
    for (const RevisionRecord& rev : revs) {
      const uint64_t expected_parent = previous;
      previous = rev.id;
      if (options.revision && *options.revision != rev.id) continue;
      ++report.revisions_checked;
      if (rev.image != image.key || rev.pool != image.pool || rev.name != image.name)
        add(&rev, "revision record names another image");
      if (rev.parent != expected_parent)
        add(&rev, "broken parent pointer: parent " + std::to_string(rev.parent) + ", previous revision is " +
                      std::to_string(expected_parent));
      if (rev.block_size != store.block_size()) add(&rev, "block size differs from the store's");
      // Every chunk the revision reads, and its checksum.
      Hash digest{};
      uint64_t bad_chunks = 0;
      std::string first_problem;
      store.for_each_data_block(rev, [&](uint64_t block, const Hash& h) {
        RevisionDigest::add(digest, RevisionDigest::term(block, h));
        const std::string& problem = chunks.check(h, report);
        if (!problem.empty()) {
          if (bad_chunks++ == 0) first_problem = "block " + std::to_string(block) + ": " + problem;
        }
      });
      RevisionDigest::add(digest, RevisionDigest::size_term(rev.size));
      if (bad_chunks) add(&rev, std::to_string(bad_chunks) + " damaged block(s), first " + first_problem);
      if (digest != rev.digest)
        add(&rev, "whole-revision checksum does not match the block map (entries missing, altered or wrong size)");
    }
  }

  // Store-wide accounting: chunk reference counts are the number of block map entries naming them.
  std::unordered_map<Hash, uint64_t, HashKey> refs;
  {
    std::unique_ptr<rocksdb::Iterator> it(store.db().NewIterator(rocksdb::ReadOptions()));
    const std::string prefix(1, kKeyBlock);
    for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
      if (it->value().size() == 32) {
        Hash h;
        std::memcpy(h.data(), it->value().data(), 32);
        ++refs[h];
      }
    }
    check_status(it->status(), "scan block maps");
  }
  uint64_t wrong_refs = 0;
  std::map<uint32_t, uint64_t> pack_end;
  {
    std::unique_ptr<rocksdb::Iterator> it(store.db().NewIterator(rocksdb::ReadOptions()));
    const std::string prefix(1, kKeyChunk);
    for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
      const Hash h = chunk_hash_of_key(it->key().ToStringView());
      ChunkRecord rec;
      try {
        rec = decode_chunk_record(it->value().ToStringView());
      } catch (const StoreError& e) {
        // Reported once here; the revisions reading it are named by the block map pass above.
        add(nullptr, "chunk " + to_hex(h).substr(0, 16) + " has a malformed index record (" + e.what() + ")");
        refs.erase(h);
        continue;
      }
      auto found = refs.find(h);
      uint64_t counted = found == refs.end() ? 0 : found->second;
      if (counted != rec.refs) {
        if (wrong_refs++ < 5)
          add(nullptr, "chunk " + to_hex(h).substr(0, 16) + " has reference count " + std::to_string(rec.refs) +
                           " but " + std::to_string(counted) + " block map entries");
      }
      if (found != refs.end()) refs.erase(found);
      pack_end[rec.pack] = std::max(pack_end[rec.pack], rec.offset + kChunkHeaderSize + rec.stored_len);
    }
    check_status(it->status(), "scan chunk records");
  }
  if (wrong_refs > 5) add(nullptr, std::to_string(wrong_refs) + " chunks in all have wrong reference counts");
  if (!refs.empty())
    add(nullptr, std::to_string(refs.size()) + " chunks are referenced by block maps but have no index record");
  {
    std::unique_ptr<rocksdb::Iterator> it(store.db().NewIterator(rocksdb::ReadOptions()));
    const std::string prefix(1, kKeyPack);
    for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
      const uint32_t id = parse_pack_key(it->key().ToStringView());
      PackRecord p = decode_pack(it->value().ToStringView());
      std::error_code ec;
      auto size = fs::file_size(store.data_dir() / pack_file_name(id), ec);
      if (ec)
        add(nullptr, "pack " + pack_file_name(id) + " is missing");
      else if (size != p.bytes)
        add(nullptr, "pack " + pack_file_name(id) + " is " + std::to_string(size) + " bytes, index says " +
                         std::to_string(p.bytes));
      pack_end.erase(id);
    }
  }
  for (auto& [id, end] : pack_end)
    add(nullptr, "chunks point into pack " + pack_file_name(id) + " which has no pack record");
  spdlog::info("scrub {}: {} revisions, {} chunks{}, {} issue(s)", store.dir().string(), report.revisions_checked,
               report.chunks_checked, options.deep ? " (deep)" : "", report.issues.size());
  return report;
}

}  // namespace rbdvault::store
