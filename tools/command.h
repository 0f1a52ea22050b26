// The command table of the CLI and what every command's handler shares: the parsed arguments,
// option groups, numeric options, store/revision helpers, the operation-log wrapper and JSON output.
// Each command group lives in its own file (cmd_*.cc, batch_commands.cc) and contributes entries.
#pragma once

#include <boost/program_options.hpp>
#include <cstdint>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "agent/error_class.h"
#include "agent/fsck_step.h"
#include "agent/numbers.h"
#include "rbd/cluster.h"
#include "rbd/image.h"
#include "store/rados_object_store.h"
#include "store/store.h"

namespace rbdvault::tools {

namespace po = boost::program_options;
using Json = nlohmann::ordered_json;  // keeps fields in the order written, as the docs list them
using agent::UsageError;

// Option groups a command takes besides its own options (-h/-v/-q are always there).
enum OptionGroup : unsigned {
  kStoreOption = 1,   // -s/--store DIR
  kCephOptions = 2,   // -c/--conf, --id, -k/--keyring, --connect-timeout, --op-timeout
  kFormatOption = 4,  // --format plain|json
};

struct Args {
  std::string command;
  std::string command_line;  // for the operation log
  std::vector<std::string> positional;
  po::variables_map vm;

  [[nodiscard]] std::string str(const char* name) const {
    return vm.count(name) ? vm[name].as<std::string>() : std::string();
  }
  [[nodiscard]] bool flag(const char* name) const { return vm.count(name) && vm[name].as<bool>(); }
  [[nodiscard]] bool json() const { return str("format") == "json"; }
  [[nodiscard]] bool quiet() const { return flag("quiet"); }
};

struct Command {
  std::string name;
  std::string usage;                                      // what follows "rbdvault NAME" on the Usage: line
  std::string summary;                                    // one or two sentences for --help
  unsigned groups = 0;                                    // OptionGroup bits
  std::function<void(po::options_description&)> options;  // the command's own options (may be empty)
  std::function<int(const Args&)> run;
};

// The command groups (one file each).
[[nodiscard]] std::vector<Command> backup_commands();       // init, backup, images
[[nodiscard]] std::vector<Command> restore_commands();      // restore, verify
[[nodiscard]] std::vector<Command> history_commands();      // ls, forget, expire, protect, unprotect
[[nodiscard]] std::vector<Command> maintenance_commands();  // gc, du, scrub, repair, log
[[nodiscard]] std::vector<Command> batch_commands();        // run, agent, status, check
[[nodiscard]] std::vector<Command> mount_commands();        // mount, fsck
[[nodiscard]] std::vector<Command> copy_commands();         // copy
// The batch run's fsck step (fsck = yes), backed by view/'s fsck (cmd_mount.cc).
[[nodiscard]] agent::FsckFunction batch_fsck();
[[nodiscard]] std::vector<Command> serve_commands();        // serve

// `check` follows the Nagios plugin conventions: every error of its own is UNKNOWN (3), on stdout,
// as "RBDVAULT UNKNOWN - CLASS: message".
inline constexpr int kCheckUnknown = 3;
[[nodiscard]] std::string check_unknown_line(agent::ErrorClass c, const std::string& message);

// Numeric option `name` parsed with `parse` (agent/numbers.h); an error becomes one usage line
// naming the option and the value as typed. Every command parses its numbers before doing anything.
template <class Parse>
auto numeric(const Args& a, const char* name, Parse parse) {
  const std::string text = a.str(name);
  try {
    return parse(text);
  } catch (const std::invalid_argument& e) {
    throw UsageError(std::string("bad --") + name + " '" + text + "': " + e.what());
  }
}
// A numeric option with a range from agent/numbers.h, as the kind of number it is.
[[nodiscard]] int64_t whole_option(const Args& a, const char* name, const agent::Range& r);
[[nodiscard]] int64_t duration_option(const Args& a, const char* name, const agent::Range& r);
[[nodiscard]] double real_option(const Args& a, const char* name, const agent::RealRange& r);
// --listen HOST:PORT ([ADDR]:PORT for IPv6; port 0: any free port) as (host, port).
[[nodiscard]] std::pair<std::string, uint16_t> listen_option(const Args& a);

// --store: a directory, or for rados:POOL[/NAMESPACE] its index directory, brought up to date.
[[nodiscard]] std::string require_store(const Args& a);
// For rados:POOL[/NAMESPACE]: where (with --store-conf/-id/-keyring) and the index directory.
[[nodiscard]] std::optional<std::pair<store::RadosLocation, std::filesystem::path>> rados_store(const Args& a);
[[nodiscard]] std::string one_positional(const Args& a, const char* what);
void no_positional(const Args& a);
void at_most_one_positional(const Args& a, const char* what);
// POOL/IMAGE[@SNAP] from the command line; a malformed one is a usage error.
[[nodiscard]] rbd::ImageSpec parse_spec(const std::string& text);
// POOL/IMAGE of a command that takes whole images: a UsageError naming a.command for an @REV.
[[nodiscard]] rbd::ImageSpec parse_image_spec(const Args& a, const std::string& text);
[[nodiscard]] rbd::ConnectOptions connect_options(const Args& a);
// The store's record of POOL/IMAGE, or a not-found error.
[[nodiscard]] store::ImageRecord find_image(store::ReadOnlyStore& st, const rbd::ImageSpec& spec);
// POOL/IMAGE[@REV] to a committed revision; REV defaults to the latest.
[[nodiscard]] store::RevisionRecord resolve_revision(store::ReadOnlyStore& st, const std::string& text);

// Runs `body` as a logged operation: a start line in the store's operation log before, an end
// line with the result after (also when it throws). Directories that are not stores get no log.
int logged(const Args& a, const std::string& op, const std::string& image, const std::function<int(uint64_t&)>& body);
// The same in the log of the store in `dir` (copy logs in its target, which is not --store).
int logged_at(const std::string& dir, const Args& a, const std::string& op, const std::string& image,
              const std::function<int(uint64_t&)>& body);

// One JSON document on stdout, one line. Bytes that are not UTF-8 (an image name, a logged
// command line) are replaced, never a reason to fail the command after its work is done.
void print_json(const Json& j);

}  // namespace rbdvault::tools
