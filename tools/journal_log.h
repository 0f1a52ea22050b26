// The stderr logger. Under systemd, stderr is a stream into the journal, which files every line
// as "info" unless the line starts with an sd-daemon priority prefix "<N>" (sd-daemon(3)); so when
// stderr is that stream, each line gets its level's prefix and `journalctl -p err` finds errors.
#pragma once

#include <spdlog/logger.h>

#include <memory>
#include <string>

namespace rbdvault::tools {

// True when stderr is the stream systemd connected to the journal: $JOURNAL_STREAM names its
// device and inode ("DEV:INODE"). Comparing them, not just the variable's presence, keeps a child
// whose stderr was redirected elsewhere (a file, a pipe, a terminal) from writing prefixes there.
[[nodiscard]] bool stderr_is_journal();

// A registered logger `name` on stderr: prefixed lines for the journal, otherwise colours on a
// terminal as before. spdlog::set_pattern() still decides the rest of the line.
[[nodiscard]] std::shared_ptr<spdlog::logger> make_stderr_logger(const std::string& name);

}  // namespace rbdvault::tools
