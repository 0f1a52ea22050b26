// The index's directories as files: syncing, removing and swapping whole index directories through
// the index's file system (index_fs.h), so that the fault matrix sees each step (rebuild-index).
// Index code: with index.cc, the only code that includes RocksDB.
#pragma once

#include <filesystem>

#include "store/index_fs.h"

namespace rbdvault::store {

// fsync of a directory (makes renames in it durable). `files` null: RocksDB's own file system.
void sync_index_dir(const IndexFileSystem& files, const std::filesystem::path& dir);
// Deletes an index directory and what is in it; nothing there is not an error.
void remove_index_tree(const IndexFileSystem& files, const std::filesystem::path& dir);
// Puts the index in `fresh` in place of `dir`/index in one step: RENAME_EXCHANGE when there is an
// old one, so that `index/` is never missing; the old one is then deleted under `fresh`'s name
// (a leftover is removed by the next rebuild).
void swap_in_index(const IndexFileSystem& files, const std::filesystem::path& dir, const std::filesystem::path& fresh);

}  // namespace rbdvault::store
