#include "agent/restore.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <thread>

#include "agent/ordered_writer.h"
#include "rbd/error.h"
#include "rbd/image_writer.h"
#include "store/error.h"
#include "store/store.h"

namespace rbdvault::agent {
namespace {

using store::StoreError;

// A killed restore's watch on its partial image outlives the process until the OSDs time it out
// (`osd client watch timeout`, 30 s by default), and librbd refuses to remove a watched image.
constexpr auto kLeftoverImageWait = std::chrono::seconds(60);

[[noreturn]] void refuse_existing(const std::string& target) {
  throw StoreError(StoreError::Kind::kExists, target + " already exists; refusing to overwrite it");
}

// Streams a revision's non-zero blocks to `sink` as coalesced runs, in block order: chunks are read,
// decompressed and verified against their hash on worker threads (OrderedWriter). The digest sums
// the terms of exactly the blocks handed out, so the check covers what was written, not a second
// read of the map.
void write_blocks(store::ReadOnlyStore& store, const store::RevisionRecord& rev, const RestoreOptions& options,
                  RestoreResult& result, store::Hash& digest, const OrderedWriter::Sink& sink) {
  const uint64_t bs = store.block_size();
  OrderedWriterOptions wo;
  wo.block_size = store.block_size();
  wo.size = rev.size;
  wo.workers = options.decode_threads ? options.decode_threads : std::max(1u, std::thread::hardware_concurrency());
  wo.max_write_bytes = options.max_write_bytes;
  wo.window_bytes = options.window_bytes;
  // A stop is honoured before each write too: the scan may have handed out every block before the
  // first write.
  const OrderedWriter::Sink stoppable = [&](uint64_t offset, const std::vector<std::string_view>& pieces,
                                            uint64_t bytes) {
    if (options.stop && options.stop()) throw RestoreStopped("restore stopped; nothing was published");
    sink(offset, pieces, bytes);
  };
  OrderedWriter writer(
      wo, [&store](uint64_t, const store::Hash& hash) { return store.read_chunk(hash); }, stoppable);
  digest = store::Hash{};
  store.for_each_data_block(rev, [&](uint64_t block, const store::Hash& hash) {
    if (options.stop && options.stop()) throw RestoreStopped("restore stopped; nothing was published");
    store::RevisionDigest::add(digest, store::RevisionDigest::term(block, hash));
    writer.add(block, hash);
    ++result.blocks_written;
    result.bytes_written += std::min<uint64_t>(bs, rev.size - block * bs);  // the last block is stored padded
  });
  writer.finish();
  store::RevisionDigest::add(digest, store::RevisionDigest::size_term(rev.size));
  result.zero_blocks_skipped = store.blocks_for(rev.size) - result.blocks_written;
}

// A block map entry lost or added since the commit changes what a restore writes without any chunk
// failing its own hash; only the whole-revision digest notices.
void log_result(const store::RevisionRecord& rev, const std::string& target, const RestoreResult& r) {
  spdlog::info("restore {}/{}@{} -> {}: {} bytes written, {} zero blocks skipped ({:.1f}s)", rev.pool, rev.name, rev.id,
               target, r.bytes_written, r.zero_blocks_skipped, r.seconds);
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// ---- images ------------------------------------------------------------------------------------

void remove_leftover_image(rbd::Cluster& cluster, const std::string& pool, const std::string& partial) {
  const auto deadline = std::chrono::steady_clock::now() + kLeftoverImageWait;
  bool said_waiting = false;
  for (;;) {
    try {
      rbd::remove_image(cluster, pool, partial, false);
      spdlog::warn("removed {}/{}, left by an unfinished restore", pool, partial);
      return;
    } catch (const rbd::CephError& e) {
      if (e.code() == -ENOENT) return;
      if (e.code() != -EBUSY) throw;
      if (std::chrono::steady_clock::now() >= deadline)
        throw rbd::CephError("image " + pool + "/" + partial +
                                 " is still open (is another restore to this target running?); not removing it",
                             e.code());
      if (!said_waiting)
        spdlog::info("waiting for the killed restore's watch on {}/{} to expire before removing it", pool, partial);
      said_waiting = true;
      std::this_thread::sleep_for(std::chrono::seconds(1));
    }
  }
}

// ---- files -------------------------------------------------------------------------------------

void fsync_directory_of(const std::string& path) {
  std::string dir = std::filesystem::path(path).parent_path().string();
  if (dir.empty()) dir = ".";
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) store::throw_errno("open directory " + dir);
  const int r = ::fsync(fd);
  const int saved = errno;
  ::close(fd);
  errno = saved;
  if (r != 0) store::throw_errno("fsync directory " + dir);
}

// Whether `path` still names the file open as `fd` (another restore may have removed or replaced it).
bool names_open_file(const std::string& path, int fd) {
  struct stat a {}, b {};
  return ::fstat(fd, &a) == 0 && ::lstat(path.c_str(), &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

// flock(LOCK_EX | LOCK_NB); `no_lock` (RBDVAULT_FAULT=restore.no_lock) fails it as a filesystem
// without locks does (ENOLCK, e.g. NFS without a lock manager).
int lock_file(int fd, bool no_lock) {
  if (!no_lock) return ::flock(fd, LOCK_EX | LOCK_NB);
  errno = ENOLCK;
  return -1;
}

// The error of a lock that failed for another reason than a holder: the filesystem cannot lock.
[[noreturn]] void throw_cannot_lock(const std::string& path, int error) {
  errno = error;
  store::throw_errno("lock " + path + " (restoring to a file needs a filesystem that supports flock)");
}

// Removes a partial file left by a killed restore. Each restore holds an flock on its partial file
// while it writes, so a running one is never pulled from under it.
void remove_leftover_file(const std::string& partial, bool no_lock) {
  struct stat st {};
  if (::lstat(partial.c_str(), &st) != 0) {
    if (errno == ENOENT) return;
    store::throw_errno("stat " + partial);
  }
  if (!S_ISREG(st.st_mode))
    throw StoreError(StoreError::Kind::kExists, partial + " exists and is not a file left by a restore; remove it");
  const int fd = ::open(partial.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return;  // its restore just finished
    store::throw_errno("open " + partial);
  }
  if (lock_file(fd, no_lock) != 0) {
    const int saved = errno;
    ::close(fd);
    if (saved != EWOULDBLOCK) throw_cannot_lock(partial, saved);
    throw StoreError(StoreError::Kind::kLocked, "another restore is writing " + partial);
  }
  if (!names_open_file(partial, fd)) {
    ::close(fd);
    throw StoreError(StoreError::Kind::kLocked, "another restore is writing " + partial);
  }
  const int r = ::unlink(partial.c_str());
  const int saved = errno;
  ::close(fd);
  if (r != 0 && saved != ENOENT) {
    errno = saved;
    store::throw_errno("remove " + partial);
  }
  if (r == 0) spdlog::warn("removed {}, left by an unfinished restore", partial);
}

// Moves `from` to `to` unless `to` exists. renameat2(RENAME_NOREPLACE) where the filesystem has
// it, else link + unlink (link also fails on an existing name).
void rename_no_replace(const std::string& from, const std::string& to) {
  if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) == 0) return;
  if (errno == EEXIST) refuse_existing(to);
  if (errno != EINVAL && errno != ENOSYS) store::throw_errno("rename " + from + " to " + to);
  if (::link(from.c_str(), to.c_str()) != 0) {
    if (errno == EEXIST) refuse_existing(to);
    store::throw_errno("link " + from + " to " + to);
  }
  if (::unlink(from.c_str()) != 0) store::throw_errno("remove " + from);
}

// The file a restore writes under its partial name: removed on destruction unless published.
class PartialFile {
 public:
  PartialFile(std::string path, bool no_lock) : path_(std::move(path)) {
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd_ < 0) store::throw_errno("create " + path_);
    if (lock_file(fd_, no_lock) != 0) {
      const int saved = errno;
      if (saved == EWOULDBLOCK) {  // another restore took it for a leftover: that one removes it
        ::close(fd_);
        throw StoreError(StoreError::Kind::kLocked, "another restore is writing " + path_);
      }
      // Not left behind: every later restore would take an unlockable leftover for a running one.
      if (names_open_file(path_, fd_)) ::unlink(path_.c_str());
      ::close(fd_);
      throw_cannot_lock(path_, saved);
    }
    if (!names_open_file(path_, fd_)) {  // removed as a leftover between our create and our lock
      ::close(fd_);
      throw StoreError(StoreError::Kind::kLocked, "another restore is writing " + path_);
    }
  }
  ~PartialFile() {
    if (!published_ && fd_ >= 0 && names_open_file(path_, fd_)) ::unlink(path_.c_str());
    if (fd_ >= 0) ::close(fd_);
  }
  PartialFile(const PartialFile&) = delete;
  PartialFile& operator=(const PartialFile&) = delete;

  void truncate(uint64_t size) {
    if (::ftruncate(fd_, static_cast<off_t>(size)) != 0) store::throw_errno("truncate " + path_);
  }
  // Writes the pieces back to back from `offset`, one pwritev per call where the kernel takes it all.
  void write_at(uint64_t offset, const std::vector<std::string_view>& pieces) {
    std::vector<iovec> iov;
    iov.reserve(pieces.size());
    for (auto p : pieces)
      if (!p.empty()) iov.push_back(iovec{const_cast<char*>(p.data()), p.size()});
    size_t first = 0;
    while (first < iov.size()) {
      const int n = static_cast<int>(std::min<size_t>(iov.size() - first, IOV_MAX));
      ssize_t w = ::pwritev(fd_, &iov[first], n, static_cast<off_t>(offset));
      if (w < 0) {
        if (errno == EINTR) continue;
        store::throw_errno("write " + path_);
      }
      offset += static_cast<uint64_t>(w);
      // Step over what was written: whole pieces, then into a partly written one.
      while (first < iov.size() && static_cast<size_t>(w) >= iov[first].iov_len) {
        w -= static_cast<ssize_t>(iov[first].iov_len);
        ++first;
      }
      if (first < iov.size()) {
        iov[first].iov_base = static_cast<char*>(iov[first].iov_base) + w;
        iov[first].iov_len -= static_cast<size_t>(w);
      }
    }
  }
  void sync() {
    if (::fsync(fd_) != 0) store::throw_errno("fsync " + path_);
  }
  // Renames to `target` (refused if it exists) and makes the rename durable. The lock is held
  // until the file has its final name, so no other restore removes it as a leftover meanwhile.
  void publish(const std::string& target) {
    // The name is ours while we hold the lock (a leftover is removed only under it), unless
    // something outside rbdvault replaced the file: then it is not published as our revision.
    if (!names_open_file(path_, fd_))
      throw StoreError(StoreError::Kind::kLocked, path_ + " was removed or replaced while the restore wrote it");
    rename_no_replace(path_, target);
    published_ = true;
    const int r = ::close(fd_);
    fd_ = -1;
    if (r != 0) store::throw_errno("close " + target);
    fsync_directory_of(target);
  }

 private:
  std::string path_;
  int fd_ = -1;
  bool published_ = false;
};

std::string partial_path(const std::string& path) {
  std::filesystem::path p(path);
  return (p.parent_path() / partial_name(p.filename().string())).string();
}

}  // namespace

void check_revision_digest(const store::RevisionRecord& rev, const store::Hash& actual, bool enforce,
                           const char* use) {
  if (actual == rev.digest) return;
  if (!enforce) {
    spdlog::warn("revision {} does not match its recorded digest; {} anyway (--skip-digest-check)", rev.id, use);
    return;
  }
  throw StoreError(StoreError::Kind::kCorrupt,
                   "revision " + std::to_string(rev.id) + " of " + rev.pool + "/" + rev.name +
                       " does not match its recorded digest (block map entries missing or extra); restore "
                       "abandoned, run `rbdvault scrub`");
}

RestoreResult restore_to_image(rbd::Cluster& cluster, store::ReadOnlyStore& store, const store::RevisionRecord& rev,
                               const std::string& pool, const std::string& name, const RestoreOptions& options) {
  const auto started = std::chrono::steady_clock::now();
  const std::string target = pool + "/" + name, partial = partial_name(name);
  if (rbd::image_exists(cluster, pool, name)) refuse_existing("image " + target);
  remove_leftover_image(cluster, pool, partial);
  rbd::NewImageOptions create;
  create.size = rev.size;
  create.order = rev.order;
  create.features = rev.features;
  create.max_in_flight = options.writes_in_flight;
  rbd::ImageWriter writer(cluster, pool, partial, create);  // removes the partial image unless committed
  auto& crash = store.crash_points();
  crash.reached("restore.created");
  RestoreResult result;
  store::Hash digest{};
  write_blocks(store, rev, options, result, digest,
               [&](uint64_t offset, const std::vector<std::string_view>& pieces, uint64_t bytes) {
                 writer.write(offset, pieces);
                 crash.reached("restore.write");
                 if (options.progress) options.progress(offset + bytes, rev.size);
               });
  check_revision_digest(rev, digest, options.check_digest, "restored");
  writer.flush();
  crash.reached("restore.before_rename");
  try {
    writer.commit_as(name, [&] { crash.reached("restore.image_closed"); },
                     [&] { crash.reached("restore.image_checked"); });
  } catch (const rbd::CephError& e) {
    if (e.code() == -EEXIST) refuse_existing("image " + target);  // created while we wrote
    throw;
  }
  crash.reached("restore.renamed");
  result.seconds = seconds_since(started);
  log_result(rev, target, result);
  return result;
}

RestoreResult restore_to_file(store::ReadOnlyStore& store, const store::RevisionRecord& rev, const std::string& path,
                              const RestoreOptions& options) {
  const auto started = std::chrono::steady_clock::now();
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) refuse_existing(path);
  if (errno != ENOENT) store::throw_errno("stat " + path);
  const std::string partial = partial_path(path);
  auto& crash = store.crash_points();
  const bool no_lock = crash.fault("restore.no_lock");
  remove_leftover_file(partial, no_lock);
  PartialFile file(partial, no_lock);
  crash.reached("restore.created");
  file.truncate(rev.size);
  RestoreResult result;
  store::Hash digest{};
  write_blocks(store, rev, options, result, digest,
               [&](uint64_t offset, const std::vector<std::string_view>& pieces, uint64_t bytes) {
                 file.write_at(offset, pieces);
                 crash.reached("restore.write");
                 if (options.progress) options.progress(offset + bytes, rev.size);
               });
  check_revision_digest(rev, digest, options.check_digest, "restored");
  file.sync();
  crash.reached("restore.before_rename");
  file.publish(path);
  crash.reached("restore.renamed");
  result.seconds = seconds_since(started);
  log_result(rev, path, result);
  return result;
}

}  // namespace rbdvault::agent
