// [group.NAME] sections of the batch config (consistency groups, issue 16): parsing, the group's
// hooks, and every bad input refused with one line naming the config line.
#include <gtest/gtest.h>

#include <string>

#include "agent/batch_config.h"

namespace rbdvault::agent {
namespace {

const std::string kBase = R"([store]
path = /srv/rbdvault
[job.vms]
pool = rbd
include = vm-*
exclude = vm-*-scratch
[job.db]
pool = db
)";

std::string error_of(const std::string& groups) {
  try {
    (void)parse_batch_config(kBase + groups, "g.conf");
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "no error";
}

TEST(GroupConfig, ParsesImagesAndHooks) {
  const BatchConfig c = parse_batch_config(kBase + R"([group.vm1]
images = rbd/vm-1-system, db/vm-1-data
images = rbd/vm-1-logs
pre-snapshot = freeze vm1
post-snapshot = thaw vm1
hook-timeout = 20s
on-hook-failure = crash-consistent
[group.other]
images=rbd/vm-2
)",
                                           "g.conf");
  ASSERT_EQ(c.groups.size(), 2u);
  const GroupConfig& g = c.groups[0];
  EXPECT_EQ(g.name, "vm1");
  EXPECT_EQ(g.images, (std::vector<std::string>{"rbd/vm-1-system", "db/vm-1-data", "rbd/vm-1-logs"}));
  EXPECT_EQ(g.hooks.pre, "freeze vm1");
  EXPECT_EQ(g.hooks.post, "thaw vm1");
  EXPECT_EQ(g.hooks.timeout_seconds, 20);
  EXPECT_EQ(g.hooks.on_failure, HookFailurePolicy::kCrashConsistent);
  EXPECT_EQ(g.where, "g.conf:9");
  EXPECT_EQ(c.groups[1].hooks.pre, "");
  EXPECT_EQ(c.groups[1].hooks.on_failure, HookFailurePolicy::kSkip);
  ASSERT_NE(c.group_of("db/vm-1-data"), nullptr);
  EXPECT_EQ(c.group_of("db/vm-1-data")->name, "vm1");
  EXPECT_EQ(c.group_of("rbd/vm-2")->name, "other");
  EXPECT_EQ(c.group_of("rbd/vm-3"), nullptr);
  // An existing RBD group: its members are listed at run time.
  const BatchConfig r = parse_batch_config(kBase + "[group.vm4]\nrbd-group = rbd/vm4\n", "g.conf");
  EXPECT_EQ(r.groups.at(0).rbd_group, "rbd/vm4");
  EXPECT_TRUE(r.groups.at(0).images.empty());
}

// Each error is one line naming the file, the line and what is wrong.
TEST(GroupConfig, BadInputNamesTheLine) {
  struct Case {
    std::string groups, want;
  } cases[] = {
      {"[group.g]\nimages = rbd/vm-1, rbd/nope\n",
       "g.conf:10: [group.g] image 'rbd/nope' is selected by no [job.NAME]; a group member must be backed up by a job"},
      {"[group.g]\nimages = rbd/vm-1-scratch\n", "g.conf:10: [group.g] image 'rbd/vm-1-scratch' is selected by no"},
      {"[group.a]\nimages = rbd/vm-1\n[group.b]\npre-snapshot = x\nimages = db/x, rbd/vm-1\n",
       "g.conf:13: [group.b] image 'rbd/vm-1' is already in a group (line 10); an image can be in one group only"},
      {"[group.a]\nimages = rbd/vm-1, rbd/vm-1\n",
       "g.conf:10: [group.a] image 'rbd/vm-1' is already in a group (line 10)"},
      {"[group.g]\npre-snapshot = x\n", "g.conf:9: [group.g] needs 'images = POOL/NAME, POOL/NAME'"},
      {"[group.g]\nimages =\n", "g.conf:10: key 'images' in [group.g]: bad value '': must not be empty"},
      {"[group.g]\nimages = rbd/vm-1,,rbd/vm-2\n", "g.conf:10: [group.g] image '': expected POOL/NAME"},
      {"[group.g]\nimages = vm-1\n", "g.conf:10: [group.g] image 'vm-1': expected POOL/NAME"},
      {"[group.g]\nimages = rbd/vm-1@snap\n", "g.conf:10: [group.g] image 'rbd/vm-1@snap': expected POOL/NAME"},
      {"[group.g]\nimages = rbd/vm-1\nschedule = hourly\n", "g.conf:11: unknown key 'schedule' in [group.g]"},
      {"[group.g]\nimages = rbd/vm-1\nhook-timeout = forever\n",
       "g.conf:11: key 'hook-timeout' in [group.g]: bad value"},
      {"[group.g]\nimages = rbd/vm-1\non-hook-failure = maybe\n", "g.conf:11: key 'on-hook-failure' in [group.g]"},
      {"[group.g]\nimages = rbd/vm-1\npre-snapshot = a\npre-snapshot = b\n",
       "g.conf:12: key 'pre-snapshot' in [group.g] is given twice"},
      {"[group.]\nimages = rbd/vm-1\n", "g.conf:9: [group.]: expected [group.NAME]"},
      {"[group.g]\nimages = rbd/vm-1\nrbd-group = rbd/g\n", "g.conf:9: [group.g] needs 'images = POOL/NAME, POOL/NAME' "
                                                             "or 'rbd-group = POOL/GROUP', not both"},
      {"[group.g]\nrbd-group = g\n", "g.conf:10: key 'rbd-group' in [group.g]: bad value 'g': expected POOL/GROUP"},
      {"[group.g]\nimages = rbd/vm-1\n[group.g]\nimages = rbd/vm-2\n", "g.conf:11: section [group.g] appears twice"},
  };
  for (const Case& c : cases) {
    const std::string err = error_of(c.groups);
    EXPECT_EQ(err.rfind(c.want, 0), 0u) << c.groups << "gave: " << err;
    EXPECT_EQ(err.find('\n'), std::string::npos) << err;
  }
}

TEST(GroupConfig, ShippedExample) {
  const BatchConfig c = load_batch_config(RBDVAULT_SOURCE_DIR "/deploy/rbdvault.conf.example");
  ASSERT_EQ(c.groups.size(), 1u);
  EXPECT_EQ(c.groups[0].images, (std::vector<std::string>{"vmpool/vm-102-disk-0", "vmpool/vm-102-disk-1"}));
  EXPECT_EQ(c.groups[0].hooks.pre, "qm guest cmd 102 fsfreeze-freeze");
}

}  // namespace
}  // namespace rbdvault::agent
