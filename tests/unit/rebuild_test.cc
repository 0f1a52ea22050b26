// Revision manifests in the life of a store (docs/format.md §16): the commit writes one, and a
// writer killed after it is rolled forward; forget and protect write new generations; the index
// rebuilt from the data area alone equals the one it replaces; format 1 stores are refused and
// upgraded in place, also after a killed upgrade.
#include <sys/wait.h>

#include <fstream>
#include <sstream>

#include "store/error.h"
#include "store/manifest.h"
#include "store/object_store.h"
#include "store/scrub.h"
#include "tests/unit/store_fixture.h"

namespace rbdvault::store::testing {
namespace {

// Runs `work` in a child that SIGKILLs itself at crash point `step`; true if it died there.
template <typename Work>
bool crash_at(const fs::path& /*dir*/, const std::string& step, Work work) {
  pid_t pid = ::fork();
  if (pid == 0) {
    ::setenv("RBDVAULT_CRASH_AT", step.c_str(), 1);
    try {
      work();
    } catch (...) {
      ::_exit(2);
    }
    ::_exit(0);
  }
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid) return false;
  return WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class RebuildTest : public StoreTest {
 protected:
  // Every revision's record (encoded, so every field counts) and content.
  std::map<uint64_t, std::pair<std::string, std::string>> snapshot() {
    std::map<uint64_t, std::pair<std::string, std::string>> out;
    for (const RevisionRecord& r : store_->revisions()) out[r.id] = {encode(r), read(r)};
    return out;
  }
  std::vector<std::string> manifests() { return store_->objects().list("manifests/"); }

  // One live manifest per revision, agreeing with the index; none for anything else.
  void expect_manifests_agree() {
    std::map<uint64_t, std::string> live;
    for (const std::string& name : manifests()) {
      auto p = parse_manifest_name(name);
      ASSERT_TRUE(p) << name;
      EXPECT_TRUE(live.emplace(p->first, name).second) << "two manifests of revision " << p->first;
    }
    const auto revs = store_->revisions();
    EXPECT_EQ(live.size(), revs.size());
    for (const RevisionRecord& r : revs) {
      ASSERT_TRUE(live.count(r.id)) << "no manifest for revision " << r.id;
      auto obj = store_->objects().open(live[r.id]);
      const ManifestReader m(*obj);
      EXPECT_EQ(encode(m.tail().rev), encode(r));
      uint64_t n = 0;
      m.for_each_entry([&](uint64_t b, const std::optional<Hash>& h) {
        ++n;
        auto k = store_->block_content(r.image, b, r.id);
        EXPECT_EQ(k, h) << "revision " << r.id << " block " << b;
      });
      EXPECT_GE(n, 0u);
    }
  }

  // Closes the store, deletes the index, rebuilds it, reopens.
  void lose_index_and_rebuild() {
    store_.reset();
    fs::remove_all(dir_ / "index");
    EXPECT_THROW(Store::open(dir_, OpenMode::kReadOnly), StoreError);
    const auto st = Store::rebuild_index(dir_);
    EXPECT_EQ(st.chunks_skipped, 0u);
    EXPECT_EQ(st.manifests_skipped, 0u);
    store_ = Store::open(dir_, OpenMode::kWriter, "unit test");
  }

  void expect_clean() {
    ScrubOptions o;
    o.deep = true;
    const ScrubReport r = scrub(*store_, o);
    for (const auto& i : r.issues) ADD_FAILURE() << "scrub: revision " << i.revision << ": " << i.problem;
  }

  // Three images' worth of history: full, deltas, a shrink and a regrowth.
  void build() {
    std::string a = random_bytes(20 * kBs, 1);
    put("a", a);
    a.replace(3 * kBs, kBs, random_bytes(kBs, 2));
    put("a", a);
    std::set<uint64_t> changed = {5, 6};
    a.replace(5 * kBs, 2 * kBs, random_bytes(2 * kBs, 3));
    put("a", a, &changed);
    put("a", a.substr(0, 7 * kBs + 100));
    put("b", random_bytes(9 * kBs, 4) + std::string(3 * kBs, '\0'));
    put("a", a + random_bytes(kBs, 5));
  }
};

TEST_F(RebuildTest, CommitWritesOneManifestPerRevision) {
  build();
  expect_manifests_agree();
  for (const std::string& n : manifests()) EXPECT_EQ(parse_manifest_name(n)->second, 0u) << n;
}

TEST_F(RebuildTest, RebuildFromTheDataAreaGivesTheSameStore) {
  build();
  auto revs = store_->revisions();
  store_->set_protected(revs[1].id, true);
  store_->forget(revs[2].id);  // its needed entries move to revision 4
  store_->forget(revs[0].id);
  expect_manifests_agree();
  const auto before = snapshot();
  const auto images_before = store_->images();
  lose_index_and_rebuild();
  EXPECT_EQ(snapshot(), before);
  ASSERT_EQ(store_->images().size(), images_before.size());
  expect_clean();
  expect_manifests_agree();
  // The next revision continues the history: a new id above every old one, parent the newest.
  const uint64_t newest = before.rbegin()->first;
  const RevisionRecord next = put("a", random_bytes(3 * kBs, 9));
  EXPECT_GT(next.id, newest);
  EXPECT_EQ(next.parent, store_->revisions(next.image)[store_->revisions(next.image).size() - 2].id);
  expect_clean();
  // A rebuild over an existing (intact) index gives it again, and so does running it twice.
  const auto again = snapshot();
  store_.reset();
  Store::rebuild_index(dir_);
  Store::rebuild_index(dir_);
  store_ = Store::open(dir_, OpenMode::kWriter, "unit test");
  EXPECT_EQ(snapshot(), again);
  expect_clean();
}

TEST_F(RebuildTest, KilledAfterTheManifestPutIsCommittedByRecovery) {
  build();
  const auto before = snapshot();
  store_.reset();
  const std::string image = random_bytes(6 * kBs, 7);
  ASSERT_TRUE(crash_at(dir_, "revision.manifest_put", [&] {
    auto s = Store::open(dir_, OpenMode::kWriter, "child");
    auto w = s->begin_revision(RevisionStart{"rbd", "c", image.size(), true});
    for (uint64_t b = 0; b < 6; ++b) w->put_block(b, std::string_view(image).substr(b * kBs, kBs));
    (void)w->commit(RevisionInfo{});
  }));
  store_ = Store::open(dir_, OpenMode::kWriter, "unit test");
  auto after = snapshot();
  ASSERT_EQ(after.size(), before.size() + 1);
  const RevisionRecord rolled = store_->revisions().back();
  EXPECT_EQ(rolled.name, "c");
  EXPECT_EQ(read(rolled), image);
  EXPECT_EQ(store_->compute_digest(rolled), rolled.digest);
  expect_clean();
  expect_manifests_agree();
}

TEST_F(RebuildTest, KilledBeforeTheManifestPutIsRolledBack) {
  build();
  const auto before = snapshot();
  store_.reset();
  const std::string image = random_bytes(6 * kBs, 7);
  ASSERT_TRUE(crash_at(dir_, "revision.entries_synced", [&] {
    auto s = Store::open(dir_, OpenMode::kWriter, "child");
    auto w = s->begin_revision(RevisionStart{"rbd", "c", image.size(), true});
    for (uint64_t b = 0; b < 6; ++b) w->put_block(b, std::string_view(image).substr(b * kBs, kBs));
    (void)w->commit(RevisionInfo{});
  }));
  store_ = Store::open(dir_, OpenMode::kWriter, "unit test");
  EXPECT_EQ(snapshot(), before);
  expect_clean();
  expect_manifests_agree();
  // No leftover of the unfinished manifest either.
  for (auto& e : fs::directory_iterator(dir_ / "manifests"))
    EXPECT_FALSE(e.path().string().ends_with(".tmp")) << e.path();
}

TEST_F(RebuildTest, KilledForgetAndProtectAreCompletedFromTheirManifests) {
  build();
  auto revs = store_->revisions();
  store_.reset();
  ASSERT_TRUE(crash_at(dir_, "forget.manifest_put", [&] {
    auto s = Store::open(dir_, OpenMode::kWriter, "child");
    s->forget(revs[2].id);
  }));
  ASSERT_TRUE(crash_at(dir_, "protect.manifest_put", [&] {
    auto s = Store::open(dir_, OpenMode::kWriter, "child");
    s->set_protected(revs[1].id, true);
  }));
  store_ = Store::open(dir_, OpenMode::kWriter, "unit test");
  EXPECT_FALSE(store_->revision(revs[2].id));
  ASSERT_TRUE(store_->revision(revs[1].id));
  EXPECT_TRUE(store_->revision(revs[1].id)->flags & kRevisionProtected);
  expect_manifests_agree();
  expect_clean();
  const auto before = snapshot();
  lose_index_and_rebuild();
  EXPECT_EQ(snapshot(), before);
}

// A forget killed after its index write but before the old manifests went: the successor's newer
// generation names the forgotten revision as absorbed, so a rebuild leaves it out even before
// recovery tidies up.
TEST_F(RebuildTest, RebuildIgnoresAnAbsorbedRevision) {
  build();
  auto revs = store_->revisions();
  store_.reset();
  ASSERT_TRUE(crash_at(dir_, "forget.done", [&] {
    auto s = Store::open(dir_, OpenMode::kWriter, "child");
    s->forget(revs[2].id);
  }));
  fs::remove_all(dir_ / "index");
  Store::rebuild_index(dir_);
  store_ = Store::open(dir_, OpenMode::kWriter, "unit test");
  EXPECT_FALSE(store_->revision(revs[2].id));
  expect_manifests_agree();  // recovery removed the absorbed revision's manifest and the old generation
  expect_clean();
}

TEST_F(RebuildTest, LostIndexNamesRebuildIndex) {
  build();
  store_.reset();
  std::ofstream(dir_ / "index" / "CURRENT", std::ios::trunc) << "garbage";
  for (OpenMode mode : {OpenMode::kReadOnly, OpenMode::kWriter}) {
    try {
      (void)Store::open(dir_, mode, "unit test");
      ADD_FAILURE() << "opened a garbled index";
    } catch (const StoreError& e) {
      EXPECT_EQ(e.kind(), StoreError::Kind::kCorrupt) << e.what();
      EXPECT_NE(std::string(e.what()).find("rbdvault rebuild-index --store"), std::string::npos) << e.what();
    }
  }
  Store::rebuild_index(dir_);
  store_ = Store::open(dir_, OpenMode::kWriter, "unit test");
  expect_clean();
}

// A format 1 store is what format 2 is without manifests and with marker version 1 (the index and
// pack encodings are unchanged), so a test makes one from a format 2 store.
void make_format_1(const fs::path& dir) {
  fs::remove_all(dir / "manifests");
  std::string marker = slurp(dir / "rbdvault.store");
  marker.replace(marker.find("rbdvault-store " + std::to_string(kFormatVersion)), 16, "rbdvault-store 1");
  std::ofstream(dir / "rbdvault.store", std::ios::trunc) << marker;
}

TEST_F(RebuildTest, Format1IsRefusedAndUpgradedInPlaceAlsoAfterAKill) {
  build();
  store_->set_protected(store_->revisions()[0].id, true);
  store_->forget(store_->revisions()[1].id);
  const auto before = snapshot();
  store_.reset();
  make_format_1(dir_);
  for (OpenMode mode : {OpenMode::kReadOnly, OpenMode::kWriter}) {
    try {
      (void)Store::open(dir_, mode, "unit test");
      ADD_FAILURE() << "opened a format 1 store";
    } catch (const StoreError& e) {
      EXPECT_EQ(e.kind(), StoreError::Kind::kInvalid) << e.what();
      EXPECT_NE(std::string(e.what()).find("rbdvault upgrade --store"), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(Store::rebuild_index(dir_), StoreError);
  ASSERT_TRUE(crash_at(dir_, "upgrade.manifest_put:2", [&] { (void)Store::upgrade(dir_); }));
  EXPECT_THROW(Store::open(dir_, OpenMode::kReadOnly), StoreError);  // still format 1
  const auto st = Store::upgrade(dir_);
  EXPECT_TRUE(st.upgraded);
  EXPECT_EQ(st.manifests_written, before.size() - 2);  // the killed run wrote two
  EXPECT_FALSE(Store::upgrade(dir_).upgraded);
  store_ = Store::open(dir_, OpenMode::kWriter, "unit test");
  EXPECT_EQ(snapshot(), before);
  expect_manifests_agree();
  lose_index_and_rebuild();
  EXPECT_EQ(snapshot(), before);
  expect_clean();
}

}  // namespace
}  // namespace rbdvault::store::testing
