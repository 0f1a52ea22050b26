// The local-directory backend of the storage seam (object_store.h): object NAME is the file
// ROOT/NAME. A sink writes ROOT/NAME.tmp; commit() fsyncs it, renames it into place without
// replacing (RENAME_NOREPLACE, or link(2) where the file system lacks it) and fsyncs the directory,
// the sequence restic and borg use so that a crash leaves either no object or the whole one.
#pragma once

#include <filesystem>

#include "store/object_store.h"

namespace rbdvault::store {

class LocalObjectStore final : public ObjectStore {
 public:
  explicit LocalObjectStore(std::filesystem::path root) : root_(std::move(root)) {}

  std::unique_ptr<ObjectSink> create(const std::string& name) override;
  std::unique_ptr<ObjectReader> open(const std::string& name) override;
  std::optional<uint64_t> size(const std::string& name) override;
  std::vector<std::string> list(const std::string& prefix) override;
  void remove(const std::string& name) override;
  void remove_incomplete(const std::string& prefix) override;

  const std::filesystem::path& root() const { return root_; }

 private:
  std::filesystem::path path_of(const std::string& name) const;
  std::filesystem::path root_;
};

}  // namespace rbdvault::store
