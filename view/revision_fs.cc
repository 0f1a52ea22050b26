#define FUSE_USE_VERSION 314
#include "view/revision_fs.h"
#include "view/revision_fs_internal.h"

#include <fuse3/fuse.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <stdexcept>
#include <vector>

#include "store/error.h"
#include "store/store.h"
#include "view/blkid_probe.h"
#include "view/revision_bytes.h"
#include "view/store_view.h"

namespace rbdvault::view {

// A path of the tree, taken apart. Kinds below kRev are directories or the symlink.
struct Node {
  enum Kind { kRoot, kPool, kImage, kLatest, kRev, kPartsDir, kPart, kProbeDir, kProbe, kBad } kind = kBad;
  std::string pool, image;
  uint64_t rev = 0;
  int part = 0;
};

namespace {

constexpr std::string_view kPartsSuffix = ".parts";
// MOUNT/.rbdvault-probe/REV: every revision by id, for our own partition probes only (not listed).
// A probe runs while the kernel holds the image directory's lock (we are listing it, or looking
// up REV.parts in it), so the file libblkid opens must live in another directory: a lookup in the
// locked one would wait for ever (the kernel serialises lookup and readdir of one directory).
constexpr std::string_view kProbeDir = ".rbdvault-probe";

std::optional<uint64_t> parse_number(std::string_view s) {
  if (s.empty() || s.size() > 19 || (s.size() > 1 && s[0] == '0')) return std::nullopt;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  return v;
}

Node parse_path(std::string_view path) {
  std::vector<std::string> parts;
  size_t pos = 1;
  while (pos < path.size()) {
    const size_t slash = path.find('/', pos);
    parts.emplace_back(path.substr(pos, slash == std::string_view::npos ? std::string_view::npos : slash - pos));
    if (slash == std::string_view::npos) break;
    pos = slash + 1;
  }
  Node n;
  if (!parts.empty() && parts[0] == kProbeDir) {
    if (parts.size() == 1) n.kind = Node::kProbeDir;
    auto rev = parts.size() == 2 ? parse_number(parts[1]) : std::nullopt;
    if (rev) n.kind = Node::kProbe, n.rev = *rev;
    return n;
  }
  if (parts.size() >= 1) n.pool = parts[0];
  if (parts.size() >= 2) n.image = parts[1];
  switch (parts.size()) {
    case 0: n.kind = Node::kRoot; return n;
    case 1: n.kind = Node::kPool; return n;
    case 2: n.kind = Node::kImage; return n;
    default: break;
  }
  std::string_view leaf = parts[2];
  if (parts.size() == 3 && leaf == "latest") {
    n.kind = Node::kLatest;
    return n;
  }
  const bool parts_dir = leaf.size() > kPartsSuffix.size() && leaf.substr(leaf.size() - kPartsSuffix.size()) == kPartsSuffix;
  if (parts_dir) leaf.remove_suffix(kPartsSuffix.size());
  auto rev = parse_number(leaf);
  if (!rev) return n;
  n.rev = *rev;
  if (parts.size() == 3) {
    n.kind = parts_dir ? Node::kPartsDir : Node::kRev;
  } else if (parts.size() == 4 && parts_dir) {
    auto part = parse_number(parts[3]);
    if (part && *part > 0 && *part < INT_MAX) {
      n.kind = Node::kPart;
      n.part = static_cast<int>(*part);
    }
  }
  return n;
}

}  // namespace

class RevisionFs {
 public:
  explicit RevisionFs(const MountOptions& o)
      : view_(o.store_dir, o.only, o.ttl), cache_(o.cache_bytes), mountpoint_(o.mountpoint),
        check_digest_(o.check_digest) {}

  static RevisionFs& self() { return *static_cast<RevisionFs*>(fuse_get_context()->private_data); }

  // The revision a node names, from the current snapshot or (not there yet) a refreshed one.
  std::optional<RevisionBytes> revision(const Node& n) {
    for (bool refresh : {false, true}) {
      auto snap = view_.get(refresh);
      for (const auto& [key, revs] : snap->images) {
        if (n.kind != Node::kProbe && key != std::make_pair(n.pool, n.image)) continue;
        for (const auto& r : revs)
          if (r.id == n.rev) return RevisionBytes{snap->store, r, 0, r.size};
      }
    }
    return std::nullopt;
  }

  // Before a file of the revision is opened: its block map against its digest (StoreView).
  void check_block_map(const RevisionBytes& r) { view_.check_block_map(*r.store, r.rev, check_digest_); }

  // The bytes a file node reads: the revision, or one partition of it.
  std::optional<RevisionBytes> file(const Node& n) {
    auto r = revision(n);
    if (!r || n.kind == Node::kRev || n.kind == Node::kProbe) return r;
    for (const auto& p : partitions(*r))
      if (p.number == n.part && p.offset < r->length) {
        r->base = p.offset;
        r->length = std::min(p.size, r->length - p.offset);
        return r;
      }
    return std::nullopt;
  }

  // A revision's partitions, probed once through our own file of it (revisions never change).
  std::vector<Partition> partitions(const RevisionBytes& r) {
    {
      std::lock_guard<std::mutex> guard(parts_mu_);
      auto it = parts_.find(r.rev.id);
      if (it != parts_.end()) return it->second;
    }
    std::vector<Partition> found;
    const std::string path = mountpoint_ + "/" + std::string(kProbeDir) + "/" + std::to_string(r.rev.id);
    try {
      found = probe_partitions(path);  // reads come back to this process, on another loop thread
    } catch (const std::exception& e) {
      spdlog::warn("{}", e.what());
      return found;  // not cached: a passing read error should not hide the partitions for good
    }
    std::lock_guard<std::mutex> guard(parts_mu_);
    parts_[r.rev.id] = found;
    return found;
  }

  StoreView& view() { return view_; }
  BlockCache& cache() { return cache_; }

 private:
  StoreView view_;
  BlockCache cache_;
  const std::string mountpoint_;
  const bool check_digest_;
  std::mutex parts_mu_;
  std::map<uint64_t, std::vector<Partition>> parts_;
};

namespace {

void dir_stat(struct stat* st) {
  st->st_mode = S_IFDIR | 0555;
  st->st_nlink = 2;
}

void file_stat(struct stat* st, const RevisionBytes& r) {
  st->st_mode = S_IFREG | 0444;
  st->st_nlink = 1;
  st->st_size = static_cast<off_t>(r.length);
  st->st_blocks = static_cast<blkcnt_t>((r.length + 511) / 512);
  st->st_blksize = static_cast<blksize_t>(r.store->block_size());
  st->st_mtime = st->st_ctime = st->st_atime = r.rev.created;
}

// Runs a FUSE operation, turning an exception into an errno (and one log line) instead of a crash.
template <class F>
int guarded(const char* op, const char* path, F&& f) {
  try {
    return f();
  } catch (const store::StoreError& e) {
    spdlog::error("{} {}: {}", op, path ? path : "(open file)", e.what());
    return -EIO;
  } catch (const std::exception& e) {
    spdlog::error("{} {}: {}", op, path ? path : "(open file)", e.what());
    return -EIO;
  }
}

int fs_getattr(const char* path, struct stat* st, fuse_file_info* fi) {
  return guarded("getattr", path, [&] {
    std::memset(st, 0, sizeof *st);
    if (fi && fi->fh) {
      file_stat(st, *reinterpret_cast<RevisionBytes*>(fi->fh));
      return 0;
    }
    RevisionFs& fs = RevisionFs::self();
    const Node n = parse_path(path);
    switch (n.kind) {
      case Node::kRoot:
      case Node::kProbeDir: dir_stat(st); return 0;
      case Node::kBad: return -ENOENT;
      case Node::kPool: {
        auto snap = fs.view().get(true);
        for (const auto& [key, revs] : snap->images)
          if (key.first == n.pool) {
            dir_stat(st);
            return 0;
          }
        return -ENOENT;
      }
      case Node::kImage:
      case Node::kLatest: {
        auto snap = fs.view().get(true);
        auto* revs = snap->revisions(n.pool, n.image);
        if (!revs || revs->empty()) return -ENOENT;
        if (n.kind == Node::kImage) {
          dir_stat(st);
        } else {
          st->st_mode = S_IFLNK | 0777;
          st->st_nlink = 1;
          st->st_size = static_cast<off_t>(std::to_string(revs->back().id).size());
        }
        return 0;
      }
      case Node::kPartsDir: {
        auto r = fs.revision(n);
        if (!r || fs.partitions(*r).empty()) return -ENOENT;
        dir_stat(st);
        return 0;
      }
      case Node::kRev:
      case Node::kPart:
      case Node::kProbe: {
        auto r = fs.file(n);
        if (!r) return -ENOENT;
        file_stat(st, *r);
        return 0;
      }
    }
    return -ENOENT;
  });
}

int fs_readlink(const char* path, char* buf, size_t size) {
  return guarded("readlink", path, [&] {
    const Node n = parse_path(path);
    if (n.kind != Node::kLatest) return -EINVAL;
    auto* revs = RevisionFs::self().view().get(true)->revisions(n.pool, n.image);
    if (!revs || revs->empty()) return -ENOENT;
    const std::string target = std::to_string(revs->back().id);
    if (size == 0) return -EINVAL;
    std::strncpy(buf, target.c_str(), size - 1);
    buf[size - 1] = '\0';
    return 0;
  });
}

int fs_readdir(const char* path, void* buf, fuse_fill_dir_t fill, off_t, fuse_file_info*, fuse_readdir_flags) {
  return guarded("readdir", path, [&] {
    RevisionFs& fs = RevisionFs::self();
    const Node n = parse_path(path);
    auto add = [&](const std::string& name) { fill(buf, name.c_str(), nullptr, 0, static_cast<fuse_fill_dir_flags>(0)); };
    add(".");
    add("..");
    auto snap = fs.view().get(true);
    if (n.kind == Node::kRoot || n.kind == Node::kPool) {
      std::string last;
      bool any = false;
      for (const auto& [key, revs] : snap->images) {
        if (n.kind == Node::kRoot && key.first != last) add(key.first);
        if (n.kind == Node::kPool && key.first == n.pool) add(key.second), any = true;
        last = key.first;
      }
      return n.kind == Node::kPool && !any ? -ENOENT : 0;
    }
    if (n.kind == Node::kImage) {
      auto* revs = snap->revisions(n.pool, n.image);
      if (!revs || revs->empty()) return -ENOENT;
      for (const auto& r : *revs) {
        add(std::to_string(r.id));
        if (!fs.partitions(RevisionBytes{snap->store, r, 0, r.size}).empty()) add(std::to_string(r.id) + ".parts");
      }
      add("latest");
      return 0;
    }
    if (n.kind == Node::kPartsDir) {
      auto r = fs.revision(n);
      if (!r) return -ENOENT;
      for (const auto& p : fs.partitions(*r)) add(std::to_string(p.number));
      return 0;
    }
    return -ENOTDIR;
  });
}

int fs_open(const char* path, fuse_file_info* fi) {
  return guarded("open", path, [&] {
    if ((fi->flags & O_ACCMODE) != O_RDONLY) return -EROFS;
    auto r = RevisionFs::self().file(parse_path(path));
    if (!r) return -ENOENT;
    RevisionFs::self().check_block_map(*r);  // a damaged map fails the open (EIO), naming the revision
    fi->fh = reinterpret_cast<uint64_t>(new RevisionBytes(std::move(*r)));
    fi->keep_cache = 1;  // a revision never changes: what the kernel cached stays right
    return 0;
  });
}

int fs_release(const char*, fuse_file_info* fi) {
  delete reinterpret_cast<RevisionBytes*>(fi->fh);
  return 0;
}

int fs_read(const char* path, char* buf, size_t size, off_t off, fuse_file_info* fi) {
  return guarded("read", path, [&] {
    const auto& r = *reinterpret_cast<RevisionBytes*>(fi->fh);
    return static_cast<int>(read_at(r, RevisionFs::self().cache(), static_cast<uint64_t>(off), buf, size));
  });
}

off_t fs_lseek(const char* path, off_t off, int whence, fuse_file_info* fi) {
  return guarded("lseek", path, [&]() -> off_t {
    if (whence != SEEK_DATA && whence != SEEK_HOLE) return -EINVAL;
    if (off < 0) return -ENXIO;
    const auto& r = *reinterpret_cast<RevisionBytes*>(fi->fh);
    if (static_cast<uint64_t>(off) >= r.length) return -ENXIO;
    auto at = seek(r, static_cast<uint64_t>(off), whence == SEEK_DATA);
    return at ? static_cast<off_t>(*at) : -ENXIO;
  });
}

void* fs_init(fuse_conn_info*, fuse_config* cfg) {
  RevisionFs& fs = RevisionFs::self();
  // Entries and attributes expire after a short while so that new revisions show up; a revision's
  // own bytes never change, so the kernel may keep them cached (kernel_cache).
  cfg->entry_timeout = cfg->attr_timeout = 1.0;
  cfg->negative_timeout = 0;
  cfg->kernel_cache = 1;
  return &fs;
}

}  // namespace

fuse_operations revision_fs_operations() {
  fuse_operations ops{};
  ops.getattr = fs_getattr;
  ops.readlink = fs_readlink;
  ops.open = fs_open;
  ops.read = fs_read;
  ops.release = fs_release;
  ops.readdir = fs_readdir;
  ops.init = fs_init;
  ops.lseek = fs_lseek;
  return ops;
}


void RevisionFsDeleter::operator()(RevisionFs* fs) const { delete fs; }

std::unique_ptr<RevisionFs, RevisionFsDeleter> new_revision_fs(const MountOptions& options) {
  return std::unique_ptr<RevisionFs, RevisionFsDeleter>(new RevisionFs(options));
}

BlockCache::Stats cache_stats(RevisionFs& fs) { return fs.cache().stats(); }

}  // namespace rbdvault::view
