// The file system the index is stored on: RocksDB's own by default; tests put fault-injecting
// wrappers here (tests/faults). Only a forward declaration: nothing outside store/index.cc sees
// RocksDB's headers.
#pragma once

#include <memory>

namespace rocksdb {
class FileSystem;
}  // namespace rocksdb

namespace rbdvault::store {

using IndexFileSystem = std::shared_ptr<rocksdb::FileSystem>;

}  // namespace rbdvault::store
