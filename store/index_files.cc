#include "store/index_files.h"

#include <fcntl.h>
#include <rocksdb/file_system.h>
#include <spdlog/spdlog.h>
#include <stdio.h>

#include <algorithm>
#include <string>
#include <vector>

#include "store/error.h"
#include "store/posix_file.h"

namespace rbdvault::store {
namespace {

namespace fs = std::filesystem;

rocksdb::FileSystem& pick(const IndexFileSystem& files) {
  return files ? *files : *rocksdb::FileSystem::Default();
}

void check_io(const rocksdb::IOStatus& s, const std::string& what) {
  if (s.IsNoSpace()) throw StoreError(StoreError::Kind::kNoSpace, what + ": " + s.ToString());
  if (!s.ok()) throw StoreError(StoreError::Kind::kIO, what + ": " + s.ToString());
}

// fsync of a directory through `files` (the index's file system), which makes renames in it durable.
void sync_dir(rocksdb::FileSystem& files, const fs::path& dir) {
  std::unique_ptr<rocksdb::FSDirectory> d;
  check_io(files.NewDirectory(dir.string(), rocksdb::IOOptions(), &d, nullptr), "open directory " + dir.string());
  check_io(d->Fsync(rocksdb::IOOptions(), nullptr), "fsync directory " + dir.string());
}

// Deletes an index directory (flat, as RocksDB writes it; a subdirectory is deleted too) through
// `files`; nothing there is not an error.
void remove_tree(rocksdb::FileSystem& files, const fs::path& dir) {
  const rocksdb::IOOptions o;
  if (files.FileExists(dir.string(), o, nullptr).IsNotFound()) return;
  std::vector<std::string> children;
  check_io(files.GetChildren(dir.string(), o, &children, nullptr), "list " + dir.string());
  std::sort(children.begin(), children.end());  // a fixed order: the fault matrix numbers each delete
  for (const std::string& c : children) {
    const fs::path p = dir / c;
    bool is_dir = false;
    check_io(files.IsDirectory(p.string(), o, &is_dir, nullptr), "stat " + p.string());
    if (is_dir)
      remove_tree(files, p);
    else
      check_io(files.DeleteFile(p.string(), o, nullptr), "remove " + p.string());
  }
  check_io(files.DeleteDir(dir.string(), o, nullptr), "remove " + dir.string());
}

// Puts the new index in place of the old in one step: RENAME_EXCHANGE when there is an old one, so
// that `index/` is never missing; the old one is then deleted under the new one's former name.
// The exchange has no FileSystem call; the directory syncs just before and after it are fault
// points, and between them lie the only two states a failed or killed exchange can leave.
void swap_in(rocksdb::FileSystem& files, const fs::path& dir, const fs::path& fresh) {
  const fs::path index = dir / "index";
  std::error_code ec;
  if (fs::exists(index, ec)) {
    if (::renameat2(AT_FDCWD, fresh.c_str(), AT_FDCWD, index.c_str(), RENAME_EXCHANGE) != 0)
      throw_errno("swap the new index into " + index.string());
  } else {
    check_io(files.RenameFile(fresh.string(), index.string(), rocksdb::IOOptions(), nullptr),
             "move the new index to " + index.string());
  }
  sync_dir(files, dir);
  try {
    remove_tree(files, fresh);  // the old index; a leftover is removed by the next rebuild
  } catch (const StoreError& e) {
    spdlog::warn("rebuild-index: the old index is left in {}: {}", fresh.string(), e.what());
  }
}

}  // namespace

void sync_index_dir(const IndexFileSystem& files, const fs::path& dir) { sync_dir(pick(files), dir); }
void remove_index_tree(const IndexFileSystem& files, const fs::path& dir) { remove_tree(pick(files), dir); }
void swap_in_index(const IndexFileSystem& files, const fs::path& dir, const fs::path& fresh) {
  swap_in(pick(files), dir, fresh);
}

}  // namespace rbdvault::store
