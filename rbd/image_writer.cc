#include "rbd/image_writer.h"

#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstring>
#include <rbd/librbd.hpp>

#include "rbd/cluster.h"
#include "rbd/error.h"
#include "rbd/new_image_options.h"

namespace rbdvault::rbd {
namespace {

// The id of image `name` (format 2: what its handle and its data objects are named by).
std::string image_id(librados::IoCtx& io, const std::string& name) {
  librbd::RBD rbd;
  librbd::Image image;
  check(rbd.open_read_only(io, image, name.c_str(), nullptr), "open " + name + " to check it");
  std::string id;
  check(image.get_id(&id), "read the id of " + name);
  return id;
}

// The id of image `name`, or empty if there is none of that name.
std::string image_id_or_empty(librados::IoCtx& io, const std::string& name) {
  try {
    return image_id(io, name);
  } catch (const CephError& e) {
    if (e.code() == -ENOENT) return {};
    throw;
  }
}

}  // namespace

struct ImageWriter::Pending {
  uint64_t offset = 0;
  ceph::bufferlist bl;
  librbd::RBD::AioCompletion* completion = nullptr;
  ~Pending() {
    if (completion) completion->release();
  }
};

ImageWriter::ImageWriter(Cluster& cluster, const std::string& pool, const std::string& name,
                         const NewImageOptions& options)
    : cluster_(cluster), pool_(pool), name_(name), max_in_flight_(options.max_in_flight ? options.max_in_flight : 1) {
  librados::IoCtx io = cluster.open_pool(pool);
  librbd::RBD rbd;
  librbd::ImageOptions opts;
  set_new_image_options(opts, options);
  int r = rbd.create4(io, name.c_str(), options.size, opts);
  if (r == -EEXIST) throw CephError("image " + pool + "/" + name + " already exists; refusing to overwrite it", r);
  check(r, "create image " + pool + "/" + name);
  try {
    image_ = std::make_unique<Image>(Image::open(cluster, pool, name));
  } catch (...) {
    rbd.remove(io, name.c_str());
    throw;
  }
}

ImageWriter::~ImageWriter() {
  for (auto& p : pending_) p->completion->wait_for_complete();
  pending_.clear();
  if (committed_) return;
  image_.reset();
  try {
    remove_image(cluster_, pool_, name_, true);
    spdlog::debug("removed incomplete image {}/{}", pool_, name_);  // the caller reports the failure
  } catch (const std::exception& e) {
    spdlog::error("could not remove incomplete image {}/{}: {}", pool_, name_, e.what());
  }
}

void ImageWriter::write(uint64_t offset, std::string_view data) { write(offset, std::vector<std::string_view>{data}); }

void ImageWriter::write(uint64_t offset, const std::vector<std::string_view>& pieces) {
  auto p = std::make_unique<Pending>();
  for (auto piece : pieces) p->bl.append(piece.data(), piece.size());
  const uint64_t len = p->bl.length();
  if (len == 0) return;  // keep librbd away from zero-length requests
  while (pending_.size() >= max_in_flight_) complete_front();
  flushed_ = false;
  p->offset = offset;
  p->completion = new librbd::RBD::AioCompletion(nullptr, nullptr);  // librbd's API: released via release()
  check(image_->handle().aio_write2(offset, len, p->bl, p->completion, 0),
        "write " + pool_ + "/" + name_ + " at " + std::to_string(offset));
  pending_.push_back(std::move(p));
  if (pending_.size() > peak_in_flight_) peak_in_flight_ = pending_.size();
}

void ImageWriter::complete_front() {
  std::unique_ptr<Pending> p = std::move(pending_.front());
  pending_.pop_front();
  p->completion->wait_for_complete();
  check(p->completion->get_return_value(), "write " + pool_ + "/" + name_ + " at " + std::to_string(p->offset));
  bytes_written_ += p->bl.length();
}

void ImageWriter::flush() {
  if (flushed_ && pending_.empty()) return;  // commit_as() after flush(): nothing new to flush
  while (!pending_.empty()) complete_front();
  check(image_->handle().flush(), "flush " + pool_ + "/" + name_);
  flushed_ = true;
}

void ImageWriter::commit() {
  flush();
  committed_ = true;
}

void ImageWriter::commit_as(const std::string& final_name, const std::function<void()>& after_close,
                            const std::function<void()>& before_rename) {
  flush();
  std::string id;
  check(image_->handle().get_id(&id), "read the id of " + pool_ + "/" + name_);
  // Closed first: the rename must not race this handle's own header watch and cache.
  check(image_->handle().close(), "close " + pool_ + "/" + name_);
  image_.reset();
  if (after_close) after_close();
  const std::string partial = name_;
  // Ours is gone (the other restore removed it): nothing is left here to remove.
  auto replaced = [&](const std::string& more) {
    committed_ = true;
    return CephError("image " + pool_ + "/" + partial + " was replaced by another restore to " + final_name +
                         " before it was renamed; nothing published" + more,
                     -EBUSY);
  };
  librados::IoCtx io = cluster_.open_pool(pool_);
  if (image_id_or_empty(io, partial) != id) throw replaced("");
  if (before_rename) before_rename();
  librbd::RBD rbd;
  const int r = rbd.rename(io, partial.c_str(), final_name.c_str());
  if (r == -EEXIST)
    throw CephError("image " + pool_ + "/" + final_name + " already exists; refusing to overwrite it", r);
  check(r, "rename image " + pool_ + "/" + partial + " to " + final_name);
  name_ = final_name;
  committed_ = true;  // under the final name now: never removed from here on
  std::string now;
  try {
    now = image_id(io, final_name);
  } catch (const CephError& e) {
    throw CephError("image " + pool_ + "/" + final_name + " was renamed into place but could not be checked (" +
                        e.what() + "); check it with rbd info, or remove it and restore again",
                    e.code());
  }
  if (now != id) {
    // Another restore's image, taken in the gap between the check and the rename: back to its name,
    // where that restore finds it.
    const int back = rbd.rename(io, final_name.c_str(), partial.c_str());
    throw replaced(back < 0 ? std::string(" (and ") + final_name + " could not be renamed back: " +
                                  std::strerror(-back) + "; remove it)"
                            : std::string());
  }
}

void set_new_image_options(librbd::ImageOptions& opts, const NewImageOptions& options) {
  if (options.order > 0) check(opts.set(RBD_IMAGE_OPTION_ORDER, uint64_t(options.order)), "set image order");
  constexpr uint64_t kRestorable = RBD_FEATURE_LAYERING | RBD_FEATURE_EXCLUSIVE_LOCK | RBD_FEATURE_OBJECT_MAP |
                                   RBD_FEATURE_FAST_DIFF | RBD_FEATURE_DEEP_FLATTEN;
  if (options.features != 0) {
    uint64_t features = options.features & kRestorable;
    if (features == 0) features = RBD_FEATURE_LAYERING;
    check(opts.set(RBD_IMAGE_OPTION_FEATURES, features), "set image features");
  }
}

bool image_exists(Cluster& cluster, const std::string& pool, const std::string& name) {
  librados::IoCtx io = cluster.open_pool(pool);
  librbd::RBD rbd;
  librbd::Image probe;
  const int r = rbd.open_read_only(io, probe, name.c_str(), nullptr);
  if (r == -ENOENT) return false;
  check(r, "open image " + pool + "/" + name);
  probe.close();
  return true;
}

void remove_image(Cluster& cluster, const std::string& pool, const std::string& name, bool missing_ok) {
  librados::IoCtx io = cluster.open_pool(pool);
  librbd::RBD rbd;
  int r = rbd.remove(io, name.c_str());
  if (r == -ENOENT && missing_ok) return;
  check(r, "remove image " + pool + "/" + name);
}

}  // namespace rbdvault::rbd
