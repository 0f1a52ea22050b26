// The storage seam: every byte of a store's data area (pack files, revision manifests) is written,
// read, listed and removed through this interface, so a new backend is one new file (the local
// directory is the first; RADOS is next). The index (RocksDB), the locks and the operation log are
// host-local and not part of the data area.
//
// Names are relative paths made of [a-z0-9._-] and '/' ("data/0000002a.pack"); a backend may map
// '/' to directories. Data-area objects are immutable: written once, whole, then only read or
// removed. Every method reports failure by throwing StoreError: kNotFound for a missing object that
// must exist, kExists for a name already taken, kNoSpace when the backend is full, kIO when the
// backend failed (a retry may help), kCorrupt when what it holds is wrong (a retry will not help).
//
// Thread safety: an ObjectStore and its readers may be used from several threads at once; one sink
// belongs to one thread.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace rbdvault::store {

// An object opened for reading. Stays readable after the object is removed (until destroyed).
class ObjectReader {
 public:
  virtual ~ObjectReader() = default;
  // Reads exactly n bytes at `offset` into buf; false if the object ends first. Thread safe.
  [[nodiscard]] virtual bool read_at(uint64_t offset, char* buf, size_t n) const = 0;
  // Reads exactly head_n + n bytes at `offset`: the first head_n into head, the rest into buf (a
  // chunk's header and its payload, each where it is used, without a copy where the backend can
  // read into two buffers at once). False if the object ends first. Thread safe.
  [[nodiscard]] virtual bool read_split_at(uint64_t offset, char* head, size_t head_n, char* buf, size_t n) const;
  [[nodiscard]] virtual uint64_t size() const = 0;
};

// An object being written. Invisible to open, size and list until commit(); destroyed without a
// successful commit(), it leaves nothing under its name.
class ObjectSink {
 public:
  virtual ~ObjectSink() = default;
  virtual void append(std::string_view bytes) = 0;
  [[nodiscard]] virtual uint64_t size() const = 0;
  // Publishes the whole object atomically and durably: once it returns, the object survives a crash
  // of the process or the machine; a crash before it returns leaves no object under the name (at
  // most a leftover that remove_incomplete() deletes). Throws kExists, touching nothing, if the
  // name is taken: an existing object is never replaced.
  virtual void commit() = 0;
};

class ObjectStore {
 public:
  virtual ~ObjectStore() = default;

  [[nodiscard]] virtual std::unique_ptr<ObjectSink> create(const std::string& name) = 0;
  // Opens a committed object; kNotFound if there is none.
  [[nodiscard]] virtual std::unique_ptr<ObjectReader> open(const std::string& name) = 0;
  // The size of a committed object; nullopt if there is none.
  [[nodiscard]] virtual std::optional<uint64_t> size(const std::string& name) = 0;
  // The names of the committed objects that start with `prefix`, in byte order. `prefix` ends at a
  // '/' or within the last path component ("data/", "manifests/0000").
  [[nodiscard]] virtual std::vector<std::string> list(const std::string& prefix) = 0;
  // Removes an object durably; a missing object is not an error.
  virtual void remove(const std::string& name) = 0;
  // Deletes what sinks under `prefix` left when their process died before commit. Only a writer
  // (who holds the store's writer lock, so no sink of its own is open) may call it.
  virtual void remove_incomplete(const std::string& prefix) = 0;

  // Backends shared between hosts (RADOS). A writer calls begin_writing once, holding the local
  // writer lock of `cache_dir` (the directory of the index), before it changes anything: such a
  // backend takes its own writer lock there (kLocked while another host holds it) and from then
  // on refuses to commit once it no longer holds it. The local directory needs nothing.
  virtual void begin_writing(const std::string& holder, const std::filesystem::path& cache_dir) {
    (void)holder, (void)cache_dir;
  }
  // Backends whose marker is an object of their own (RADOS, where the pool's marker is the
  // authority): replaces the marker's text `from` with `to` in one atomic step, only if the marker
  // still is `from` (else StoreError kLocked: another host changed it). Only a writer, after
  // begin_writing. Returns false where there is no such object (the local directory, whose marker
  // is the directory's own file).
  [[nodiscard]] virtual bool replace_marker(const std::string& from, const std::string& to) {
    (void)from, (void)to;
    return false;
  }
  // A token that differs between any two objects ever committed under `name` (one removed and
  // another created under its name later), so that a host-local cache may keep what it read from an
  // object whose identity has not changed (rados_cache.h). nullopt: the backend has none (the local
  // directory, whose index is not a cache), or no committed object has the name.
  [[nodiscard]] virtual std::optional<std::string> identity(const std::string& name) {
    (void)name;
    return std::nullopt;
  }
  // Held while it lives (see lease_readers).
  class Lease {
   public:
    virtual ~Lease() = default;
  };
  // Backends shared between hosts (RADOS): the cross-host form of DIR/readers.lock. Shared
  // (exclusive == false), held by every read-only open for its whole life: no data-area object is
  // removed under it. Exclusive, held by whoever removes objects readers may be reading (gc).
  // Either is refused (kLocked, naming the holders) at once when the other is held. `cache_dir`
  // (the index directory; empty: none) lets a shared lease refuse an index that may name objects
  // removed before the lease was taken, and lets an exclusive one record that its own index knows
  // of the removals. Once the lease could not be renewed, reads (and removals) are refused
  // (kLocked) rather than done without it. The local directory needs nothing (nullptr).
  [[nodiscard]] virtual std::unique_ptr<Lease> lease_readers(const std::string& holder, bool exclusive,
                                                             const std::filesystem::path& cache_dir) {
    (void)holder, (void)exclusive, (void)cache_dir;
    return nullptr;
  }
  // How messages name this data area when it is not the store directory: "rados:POOL[/NS]" for a
  // pool; empty for the local directory.
  [[nodiscard]] virtual std::string display_name() const { return {}; }
  // The largest pack a writer may build in this backend (a bound on object size).
  [[nodiscard]] virtual uint64_t pack_target_cap() const { return UINT64_MAX; }

  // Conveniences built on the above.
  void put(const std::string& name, std::string_view bytes);
  // The whole object, refused (kCorrupt) if larger than max_bytes: lengths from disk are bounded.
  [[nodiscard]] std::string read_all(const std::string& name, uint64_t max_bytes);
};

}  // namespace rbdvault::store
