#include "agent/status.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <sstream>
#include <stdexcept>

#include "store/gc.h"
#include "store/oplog.h"
#include "store/store.h"

namespace rbdvault::agent {
namespace {

std::string this_host() {
  char buf[256] = {};
  ::gethostname(buf, sizeof(buf) - 1);
  return buf;
}

bool process_alive(int64_t pid) {
  if (pid <= 0) return false;
  return ::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM;
}

// Prometheus label values escape backslash, quote and newline.
std::string label(const std::string& v) {
  std::string out;
  for (char ch : v) {
    if (ch == '\\' || ch == '"')
      out += '\\', out += ch;
    else if (ch == '\n')
      out += "\\n";
    else
      out += ch;
  }
  return out;
}

// The state of one logged fsck: its error starts with the state (the batch step) or is "exit
// status N" (the fsck command, whose exit status is the Nagios state).
int logged_fsck_state(const store::OpRecord& op) {
  if (op.result == "ok") return 0;
  for (int st = 1; st <= 3; ++st) {
    const std::string name = st == 1 ? "WARNING" : st == 2 ? "CRITICAL" : "UNKNOWN";
    if (op.error.rfind(name, 0) == 0 || op.error == "exit status " + std::to_string(st)) return st;
  }
  return 3;  // failed otherwise (could not open the store, bad revision...): unknown
}

// Applies the newest fsck of each image's newest revision (a check of an older revision, e.g. an
// operator looking back, says nothing about the current one).
void apply_fsck_results(const std::vector<store::OpRecord>& ops, const std::map<std::string, uint64_t>& newest,
                        std::map<std::string, ImageStatus>& by_name) {
  std::map<std::string, int64_t> when;
  for (const store::OpRecord& op : ops) {
    if (op.op != "fsck" || op.end_ms == 0) continue;
    const size_t at = op.image.find('@');
    const std::string image = op.image.substr(0, at);
    const auto it = newest.find(image);
    if (it == newest.end()) continue;
    if (at != std::string::npos && op.image.substr(at + 1) != std::to_string(it->second)) continue;
    if (when.count(image) && when[image] > op.start_ms) continue;
    when[image] = op.start_ms;
    ImageStatus& s = by_name[image];
    s.fsck_state = logged_fsck_state(op);
    s.fsck_error = s.fsck_state == 0 ? "" : op.error;
  }
}

}  // namespace

std::vector<ImageStatus> collect_status(store::ReadOnlyStore& store) {
  std::map<std::string, ImageStatus> by_name;
  std::map<std::string, uint64_t> newest;  // image -> its newest revision's id
  for (const store::ImageRecord& img : store.images()) {
    ImageStatus s;
    s.image = img.pool + "/" + img.name;
    for (const store::RevisionRecord& r : store.revisions(img.key)) {
      ++s.revisions;
      s.stored_bytes += r.bytes_stored;
      if (r.created >= s.last_success) {
        s.last_success = r.created;
        newest[s.image] = r.id;
        s.size = r.size;
        s.verify_failed = (r.flags & store::kRevisionVerifyFailed) != 0;
        s.consistency = store::consistency_name(r.flags);
        s.last_bytes_read = r.bytes_read;
        s.last_bytes_stored = r.bytes_stored;
        s.group = r.group;
        s.group_run = r.group_run;
        s.group_gap_us = r.group_gap_us;
      }
    }
    by_name[s.image] = s;
  }
  // The operation log says what happened since: the newest backup attempt per image, and which
  // are running now (a start line without an end line, from a live process on this host).
  const std::string host = this_host();
  std::map<std::string, int64_t> ok_start;  // per image: start of the newest successful backup
  const std::vector<store::OpRecord> ops = store::OpLog(store.dir()).read();
  apply_fsck_results(ops, newest, by_name);
  for (const store::OpRecord& op : ops) {
    // A `backup --group NAME` logs one line as "group NAME": not an image (its members' revisions
    // carry their own status).
    if (op.op != "backup" || op.image.empty() || op.image.find('/') == std::string::npos) continue;
    ImageStatus& s = by_name[op.image];
    s.image = op.image;
    if (op.end_ms == 0) {
      if (op.host == host && process_alive(op.pid)) {
        s.running = true;
        s.running_since = op.start_ms / 1000;
      }
      continue;
    }
    if (op.result == "cancelled") continue;  // stopped on request: says nothing about the image
    if (op.result == "ok" && op.start_ms / 1000 >= ok_start[op.image]) {
      ok_start[op.image] = op.start_ms / 1000;
      s.last_duration_seconds = static_cast<double>(op.end_ms - op.start_ms) / 1000.0;
    }
    if (op.start_ms / 1000 >= s.last_attempt) {
      s.last_attempt = op.start_ms / 1000;
      s.last_result = op.result;
      s.last_error = op.result == "ok" ? "" : op.error;
    }
  }
  std::vector<ImageStatus> out;
  for (auto& [name, s] : by_name) out.push_back(std::move(s));
  return out;
}

CheckResult check_status(const std::vector<ImageStatus>& images, int64_t now, int64_t max_age, int64_t warn_age) {
  size_t failed = 0, stale = 0, warn = 0;
  int64_t oldest = 0;
  std::vector<std::string> problems;
  for (const ImageStatus& s : images) {
    const int64_t age = s.last_success ? now - s.last_success : -1;
    oldest = std::max(oldest, age < 0 ? 0 : age);
    if (s.last_result == "failed") {
      ++failed;
      problems.push_back(s.image + " failed: " + s.last_error);
    } else if (s.verify_failed) {
      ++failed;
      problems.push_back(s.image + ": the newest revision differs from its snapshot");
    } else if (s.fsck_state == 2) {
      ++failed;
      problems.push_back(s.image + ": fsck of the newest revision: " + s.fsck_error);
    } else if (age < 0 || age > max_age) {
      ++stale;
      problems.push_back(s.image +
                         (age < 0 ? " has no backup" : " last backed up " + std::to_string(age / 3600) + "h ago"));
    } else if (warn_age > 0 && age > warn_age) {
      ++warn;
      problems.push_back(s.image + " last backed up " + std::to_string(age / 3600) + "h ago");
    }
    if (s.fsck_state == 1 || s.fsck_state == 3) {
      ++warn;
      problems.push_back(s.image + ": fsck of the newest revision: " + s.fsck_error);
    }
  }
  CheckResult r;
  r.code = failed || stale ? 2 : warn ? 1 : 0;
  static const char* kNames[] = {"OK", "WARNING", "CRITICAL", "UNKNOWN"};
  std::ostringstream line;
  line << "RBDVAULT " << kNames[r.code] << " - ";
  if (images.empty()) {
    r.code = 3;
    line.str("");
    line << "RBDVAULT UNKNOWN - the store has no images";
  } else if (problems.empty()) {
    line << images.size() << " images backed up within " << max_age / 3600 << "h";
  } else {
    line << failed << " failed, " << stale << " too old, " << warn << " aging of " << images.size() << " images: ";
    for (size_t i = 0; i < problems.size() && i < 3; ++i) line << (i ? "; " : "") << problems[i];
    if (problems.size() > 3) line << "; and " << problems.size() - 3 << " more";
  }
  line << " | images=" << images.size() << " failed=" << failed << " stale=" << stale << " warning=" << warn
       << " oldest_age=" << oldest << "s;" << (warn_age > 0 ? std::to_string(warn_age) : "") << ";" << max_age;
  r.line = line.str();
  return r;
}

std::string prometheus_metrics(const std::vector<ImageStatus>& images, int64_t now) {
  std::ostringstream o;
  auto family = [&](const char* name, const char* help, auto value) {
    o << "# HELP " << name << " " << help << "\n# TYPE " << name << " gauge\n";
    for (const ImageStatus& s : images) o << name << "{image=\"" << label(s.image) << "\"} " << value(s) << "\n";
  };
  family("rbdvault_last_success_timestamp_seconds", "Creation time of the newest revision (0: none).",
         [](const ImageStatus& s) { return s.last_success; });
  family("rbdvault_last_backup_ok", "1 if the newest backup attempt succeeded, 0 if it failed.",
         [](const ImageStatus& s) { return s.last_result == "failed" ? 0 : 1; });
  family("rbdvault_revisions", "Revisions of the image in the store.",
         [](const ImageStatus& s) { return s.revisions; });
  family("rbdvault_image_size_bytes", "Size of the newest revision.", [](const ImageStatus& s) { return s.size; });
  family("rbdvault_stored_bytes", "Chunk bytes first stored by the image's revisions.",
         [](const ImageStatus& s) { return s.stored_bytes; });
  family("rbdvault_verify_failed", "1 if the newest revision differed from its snapshot when checked.",
         [](const ImageStatus& s) { return s.verify_failed ? 1 : 0; });
  family("rbdvault_application_consistent",
         "1 if the newest revision's snapshot was taken between successful hooks, 0 if crash-consistent.",
         [](const ImageStatus& s) { return s.consistency == "application" ? 1 : 0; });
  family("rbdvault_backup_running", "1 while a backup of the image runs.",
         [](const ImageStatus& s) { return s.running ? 1 : 0; });
  family("rbdvault_last_backup_read_bytes", "Bytes the newest revision's backup read from Ceph.",
         [](const ImageStatus& s) { return s.last_bytes_read; });
  family("rbdvault_last_backup_stored_bytes", "Chunk bytes the newest revision's backup newly stored.",
         [](const ImageStatus& s) { return s.last_bytes_stored; });
  family("rbdvault_last_backup_duration_seconds", "Wall time of the newest successful backup (0: none logged).",
         [](const ImageStatus& s) { return s.last_duration_seconds; });
  // Only images whose newest revision was checked (fsck = yes, or rbdvault fsck).
  bool checked = false;
  for (const ImageStatus& s : images)
    if (s.fsck_state >= 0) {
      if (!checked)
        o << "# HELP rbdvault_fsck_state Newest revision's fsck: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.\n"
             "# TYPE rbdvault_fsck_state gauge\n";
      checked = true;
      o << "rbdvault_fsck_state{image=\"" << label(s.image) << "\"} " << s.fsck_state << "\n";
    }
  // Only images in a consistency group, labelled with it (no family at all without groups).
  bool grouped = false;
  for (const ImageStatus& s : images)
    if (!s.group.empty()) {
      if (!grouped)
        o << "# HELP rbdvault_group_snapshot_gap_seconds Newest revision: from its group's first snapshot to the "
             "last.\n# TYPE rbdvault_group_snapshot_gap_seconds gauge\n";
      grouped = true;
      o << "rbdvault_group_snapshot_gap_seconds{image=\"" << label(s.image) << "\",group=\"" << label(s.group)
        << "\"} " << static_cast<double>(s.group_gap_us) / 1e6 << "\n";
    }
  size_t failed = 0;
  for (const ImageStatus& s : images) failed += s.last_result == "failed";
  o << "# HELP rbdvault_images_failed Images whose newest backup attempt failed.\n"
    << "# TYPE rbdvault_images_failed gauge\nrbdvault_images_failed " << failed << "\n"
    << "# HELP rbdvault_metrics_timestamp_seconds When this file was written.\n"
    << "# TYPE rbdvault_metrics_timestamp_seconds gauge\nrbdvault_metrics_timestamp_seconds " << now << "\n";
  return o.str();
}

std::string prometheus_store_metrics(store::Store& store) {
  std::ostringstream o;
  o << "# HELP rbdvault_store_pack_bytes Bytes of pack files (chunk data) in the store.\n"
    << "# TYPE rbdvault_store_pack_bytes gauge\nrbdvault_store_pack_bytes " << store::pack_bytes_on_disk(store) << "\n"
    << "# HELP rbdvault_store_index_bytes Bytes of the store's RocksDB index.\n"
    << "# TYPE rbdvault_store_index_bytes gauge\nrbdvault_store_index_bytes " << store::index_bytes_on_disk(store)
    << "\n";
  return o.str();
}

void write_file_atomically(const std::string& path, const std::string& content) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error("cannot write " + tmp + ": " + std::strerror(errno));
  size_t off = 0;
  while (off < content.size()) {
    ssize_t n = ::write(fd, content.data() + off, content.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      throw std::runtime_error("cannot write " + tmp + ": " + std::strerror(err));
    }
    off += static_cast<size_t>(n);
  }
  int err = ::fsync(fd) == 0 ? 0 : errno;
  if (::close(fd) != 0 && err == 0) err = errno;
  if (err != 0) {
    ::unlink(tmp.c_str());
    throw std::runtime_error("cannot write " + tmp + ": " + std::strerror(err));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw std::runtime_error("cannot rename " + tmp + " to " + path + ": " + std::strerror(err));
  }
}

}  // namespace rbdvault::agent
