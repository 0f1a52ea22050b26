// Helpers store.cc shares with the other files that open a store's index themselves (rebuild.cc).
// Not part of the store's interface.
#pragma once

#include <filesystem>
#include <string>

#include "store/error.h"

namespace rbdvault::store {

inline constexpr const char* kMarkerFileName = "rbdvault.store";
// Throws kInvalid when `dir` exists and is not a directory (a file, a device): "does not exist" or
// "not empty" would send the operator looking in the wrong place.
void require_directory_or_absent(const std::filesystem::path& dir);
// The marker file's text (bounded); kInvalid if the directory has none.
[[nodiscard]] std::string read_marker_text(const std::filesystem::path& dir);
// The one-line error every command but `upgrade` gives for a format 1 store (kInvalid).
[[nodiscard]] StoreError format_1_error(const std::filesystem::path& dir);
// Replaces the marker atomically and durably (temporary file, fsync, rename, fsync of the directory).
// The marker's text with its first line saying the current format; the other lines (oplog_*) kept.
[[nodiscard]] std::string marker_with_current_version(const std::string& text);
void write_marker_durably(const std::filesystem::path& dir, const std::string& text);
// Any small file of the store's directory the same way (PATH.tmp, fsync, rename, fsync of the directory).
void write_file_durably(const std::filesystem::path& path, const std::string& content);

}  // namespace rbdvault::store
