// rbd/ against the real test cluster (CEPH_CONF points at deploy/micro-ceph.sh's ceph.conf).
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <rbd/librbd.hpp>
#include <string>
#include <vector>

#include "rbd/cluster.h"
#include "rbd/error.h"
#include "rbd/image.h"
#include "rbd/image_writer.h"
#include "rbd/migration.h"

namespace rbdvault::rbd {
namespace {

std::string conf() {
  const char* c = std::getenv("CEPH_CONF");
  return c ? c : "";
}

std::string unique_name(const std::string& base) { return base + "-" + std::to_string(::getpid()); }

class RbdTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(conf().empty()) << "CEPH_CONF must point at the test cluster";
    cluster_ = std::make_unique<Cluster>(ConnectOptions{conf(), "", "", 10});
  }
  // A committed empty image of `size` bytes.
  void create(const std::string& name, uint64_t size, int order = 22) {
    NewImageOptions o;
    o.size = size;
    o.order = order;
    ImageWriter w(*cluster_, "rbd", name, o);
    w.commit();
    names_.push_back(name);
  }
  void TearDown() override {
    for (auto& n : names_) {
      try {
        Image img = Image::open(*cluster_, "rbd", n);
        for (auto& s : img.snapshots()) img.remove_snapshot(s.name);
      } catch (const CephError&) {
      }
      remove_image(*cluster_, "rbd", n, true);
    }
  }
  std::unique_ptr<Cluster> cluster_;
  std::vector<std::string> names_;
};

TEST_F(RbdTest, ListsImagesWithIdsAndInfo) {
  const std::string name = unique_name("list");
  create(name, 8 << 20, 20);
  bool found = false;
  for (auto& e : cluster_->list_images("rbd")) {
    if (e.name != name) continue;
    found = true;
    Image img = Image::open(*cluster_, "rbd", name, {}, true);
    ImageInfo info = img.info();
    EXPECT_EQ(info.id, e.id);
    EXPECT_FALSE(info.id.empty());
    EXPECT_EQ(info.size, 8u << 20);
    EXPECT_EQ(info.object_size, 1u << 20);
    EXPECT_EQ(info.order, 20);
  }
  EXPECT_TRUE(found);
}

TEST_F(RbdTest, ChangedExtentsBetweenSnapshots) {
  const std::string name = unique_name("diff");
  create(name, 16 << 20);
  Image img = Image::open(*cluster_, "rbd", name);
  img.write(0, std::string(4096, 'a'));
  SnapshotInfo s1 = img.create_snapshot("s1");
  img.write(8 << 20, std::string(4096, 'b'));  // only this changes between s1 and s2
  img.resize(20 << 20);
  SnapshotInfo s2 = img.create_snapshot("s2");
  EXPECT_EQ(s1.size, 16u << 20);
  EXPECT_EQ(s2.size, 20u << 20);  // each snapshot carries its own size
  EXPECT_LT(s1.id, s2.id);
  auto snaps = img.snapshots();
  ASSERT_EQ(snaps.size(), 2u);
  EXPECT_EQ(snaps[1].name, "s2");

  img.set_snapshot("s2");
  std::vector<ChangedExtent> all, first_half, second_half;
  img.changed_extents("s1", 0, s2.size, false, [&](const ChangedExtent& e) { all.push_back(e); });
  img.changed_extents("s1", 0, 8 << 20, false, [&](const ChangedExtent& e) { first_half.push_back(e); });
  img.changed_extents("s1", 8 << 20, 8 << 20, false, [&](const ChangedExtent& e) { second_half.push_back(e); });
  EXPECT_TRUE(first_half.empty()) << "unchanged range reported " << first_half.size() << " extents";
  ASSERT_FALSE(second_half.empty());
  EXPECT_LE(second_half.front().offset, uint64_t(8 << 20));
  EXPECT_GE(second_half.front().offset + second_half.front().length, uint64_t((8 << 20) + 4096));
  EXPECT_TRUE(second_half.front().exists);
  EXPECT_EQ(all.size(), second_half.size());

  // From nothing: allocated extents only, covering both writes.
  std::vector<ChangedExtent> allocated;
  img.changed_extents("", 0, s2.size, false, [&](const ChangedExtent& e) { allocated.push_back(e); });
  ASSERT_GE(allocated.size(), 2u);
  EXPECT_EQ(allocated.front().offset, 0u);

  std::string buf(4096, '\0');
  EXPECT_EQ(img.read(8 << 20, 4096, buf.data()), 4096u);
  EXPECT_EQ(buf, std::string(4096, 'b'));
  img.set_snapshot("s1");
  EXPECT_EQ(img.read(8 << 20, 4096, buf.data()), 4096u);
  EXPECT_EQ(buf, std::string(4096, '\0'));
}

// Byte ranges covered by `extents`, merged: what a backup reads does not depend on how librbd
// splits its answer.
std::vector<std::pair<uint64_t, uint64_t>> covered(const std::vector<ChangedExtent>& extents, bool exists) {
  std::vector<std::pair<uint64_t, uint64_t>> out;
  for (const auto& e : extents) {
    if (e.exists != exists || e.length == 0) continue;
    if (!out.empty() && out.back().second >= e.offset)
      out.back().second = std::max(out.back().second, e.offset + e.length);
    else
      out.emplace_back(e.offset, e.offset + e.length);
  }
  return out;
}

TEST_F(RbdTest, ExactDiffInWindowsMatchesOnePassAndBoundsTheObjectList) {
  const std::string name = unique_name("window");
  const uint64_t size = 24 << 20;
  NewImageOptions o;
  o.size = size;
  o.order = 20;  // 24 objects of 1 MiB
  o.features = RBD_FEATURE_LAYERING | RBD_FEATURE_EXCLUSIVE_LOCK | RBD_FEATURE_OBJECT_MAP | RBD_FEATURE_FAST_DIFF;
  ImageWriter w(*cluster_, "rbd", name, o);
  w.commit();
  names_.push_back(name);
  Image img = Image::open(*cluster_, "rbd", name);
  std::mt19937_64 rng(11);
  auto scatter = [&](int writes, char c) {
    for (int i = 0; i < writes; ++i) img.write((rng() % (size / 4096)) * 4096, std::string(4096, c));
  };
  scatter(20, 'a');
  img.create_snapshot("s1");
  scatter(40, 'b');
  img.create_snapshot("s2");
  img.set_snapshot("s2");

  std::vector<ChangedExtent> one_pass;
  img.changed_extents("s1", 0, size, false, [&](const ChangedExtent& e) { one_pass.push_back(e); });
  ASSERT_FALSE(one_pass.empty());
  uint64_t refined_default = 0;
  for (uint64_t window : {uint64_t{1}, uint64_t{3}, Image::kDiffWindowObjects}) {
    std::vector<ChangedExtent> got;
    const auto st = img.changed_extents_exact("s1", 0, size, [&](const ChangedExtent& e) { got.push_back(e); }, window);
    EXPECT_EQ(covered(got, true), covered(one_pass, true)) << "window of " << window << " objects";
    EXPECT_EQ(covered(got, false), covered(one_pass, false)) << "window of " << window << " objects";
    for (size_t i = 1; i < got.size(); ++i) EXPECT_LE(got[i - 1].offset, got[i].offset) << "out of order";
    if (window < Image::kDiffWindowObjects) {
      EXPECT_LE(st.peak_listed, window) << "the changed-object list outgrew its window";
    } else {
      refined_default = st.refined;
      EXPECT_GT(st.peak_listed, 3u) << "40 scattered writes touch more than 3 objects";
    }
  }
  EXPECT_GT(refined_default, 3u);
}

TEST_F(RbdTest, AsyncReaderKeepsReadsBoundedAndOrdered) {
  const std::string name = unique_name("aio");
  create(name, 4 << 20);
  Image img = Image::open(*cluster_, "rbd", name);
  for (int i = 0; i < 64; ++i) img.write(uint64_t(i) * 65536, std::string(65536, char('A' + i % 26)));
  std::vector<uint64_t> order;
  AsyncReader reader(img, 4, [&](uint64_t offset, uint64_t tag, std::string_view data) {
    order.push_back(tag);
    EXPECT_EQ(data.size(), 65536u);
    EXPECT_EQ(data[0], char('A' + (offset / 65536) % 26));
  });
  for (uint64_t i = 0; i < 64; ++i) reader.submit(i * 65536, 65536, i);
  reader.drain();
  // The bound holds, and reads did overlap (how many at once depends on the cluster's speed).
  EXPECT_LE(reader.peak_in_flight(), 4u);
  EXPECT_GT(reader.peak_in_flight(), 1u);
  ASSERT_EQ(order.size(), 64u);
  for (uint64_t i = 0; i < 64; ++i) EXPECT_EQ(order[i], i);
}

TEST_F(RbdTest, ErrorsNameWhatFailed) {
  try {
    Image::open(*cluster_, "no-such-pool", "x");
    FAIL();
  } catch (const CephError& e) {
    EXPECT_NE(std::string(e.what()).find("pool 'no-such-pool' does not exist"), std::string::npos) << e.what();
    EXPECT_TRUE(e.not_found());
  }
  try {
    Image::open(*cluster_, "rbd", "no-such-image");
    FAIL();
  } catch (const CephError& e) {
    EXPECT_NE(std::string(e.what()).find("image rbd/no-such-image does not exist"), std::string::npos) << e.what();
  }
  const std::string name = unique_name("err");
  create(name, 1 << 20);
  try {
    Image::open(*cluster_, "rbd", name, "no-such-snap", true);
    FAIL();
  } catch (const CephError& e) {
    EXPECT_NE(std::string(e.what()).find("snapshot rbd/" + name + "@no-such-snap does not exist"), std::string::npos)
        << e.what();
  }
  NewImageOptions o;
  o.size = 1 << 20;
  try {
    ImageWriter w(*cluster_, "rbd", name, o);
    FAIL();
  } catch (const CephError& e) {
    EXPECT_NE(std::string(e.what()).find("already exists"), std::string::npos) << e.what();
  }
}

TEST(RbdConnect, WrongConfPathIsAClearError) {
  try {
    Cluster c(ConnectOptions{"/nonexistent/ceph.conf", "", "", 5});
    FAIL();
  } catch (const CephError& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/ceph.conf"), std::string::npos) << e.what();
  }
}

TEST_F(RbdTest, UncommittedImageWriterRemovesItsImage) {
  const std::string name = unique_name("partial");
  {
    NewImageOptions o;
    o.size = 1 << 20;
    ImageWriter w(*cluster_, "rbd", name, o);
    w.write(0, std::string(4096, 'x'));
    // no commit: a failed restore must not leave a half image behind
  }
  for (auto& e : cluster_->list_images("rbd")) EXPECT_NE(e.name, name);
}

TEST_F(RbdTest, CommitAsRenamesTheFinishedImage) {
  const std::string partial = unique_name("commit-as") + ".rbdvault-partial", name = unique_name("commit-as");
  {
    NewImageOptions o;
    o.size = 1 << 20;
    ImageWriter w(*cluster_, "rbd", partial, o);
    w.write(4096, std::string(4096, 'x'));
    w.commit_as(name);
  }
  names_.push_back(name);
  EXPECT_TRUE(image_exists(*cluster_, "rbd", name));
  EXPECT_FALSE(image_exists(*cluster_, "rbd", partial));
  Image img = Image::open(*cluster_, "rbd", name, {}, true);
  ceph::bufferlist bl;
  ASSERT_EQ(img.handle().read(4096, 4096, bl), 4096);
  EXPECT_EQ(bl.to_str(), std::string(4096, 'x'));
}

TEST_F(RbdTest, CommitAsRefusesATargetCreatedMeanwhileAndRemovesItsImage) {
  const std::string partial = unique_name("commit-race") + ".rbdvault-partial", name = unique_name("commit-race");
  {
    NewImageOptions o;
    o.size = 1 << 20;
    ImageWriter w(*cluster_, "rbd", partial, o);
    w.write(0, std::string(4096, 'x'));
    create(name, 2 << 20);  // someone else takes the name while the restore writes
    try {
      w.commit_as(name);
      FAIL() << "commit_as replaced an existing image";
    } catch (const CephError& e) {
      EXPECT_EQ(e.code(), -EEXIST) << e.what();
    }
  }
  EXPECT_FALSE(image_exists(*cluster_, "rbd", partial));
  Image img = Image::open(*cluster_, "rbd", name, {}, true);
  EXPECT_EQ(img.info().size, 2u << 20);  // the other image, untouched
}

// A raw file of `size` random bytes, for an import from the file stream (no server needed).
std::string random_raw_file(const std::string& name, size_t size) {
  const std::string path = (std::getenv("TMPDIR") ? std::string(std::getenv("TMPDIR")) : "/tmp") + "/" + name + ".raw";
  std::mt19937_64 rng(size);
  std::string data(size, '\0');
  for (auto& c : data) c = static_cast<char>(rng());
  FILE* f = std::fopen(path.c_str(), "wb");
  EXPECT_NE(f, nullptr);
  EXPECT_EQ(std::fwrite(data.data(), 1, data.size(), f), data.size());
  std::fclose(f);
  return path;
}

std::string read_all(Image& img, uint64_t size) {
  ceph::bufferlist bl;
  EXPECT_EQ(img.handle().read(0, size, bl), static_cast<ssize_t>(size));
  return bl.to_str();
}

std::string file_bytes(const std::string& path) {
  std::string out;
  FILE* f = std::fopen(path.c_str(), "rb");
  char buf[65536];
  for (size_t n; f && (n = std::fread(buf, 1, sizeof buf, f)) > 0;) out.append(buf, n);
  if (f) std::fclose(f);
  return out;
}

TEST_F(RbdTest, ImportMigrationIsReadableAtOnceAndCommitsToAPlainImage) {
  const std::string name = unique_name("import");
  const std::string path = random_raw_file(name, 3 << 20);
  {
    NewImageOptions o;
    o.order = 20;
    ImportMigration m(*cluster_, "rbd", name, raw_file_source_spec(path), o);
    names_.push_back(name);
    auto st = migration_status(*cluster_, "rbd", name);
    ASSERT_TRUE(st);
    EXPECT_EQ(st->state, "prepared");
    {
      Image img = Image::open(*cluster_, "rbd", name, {}, true);
      EXPECT_EQ(img.info().size, 3u << 20);
      EXPECT_EQ(img.info().order, 20);
      EXPECT_EQ(read_all(img, 3 << 20), file_bytes(path));  // read through to the source
    }
    uint64_t last = 0, total = 0;
    m.execute([&](uint64_t done, uint64_t t) {
      last = done;
      total = t;
    });
    EXPECT_EQ(total, 3u);  // librbd counts objects (1 MiB each here), not bytes
    EXPECT_LE(last, total);
    EXPECT_EQ(migration_status(*cluster_, "rbd", name)->state, "executed");
    m.commit();
  }
  EXPECT_FALSE(migration_status(*cluster_, "rbd", name));
  std::remove(path.c_str());  // the committed image no longer needs its source
  Image img = Image::open(*cluster_, "rbd", name, {}, true);
  EXPECT_EQ(read_all(img, 3 << 20).size(), 3u << 20);
}

TEST_F(RbdTest, UncommittedImportMigrationIsAbortedAndLeavesNoImage) {
  const std::string name = unique_name("import-abort");
  const std::string path = random_raw_file(name, 1 << 20);
  {
    ImportMigration m(*cluster_, "rbd", name, raw_file_source_spec(path), {});
    m.execute({});
    // no commit: a failed instant restore must not leave its target
  }
  for (auto& e : cluster_->list_images("rbd")) EXPECT_NE(e.name, name);
  std::remove(path.c_str());
}

TEST_F(RbdTest, ImportMigrationRefusesAnExistingImage) {
  const std::string name = unique_name("import-exists");
  create(name, 2 << 20);
  const std::string path = random_raw_file(name, 1 << 20);
  try {
    ImportMigration m(*cluster_, "rbd", name, raw_file_source_spec(path), {});
    FAIL() << "prepared over an existing image";
  } catch (const CephError& e) {
    EXPECT_EQ(e.code(), -EEXIST) << e.what();
  }
  Image img = Image::open(*cluster_, "rbd", name, {}, true);
  EXPECT_EQ(img.info().size, 2u << 20);  // untouched
  EXPECT_FALSE(migration_status(*cluster_, "rbd", name));
  std::remove(path.c_str());
}

TEST(RbdMigrationSpec, QuotesTheUrl) {
  EXPECT_EQ(raw_http_source_spec("http://h:1/a\"b\\c"),
            R"({"type":"raw","stream":{"type":"http","url":"http://h:1/a\"b\\c"}})");
}

}  // namespace
}  // namespace rbdvault::rbd
