// rbdvault: the command line. Thin by design: find the command in the table, parse its own
// options (nobody else's), call its handler, and turn an exception into one line and the exit code
// of its class (agent/error_class.h, docs/usage.md "Exit codes").
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <malloc.h>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "tools/command.h"
#include "tools/journal_log.h"
#include "tools/version.h"

using namespace rbdvault;
using namespace rbdvault::tools;

namespace {

// Every backup and restore allocates and frees buffers of 64 KiB to 4 MiB at a high rate, most on
// one thread and freed on another. With glibc's defaults a freed top of a thread's heap above
// 128 KiB goes back to the kernel and the next buffer faults in zeroed pages again (7% of a
// restore's CPU in perf: clear_page, page faults). Keeping up to 64 MiB per arena and serving
// buffers up to 8 MiB from the heap made a restore to a file 6-8% faster and left peak RSS
// within the memory test's bound (docs/benchmarks.md). Setting either turns off glibc's
// dynamic thresholds, hence both.
void tune_malloc() {
  mallopt(M_MMAP_THRESHOLD, 8 << 20);
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
}

std::vector<Command> all_commands() {
  std::vector<Command> all;
  for (auto group : {backup_commands, restore_commands, history_commands, maintenance_commands, batch_commands,
                     mount_commands, copy_commands, serve_commands})
    for (auto& c : group()) all.push_back(std::move(c));
  return all;
}

const Command* find_command(const std::vector<Command>& commands, const std::string& name) {
  auto it = std::find_if(commands.begin(), commands.end(), [&](const Command& c) { return c.name == name; });
  return it == commands.end() ? nullptr : &*it;
}

std::string top_usage(const std::vector<Command>& commands) {
  std::string text = "Usage: rbdvault COMMAND [OPTIONS] [ARGS]\n\nCommands:\n";
  for (const auto& c : commands) {
    std::string line = "  " + c.name;
    line.resize(std::max<size_t>(line.size() + 1, 13), ' ');
    text += line + c.summary + "\n";
  }
  text +=
      "\n`rbdvault COMMAND --help` lists a command's options; `rbdvault --version` prints the version.\n"
      "Images are POOL/IMAGE (a bare IMAGE means pool rbd), revisions POOL/IMAGE@REV.\n";
  return text;
}

// The options `c` accepts, as --help lists them: its own, then the Ceph group if it takes it.
std::vector<po::options_description> option_groups(const Command& c) {
  std::vector<po::options_description> groups;
  po::options_description own("Options");
  if (c.options) c.options(own);
  if (c.groups & kStoreOption)
    // clang-format off
    own.add_options()
        ("store,s", po::value<std::string>()->value_name("DIR|rados:POOL[/NS]"), "the revision store")
        ("store-conf", po::value<std::string>()->value_name("PATH"), "rados store: ceph.conf of the backup cluster (default: -c)")
        ("store-id", po::value<std::string>()->value_name("NAME"), "rados store: client id on the backup cluster (default: --id)")
        ("store-keyring", po::value<std::string>()->value_name("PATH"), "rados store: keyring for the backup cluster")
        ("index-dir", po::value<std::string>()->value_name("DIR"), "rados store: the local index cache (default /var/lib/rbdvault/rados-POOL)");
  // clang-format on
  if (c.groups & kFormatOption)
    own.add_options()("format", po::value<std::string>()->default_value("plain")->value_name("plain|json"),
                      "output: plain or json");
  // clang-format off
  own.add_options()
      ("verbose,v", po::bool_switch(), "debug logging")
      ("quiet,q", po::bool_switch(), "only warnings and errors")
      ("help,h", "show this help");
  // clang-format on
  groups.push_back(own);
  if (c.groups & kCephOptions) {
    po::options_description ceph("Ceph options (like rbd)");
    // clang-format off
    ceph.add_options()
        ("conf,c", po::value<std::string>()->value_name("PATH"), "ceph.conf (default: librados' search)")
        ("id", po::value<std::string>()->value_name("NAME"), "client name without 'client.' (default: admin)")
        ("keyring,k", po::value<std::string>()->value_name("PATH"), "keyring file")
        ("connect-timeout", po::value<std::string>()->default_value("15")->value_name("SECONDS"),
         "fail when the cluster does not answer in time (1s to 1h)")
        ("op-timeout", po::value<std::string>()->default_value("0")->value_name("SECONDS"),
         "fail a monitor/OSD operation that takes longer (0: wait like rbd)");
    // clang-format on
    groups.push_back(ceph);
  }
  return groups;
}

void print_help(const Command& c) {
  std::cout << "Usage: rbdvault " << c.name << " " << c.usage << "\n\n" << c.summary << "\n";
  for (const auto& g : option_groups(c)) std::cout << "\n" << g;
}

Args parse_args(const Command& c, int argc, char** argv) {
  po::options_description parsed;
  for (const auto& g : option_groups(c)) parsed.add(g);
  po::options_description hidden;
  hidden.add_options()("args", po::value<std::vector<std::string>>(), "");
  parsed.add(hidden);
  po::positional_options_description pos;
  pos.add("args", -1);
  Args a;
  a.command = c.name;
  for (int i = 0; i < argc; ++i) a.command_line += (i ? " " : "") + std::string(argv[i]);
  try {
    // No guessing: an abbreviated or foreign option is an error, never another option.
    const int style = po::command_line_style::default_style & ~po::command_line_style::allow_guessing;
    po::store(po::command_line_parser(std::vector<std::string>(argv + 2, argv + argc))
                  .options(parsed)
                  .positional(pos)
                  .style(style)
                  .run(),
              a.vm);
    po::notify(a.vm);
  } catch (const po::error& e) {
    throw UsageError(c.name + ": " + e.what() + " (see rbdvault " + c.name + " --help)");
  }
  if (a.vm.count("args")) a.positional = a.vm["args"].as<std::vector<std::string>>();
  if (a.vm.count("format") && a.str("format") != "plain" && a.str("format") != "json")
    throw UsageError(c.name + ": --format must be plain or json");
  return a;
}

// One line on stderr (stdout for check), and the exit code of the error's class.
int report(const std::exception_ptr& error, bool nagios) {
  const agent::ErrorClass cls = agent::classify(error);
  std::string message = "unknown exception";
  bool usage = false;
  try {
    std::rethrow_exception(error);
  } catch (const UsageError& e) {
    message = e.what();
    usage = true;
  } catch (const std::exception& e) {
    message = e.what();
  } catch (...) {
  }
  if (nagios) {
    std::cout << check_unknown_line(cls, message) << "\n";
    return kCheckUnknown;
  }
  const char* prefix = usage ? "" : cls == agent::ErrorClass::kInternal ? "internal error: " : "error: ";
  std::fprintf(stderr, "rbdvault: %s%s\n", prefix, message.c_str());
  return agent::exit_code(cls);
}

}  // namespace

int main(int argc, char** argv) {
  tune_malloc();
  auto logger = tools::make_stderr_logger("rbdvault");
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("%^%l%$: %v");
  const std::string name = argc > 1 ? argv[1] : "";
  try {
    if (name == "--version") {  // before anything else: cheap, needs nothing
      std::cout << version_text();
      return 0;
    }
    const std::vector<Command> commands = all_commands();
    if (name.empty()) {
      std::cerr << top_usage(commands);
      return agent::exit_code(agent::ErrorClass::kUsage);
    }
    if (name == "--help" || name == "-h" || name == "help") {
      std::cout << top_usage(commands);
      return 0;
    }
    const Command* c = find_command(commands, name);
    if (!c)
      throw UsageError(name[0] == '-' ? "give the command first: rbdvault COMMAND [OPTIONS] (see rbdvault --help)"
                                      : "unknown command '" + name + "' (see rbdvault --help)");
    const Args a = parse_args(*c, argc, argv);
    if (a.vm.count("help")) {
      print_help(*c);
      return 0;
    }
    spdlog::set_level(a.flag("verbose") ? spdlog::level::debug : a.quiet() ? spdlog::level::warn : spdlog::level::info);
    if (a.flag("verbose")) spdlog::set_pattern("%H:%M:%S.%e %^%l%$: %v");
    return c->run(a);
  } catch (...) {
    // A monitoring plugin answers UNKNOWN (3), never CRITICAL, for its own errors (fsck too).
    return report(std::current_exception(), name == "check" || name == "fsck");
  }
}
