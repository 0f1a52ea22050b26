// An open RBD image (RAII over librbd::Image) and the reads a backup needs from it.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <rados/librados.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace librbd {
class Image;
}

namespace rbdvault::rbd {

class Cluster;

// "POOL/IMAGE[@SNAP]", as the rbd CLI writes it. The pool defaults to "rbd" when omitted.
struct ImageSpec {
  std::string pool;
  std::string image;
  std::string snap;  // empty: none given

  // Throws std::invalid_argument with a message naming the bad spec.
  static ImageSpec parse(const std::string& text);
  std::string str() const;  // pool/image[@snap]
};

struct ImageInfo {
  std::string id;         // Ceph image id
  uint64_t size = 0;      // bytes, at the snapshot the handle is set to
  uint64_t features = 0;  // RBD_FEATURE_* bits
  uint64_t object_size = 0;
  int order = 0;       // log2(object_size)
  uint64_t flags = 0;  // RBD_FLAG_* bits (e.g. fast-diff invalid)
};

struct SnapshotInfo {
  uint64_t id = 0;
  std::string name;
  uint64_t size = 0;  // every snapshot carries its own image size
  // A snapshot whose removal was interrupted lingers in the trash namespace under a generated
  // name; original_name is the name it had.
  bool in_trash = false;
  std::string original_name;
};

// One extent from diff_iterate2. `exists` true: changed, read it (it may still read as zeros);
// false: deallocated since the base, reads as zeros.
struct ChangedExtent {
  uint64_t offset = 0;
  uint64_t length = 0;
  bool exists = false;
};

class Image {
 public:
  // Opens pool/name, at `snap` when non-empty. Throws CephError naming the image on failure
  // ("image rbd/x does not exist", ...).
  static Image open(Cluster& cluster, const std::string& pool, const std::string& name, const std::string& snap = {},
                    bool read_only = false);

  Image(Image&&) noexcept;
  Image& operator=(Image&&) noexcept;
  ~Image();

  const std::string& pool() const { return pool_; }
  const std::string& name() const { return name_; }
  std::string spec() const;  // pool/name[@snap]

  ImageInfo info();
  std::vector<SnapshotInfo> snapshots();
  std::optional<SnapshotInfo> find_snapshot(const std::string& name);
  SnapshotInfo create_snapshot(const std::string& name);
  void remove_snapshot(const std::string& name);
  void remove_snapshot(const SnapshotInfo& snap);  // by id; also works for trashed snapshots
  // Points the handle at a snapshot (reads, size and diffs then refer to it); empty: the head.
  void set_snapshot(const std::string& name);
  void resize(uint64_t size);

  // Calls `sink` for every extent in [offset, offset+length) that changed between `from_snap` and
  // the snapshot the handle is set to. `from_snap` empty: every allocated extent. Extents arrive in
  // ascending order per object, unmerged. Only [0, size at the end point) is reported.
  // librbd asserts (aborting the process) on some inputs; these never reach it: an empty range
  // reports nothing, and a 0-byte `from_snap` is diffed as "every allocated extent" (the same
  // answer, since nothing existed in it).
  void changed_extents(const std::string& from_snap, uint64_t offset, uint64_t length, bool whole_object,
                       const std::function<void(const ChangedExtent&)>& sink);

  // Exact changed extents like changed_extents(..., whole_object=false), found fast: when the image
  // has fast-diff, librbd is first asked for changed objects (object maps only, no per-object I/O),
  // and only those objects are then diffed exactly. Without fast-diff (or with an invalid object map,
  // where librbd falls back by itself) this costs one exact pass. The range is walked in windows of
  // `window_objects` objects, so the list of changed objects held at once stays bounded whatever
  // the image size (issue 11: memory must not grow with the image).
  struct ExactDiffStats {
    uint64_t refined = 0;      // objects diffed exactly
    uint64_t peak_listed = 0;  // most changed objects held at once
  };
  static constexpr uint64_t kDiffWindowObjects = 4096;
  ExactDiffStats changed_extents_exact(const std::string& from_snap, uint64_t offset, uint64_t length,
                                       const std::function<void(const ChangedExtent&)>& sink,
                                       uint64_t window_objects = kDiffWindowObjects);

  // Synchronous read; returns bytes read (short past the end).
  size_t read(uint64_t offset, size_t length, char* out);
  // Synchronous write (used by tests and tools, not by the backup path).
  void write(uint64_t offset, std::string_view data);

  librbd::Image& handle() { return *image_; }

 private:
  Image(librados::IoCtx io, std::string pool, std::string name, std::string snap);
  // The base to hand librbd for a diff from `from_snap`: "" when that snapshot is 0 bytes.
  std::string diff_base(const std::string& from_snap);
  // diff_iterate2 itself; callers have applied the guards above.
  void diff(const std::string& from_snap, uint64_t offset, uint64_t length, bool whole_object,
            const std::function<void(const ChangedExtent&)>& sink);

  librados::IoCtx io_;
  std::unique_ptr<librbd::Image> image_;
  std::string pool_, name_, snap_;
};

// Reads with a bounded number of aio_read2 calls in flight, delivering results in submission
// order. Memory stays bounded by max_in_flight * read size whatever the image size.
class AsyncReader {
 public:
  // Called once per read, in submission order; `data` is valid only during the call and may be
  // shorter than requested past the end of the image.
  using Deliver = std::function<void(uint64_t offset, uint64_t tag, std::string_view data)>;

  AsyncReader(Image& image, size_t max_in_flight, Deliver deliver);
  ~AsyncReader();  // waits for outstanding reads; never throws
  AsyncReader(const AsyncReader&) = delete;
  AsyncReader& operator=(const AsyncReader&) = delete;

  void submit(uint64_t offset, uint64_t length, uint64_t tag);
  void drain();

  size_t peak_in_flight() const { return peak_in_flight_; }
  uint64_t bytes_read() const { return bytes_read_; }

 private:
  struct Pending;
  void complete_front();

  Image& image_;
  size_t max_in_flight_;
  Deliver deliver_;
  std::deque<std::unique_ptr<Pending>> pending_;
  size_t peak_in_flight_ = 0;
  uint64_t bytes_read_ = 0;
};

}  // namespace rbdvault::rbd
