// Small POSIX file helpers shared by the local backends (pack files, the local object store).
#pragma once

#include <cstddef>
#include <filesystem>

namespace rbdvault::store {

// fsync of a directory, which makes the renames and unlinks done in it durable. Throws StoreError.
void fsync_dir(const std::filesystem::path& dir);
// write(2) until all n bytes are written (EINTR retried). Throws StoreError naming `path`.
void write_all(int fd, const char* p, size_t n, const std::filesystem::path& path);

}  // namespace rbdvault::store
