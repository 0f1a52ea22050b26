// Creates a new RBD image and fills it with asynchronous writes (the restore side).
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "rbd/image.h"

namespace rbdvault::rbd {

struct NewImageOptions {
  uint64_t size = 0;
  int order = 0;  // log2(object size); 0: the cluster default
  // The source image's features; only those a new image can always have are used (layering,
  // exclusive-lock, object-map, fast-diff, deep-flatten). 0: the cluster default.
  uint64_t features = 0;
  size_t max_in_flight = 16;
};

class ImageWriter {
 public:
  // Creates pool/name. An existing image is refused with CephError(-EEXIST) and left untouched.
  ImageWriter(Cluster& cluster, const std::string& pool, const std::string& name, const NewImageOptions& options);
  // Removes the image again unless commit() succeeded: a failed restore leaves no half image.
  ~ImageWriter();
  ImageWriter(const ImageWriter&) = delete;
  ImageWriter& operator=(const ImageWriter&) = delete;

  // Queues a write of `data` (copied) at `offset`; blocks while max_in_flight writes are pending.
  void write(uint64_t offset, std::string_view data);
  // The same for the pieces back to back (copied into one request).
  void write(uint64_t offset, const std::vector<std::string_view>& pieces);
  // Waits for every write and flushes the image (its data is then durable in the cluster).
  void flush();
  // flush(), and keeps the image under the name it was created with.
  void commit();
  // flush(), closes the image and renames it to `final_name` in the same pool, then keeps it. An
  // existing `final_name` is refused with CephError(-EEXIST) and the image is removed like an
  // uncommitted one: writing under a temporary name and renaming at the end is what makes a
  // restore appear under its real name complete or not at all. Closed, the image has no watcher,
  // and another restore to the same target may remove it as a leftover and create its own under
  // its name before the rename: the rename is then undone and refused (CephError(-EBUSY)), never
  // publishing that restore's unfinished image. `after_close` (tests) runs in that gap;
  // `before_rename` (tests) runs after the partial's id was checked, before the rename: the image
  // the rename took is checked again after it.
  void commit_as(const std::string& final_name, const std::function<void()>& after_close = {},
                 const std::function<void()>& before_rename = {});

  size_t peak_in_flight() const { return peak_in_flight_; }
  uint64_t bytes_written() const { return bytes_written_; }

 private:
  struct Pending;
  void complete_front();

  Cluster& cluster_;
  std::string pool_, name_;
  size_t max_in_flight_;
  std::unique_ptr<Image> image_;
  std::deque<std::unique_ptr<Pending>> pending_;
  bool flushed_ = false;
  bool committed_ = false;
  size_t peak_in_flight_ = 0;
  uint64_t bytes_written_ = 0;
};

// Whether pool/name exists (opened read-only, which registers no watch).
bool image_exists(Cluster& cluster, const std::string& pool, const std::string& name);

// Removes pool/name (tests and cleanup). Missing images are not an error when `missing_ok`.
void remove_image(Cluster& cluster, const std::string& pool, const std::string& name, bool missing_ok);

}  // namespace rbdvault::rbd
