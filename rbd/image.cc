#include "rbd/image.h"

#include <algorithm>
#include <cerrno>
#include <rbd/librbd.hpp>
#include <stdexcept>

#include "rbd/cluster.h"
#include "rbd/error.h"

namespace rbdvault::rbd {

ImageSpec ImageSpec::parse(const std::string& text) {
  ImageSpec spec;
  std::string rest = text;
  auto at = rest.find('@');
  if (at != std::string::npos) {
    spec.snap = rest.substr(at + 1);
    rest = rest.substr(0, at);
    if (spec.snap.empty()) throw std::invalid_argument("bad image spec '" + text + "': empty snapshot after '@'");
  }
  auto slash = rest.find('/');
  if (slash == std::string::npos) {
    spec.pool = "rbd";
    spec.image = rest;
  } else {
    spec.pool = rest.substr(0, slash);
    spec.image = rest.substr(slash + 1);
    if (spec.pool.empty() || spec.image.find('/') != std::string::npos)
      throw std::invalid_argument("bad image spec '" + text + "': expected POOL/IMAGE[@SNAP]");
  }
  if (spec.image.empty()) throw std::invalid_argument("bad image spec '" + text + "': no image name");
  return spec;
}

std::string ImageSpec::str() const { return pool + "/" + image + (snap.empty() ? "" : "@" + snap); }

Image::Image(librados::IoCtx io, std::string pool, std::string name, std::string snap)
    : io_(std::move(io)),
      image_(std::make_unique<librbd::Image>()),
      pool_(std::move(pool)),
      name_(std::move(name)),
      snap_(std::move(snap)) {}

Image::Image(Image&&) noexcept = default;
Image& Image::operator=(Image&&) noexcept = default;

Image::~Image() {
  if (image_) image_->close();
}

Image Image::open(Cluster& cluster, const std::string& pool, const std::string& name, const std::string& snap,
                  bool read_only) {
  Image img(cluster.open_pool(pool), pool, name, snap);
  librbd::RBD rbd;
  const char* s = snap.empty() ? nullptr : snap.c_str();
  int r = read_only ? rbd.open_read_only(img.io_, *img.image_, name.c_str(), s)
                    : rbd.open(img.io_, *img.image_, name.c_str(), s);
  if (r == -ENOENT) {
    // Tell "no such image" from "no such snapshot": operators act differently on each.
    if (s != nullptr) {
      librbd::Image probe;
      if (rbd.open_read_only(img.io_, probe, name.c_str(), nullptr) == 0) {
        probe.close();
        throw CephError("snapshot " + pool + "/" + name + "@" + snap + " does not exist", r);
      }
    }
    throw CephError("image " + pool + "/" + name + " does not exist", r);
  }
  check(r, "open image " + pool + "/" + name + (s ? "@" + snap : ""));
  return img;
}

std::string Image::spec() const { return pool_ + "/" + name_ + (snap_.empty() ? "" : "@" + snap_); }

ImageInfo Image::info() {
  ImageInfo info;
  check(image_->get_id(&info.id), "get id of " + spec());
  check(image_->size(&info.size), "get size of " + spec());
  check(image_->features(&info.features), "get features of " + spec());
  check(image_->get_flags(&info.flags), "get flags of " + spec());
  librbd::image_info_t st{};
  check(image_->stat(st, sizeof(st)), "stat " + spec());
  info.object_size = st.obj_size;
  info.order = st.order;
  return info;
}

std::vector<SnapshotInfo> Image::snapshots() {
  std::vector<librbd::snap_info_t> snaps;
  check(image_->snap_list(snaps), "list snapshots of " + spec());
  std::vector<SnapshotInfo> out;
  out.reserve(snaps.size());
  for (auto& s : snaps) {
    SnapshotInfo info{s.id, s.name, s.size, false, {}};
    librbd::snap_namespace_type_t ns{};
    check(image_->snap_get_namespace_type(s.id, &ns), "get namespace of snapshot " + spec() + "@" + s.name);
    if (ns == RBD_SNAP_NAMESPACE_TYPE_TRASH) {
      info.in_trash = true;
      check(image_->snap_get_trash_namespace(s.id, &info.original_name),
            "get trashed snapshot " + spec() + "@" + s.name);
    }
    out.push_back(std::move(info));
  }
  return out;
}

std::optional<SnapshotInfo> Image::find_snapshot(const std::string& name) {
  for (auto& s : snapshots())
    if (s.name == name && !s.in_trash) return s;
  return std::nullopt;
}

SnapshotInfo Image::create_snapshot(const std::string& name) {
  check(image_->snap_create(name.c_str()), "create snapshot " + pool_ + "/" + name_ + "@" + name);
  auto s = find_snapshot(name);
  if (!s) throw CephError("snapshot " + pool_ + "/" + name_ + "@" + name + " vanished after creation", -ENOENT);
  return *s;
}

void Image::remove_snapshot(const std::string& name) {
  check(image_->snap_remove(name.c_str()), "remove snapshot " + pool_ + "/" + name_ + "@" + name);
}

void Image::remove_snapshot(const SnapshotInfo& snap) {
  check(image_->snap_remove_by_id(snap.id), "remove snapshot " + pool_ + "/" + name_ + "@" + snap.name);
}

void Image::set_snapshot(const std::string& name) {
  int r = image_->snap_set(name.empty() ? nullptr : name.c_str());
  if (r == -ENOENT) throw CephError("snapshot " + pool_ + "/" + name_ + "@" + name + " does not exist", r);
  check(r, "set snapshot " + pool_ + "/" + name_ + "@" + name);
  snap_ = name;
}

void Image::resize(uint64_t size) { check(image_->resize(size), "resize " + spec()); }

namespace {
struct DiffContext {
  const std::function<void(const ChangedExtent&)>* sink;
  std::exception_ptr error;
};

int diff_callback(uint64_t offset, size_t length, int exists, void* arg) {
  auto* ctx = static_cast<DiffContext*>(arg);
  try {
    (*ctx->sink)(ChangedExtent{offset, length, exists != 0});
    return 0;
  } catch (...) {
    // A negative return aborts diff_iterate2; the exception is rethrown by the caller.
    ctx->error = std::current_exception();
    return -ECANCELED;
  }
}
}  // namespace

std::string Image::diff_base(const std::string& from_snap) {
  if (from_snap.empty()) return from_snap;
  std::vector<librbd::snap_info_t> snaps;
  check(image_->snap_list(snaps), "list snapshots of " + spec());
  for (const auto& s : snaps)
    if (s.name == from_snap && s.size == 0) return "";  // librbd's object-map diff asserts on it
  return from_snap;  // a missing snapshot: diff_iterate2 reports it (-ENOENT) below
}

void Image::diff(const std::string& from_snap, uint64_t offset, uint64_t length, bool whole_object,
                 const std::function<void(const ChangedExtent&)>& sink) {
  DiffContext ctx{&sink, nullptr};
  int r = image_->diff_iterate2(from_snap.empty() ? nullptr : from_snap.c_str(), offset, length,
                                /*include_parent=*/true, whole_object, diff_callback, &ctx);
  if (ctx.error) std::rethrow_exception(ctx.error);
  if (r == -ENOENT && !from_snap.empty())
    throw CephError("diff of " + spec() + ": base snapshot " + from_snap + " does not exist", r);
  check(r, "diff " + spec() + (from_snap.empty() ? "" : " from " + from_snap));
}

void Image::changed_extents(const std::string& from_snap, uint64_t offset, uint64_t length, bool whole_object,
                            const std::function<void(const ChangedExtent&)>& sink) {
  // An empty range (a 0-byte image) has nothing to report, and librbd's object-map diff asserts,
  // aborting the whole process (every parallel backup with it), when asked for one.
  if (length == 0) return;
  diff(diff_base(from_snap), offset, length, whole_object, sink);
}

Image::ExactDiffStats Image::changed_extents_exact(const std::string& from_snap, uint64_t offset, uint64_t length,
                                                  const std::function<void(const ChangedExtent&)>& sink,
                                                  uint64_t window_objects) {
  ExactDiffStats stats;
  if (length == 0) return stats;  // see changed_extents
  const std::string base = diff_base(from_snap);
  uint64_t features = 0;
  check(image_->features(&features), "get features of " + spec());
  if ((features & RBD_FEATURE_FAST_DIFF) == 0) {
    diff(base, offset, length, false, sink);
    return stats;
  }
  // Changed objects first, a window at a time; each window's objects are then diffed exactly, in
  // order, so extents still arrive in ascending order.
  const uint64_t window = std::max<uint64_t>(1, window_objects) * info().object_size;
  std::vector<ChangedExtent> objects;
  for (uint64_t at = offset, end = offset + length; at < end;) {
    const uint64_t window_end = std::min(end, (at / window + 1) * window);  // object-aligned windows
    objects.clear();
    diff(base, at, window_end - at, true, [&](const ChangedExtent& e) { objects.push_back(e); });
    stats.peak_listed = std::max<uint64_t>(stats.peak_listed, objects.size());
    for (const ChangedExtent& o : objects) {
      if (!o.exists) {
        sink(o);  // the whole object is gone: zeros, nothing to read
        continue;
      }
      ++stats.refined;
      if (o.length > 0) diff(base, o.offset, o.length, false, sink);
    }
    at = window_end;
  }
  return stats;
}

size_t Image::read(uint64_t offset, size_t length, char* out) {
  if (length == 0) return 0;  // nothing to read; keep librbd away from zero-length requests
  ceph::bufferlist bl;
  ssize_t r = image_->read(offset, length, bl);
  check(r, "read " + spec() + " at " + std::to_string(offset));
  bl.begin().copy(bl.length(), out);
  return bl.length();
}

void Image::write(uint64_t offset, std::string_view data) {
  if (data.empty()) return;
  ceph::bufferlist bl;
  bl.append(data.data(), data.size());
  check(image_->write(offset, data.size(), bl), "write " + spec() + " at " + std::to_string(offset));
}

// ---------------------------------------------------------------------------------------------

struct AsyncReader::Pending {
  uint64_t offset = 0, length = 0, tag = 0;
  ceph::bufferlist bl;
  librbd::RBD::AioCompletion* completion = nullptr;
  ~Pending() {
    if (completion) completion->release();
  }
};

AsyncReader::AsyncReader(Image& image, size_t max_in_flight, Deliver deliver)
    : image_(image), max_in_flight_(max_in_flight == 0 ? 1 : max_in_flight), deliver_(std::move(deliver)) {}

AsyncReader::~AsyncReader() {
  for (auto& p : pending_) p->completion->wait_for_complete();
}

void AsyncReader::submit(uint64_t offset, uint64_t length, uint64_t tag) {
  if (length == 0) throw std::logic_error("AsyncReader: zero-length read of " + image_.spec());
  while (pending_.size() >= max_in_flight_) complete_front();
  auto p = std::make_unique<Pending>();
  p->offset = offset;
  p->length = length;
  p->tag = tag;
  p->completion = new librbd::RBD::AioCompletion(nullptr, nullptr);  // librbd's API: released via release()
  int r = image_.handle().aio_read2(offset, length, p->bl, p->completion,
                                    LIBRADOS_OP_FLAG_FADVISE_SEQUENTIAL | LIBRADOS_OP_FLAG_FADVISE_NOCACHE);
  check(r, "read " + image_.spec() + " at " + std::to_string(offset));
  pending_.push_back(std::move(p));
  if (pending_.size() > peak_in_flight_) peak_in_flight_ = pending_.size();
}

void AsyncReader::complete_front() {
  std::unique_ptr<Pending> p = std::move(pending_.front());
  pending_.pop_front();
  p->completion->wait_for_complete();
  ssize_t r = p->completion->get_return_value();
  check(r, "read " + image_.spec() + " at " + std::to_string(p->offset));
  // Callers ask only for bytes inside the image; anything short would be stored as zeros.
  if (p->bl.length() != p->length)
    throw CephError("short read of " + image_.spec() + " at " + std::to_string(p->offset) + ": " +
                        std::to_string(p->bl.length()) + " of " + std::to_string(p->length) + " bytes",
                    -EIO);
  bytes_read_ += p->bl.length();
  const char* data = p->bl.length() ? p->bl.c_str() : "";
  deliver_(p->offset, p->tag, std::string_view(data, p->bl.length()));
}

void AsyncReader::drain() {
  while (!pending_.empty()) complete_front();
}

}  // namespace rbdvault::rbd
