#include "agent/restore.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "rbd/image_writer.h"
#include "store/error.h"
#include "store/store.h"

namespace rbdvault::agent {
namespace {

// Streams a revision's non-zero blocks as coalesced (offset, bytes) runs.
void for_each_run(store::Store& store, const store::RevisionRecord& rev, uint64_t max_bytes, RestoreResult& result,
                  const std::function<void(uint64_t, std::string_view)>& write) {
  const uint64_t bs = store.block_size();
  std::string run;
  uint64_t run_offset = 0;
  uint64_t next_block = 0;
  auto flush = [&] {
    if (!run.empty()) write(run_offset, run);
    run.clear();
  };
  store.for_each_data_block(rev, [&](uint64_t block, const store::Hash& hash) {
    std::string data = store.read_chunk(hash);
    const uint64_t offset = block * bs;
    if (offset + data.size() > rev.size) data.resize(rev.size - offset);  // the last block is stored padded
    if (run.empty() || block != next_block || run.size() + data.size() > max_bytes) {
      flush();
      run_offset = offset;
    }
    run.append(data);
    next_block = block + 1;
    ++result.blocks_written;
    result.bytes_written += data.size();
  });
  flush();
  result.zero_blocks_skipped = store.blocks_for(rev.size) - result.blocks_written;
}

}  // namespace

RestoreResult restore_to_image(rbd::Cluster& cluster, store::Store& store, const store::RevisionRecord& rev,
                               const std::string& pool, const std::string& name, const RestoreOptions& options) {
  const auto started = std::chrono::steady_clock::now();
  rbd::NewImageOptions create;
  create.size = rev.size;
  create.order = rev.order;
  create.features = rev.features;
  create.max_in_flight = options.writes_in_flight;
  rbd::ImageWriter writer(cluster, pool, name, create);
  RestoreResult result;
  for_each_run(store, rev, options.max_write_bytes, result, [&](uint64_t offset, std::string_view data) {
    writer.write(offset, data);
    if (options.progress) options.progress(offset + data.size(), rev.size);
  });
  writer.commit();
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  spdlog::info("restore {}/{}@{} -> {}/{}: {} bytes written, {} zero blocks skipped ({:.1f}s)", rev.pool, rev.name,
               rev.id, pool, name, result.bytes_written, result.zero_blocks_skipped, result.seconds);
  return result;
}

RestoreResult restore_to_file(store::Store& store, const store::RevisionRecord& rev, const std::string& path,
                              const RestoreOptions& options) {
  const auto started = std::chrono::steady_clock::now();
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) {
    if (errno == EEXIST)
      throw store::StoreError(store::StoreError::Kind::kInvalid, path + " already exists; refusing to overwrite it");
    store::throw_errno("create " + path);
  }
  RestoreResult result;
  try {
    if (::ftruncate(fd, static_cast<off_t>(rev.size)) != 0) store::throw_errno("truncate " + path);
    for_each_run(store, rev, options.max_write_bytes, result, [&](uint64_t offset, std::string_view data) {
      size_t done = 0;
      while (done < data.size()) {
        ssize_t w = ::pwrite(fd, data.data() + done, data.size() - done, static_cast<off_t>(offset + done));
        if (w < 0) {
          if (errno == EINTR) continue;
          store::throw_errno("write " + path);
        }
        done += static_cast<size_t>(w);
      }
      if (options.progress) options.progress(offset + data.size(), rev.size);
    });
    if (::fsync(fd) != 0) store::throw_errno("fsync " + path);
    if (::close(fd) != 0) {
      fd = -1;
      store::throw_errno("close " + path);
    }
  } catch (...) {
    if (fd >= 0) ::close(fd);
    ::unlink(path.c_str());
    throw;
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  spdlog::info("restore {}/{}@{} -> {}: {} bytes written, {} zero blocks skipped ({:.1f}s)", rev.pool, rev.name, rev.id,
               path, result.bytes_written, result.zero_blocks_skipped, result.seconds);
  return result;
}

}  // namespace rbdvault::agent
