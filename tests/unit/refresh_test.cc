// A host's index cache of a shared store, refreshed (store/rebuild.cc with reuse, pack_identities):
// packs the last build read whole and that are still the same objects are not read again, and the
// result is the index a full rebuild gives, byte for byte, whatever changed in between (where a
// chunk has two intact copies, a refresh may point to the one it read, a full rebuild to the first).
#include <fstream>

#include "store/gc.h"
#include "store/index.h"
#include "store/object_store.h"
#include "store/open_object_store.h"
#include "store/pack.h"
#include "store/pack_identities.h"
#include "tests/unit/store_fixture.h"

namespace rbdvault::store::testing {
namespace {

// The local data area with identities a test controls (the RADOS backend's are object versions).
class IdentifiedObjects final : public ObjectStore {
 public:
  explicit IdentifiedObjects(std::shared_ptr<ObjectStore> inner) : inner_(std::move(inner)) {}
  std::map<std::string, std::string> changed;  // name -> identity; others: "v1"

  std::unique_ptr<ObjectSink> create(const std::string& n) override { return inner_->create(n); }
  std::unique_ptr<ObjectReader> open(const std::string& n) override {
    ++opened[n];
    return inner_->open(n);
  }
  std::optional<uint64_t> size(const std::string& n) override { return inner_->size(n); }
  std::vector<std::string> list(const std::string& p) override { return inner_->list(p); }
  void remove(const std::string& n) override { inner_->remove(n); }
  void remove_incomplete(const std::string& p) override { inner_->remove_incomplete(p); }
  std::optional<std::string> identity(const std::string& n) override {
    if (!inner_->size(n)) return std::nullopt;
    const auto it = changed.find(n);
    return it == changed.end() ? "v1" : it->second;
  }
  std::map<std::string, int> opened;

 private:
  std::shared_ptr<ObjectStore> inner_;
};

class RefreshTest : public StoreTest {
 protected:
  std::shared_ptr<IdentifiedObjects> objects_;
  void SetUp() override {
    StoreTest::SetUp();
    objects_ = std::make_shared<IdentifiedObjects>(open_object_store(dir_));
  }

  // Refreshes the closed store's index; counts the packs read.
  RebuildStats refresh() {
    store_.reset();
    objects_->opened.clear();
    return Store::rebuild_index(dir_, StoreIo{nullptr, objects_}, /*reuse=*/true);
  }
  size_t packs_read() const {
    size_t n = 0;
    for (const auto& [name, count] : objects_->opened) n += name.starts_with("data/") ? 1 : 0;
    return n;
  }
  // Every key and value of the closed store's index.
  std::vector<std::pair<std::string, std::string>> dump() {
    auto index = Index::open_read_only(dir_ / "index", dir_.string());
    std::vector<std::pair<std::string, std::string>> out;
    for (IndexCursor c = index->scan(""); c.valid(); c.next()) out.emplace_back(c.key(), c.value());
    return out;
  }
  // The refreshed index must be the one a full rebuild makes of the same data area.
  void expect_same_as_full_rebuild() {
    store_.reset();
    const auto refreshed = dump();
    (void)Store::rebuild_index(dir_, StoreIo{nullptr, objects_});
    EXPECT_TRUE(refreshed == dump()) << "the refreshed index differs from a full rebuild";
  }
  void reopen() { store_ = Store::open(dir_, OpenMode::kWriter, "unit test"); }
};

TEST_F(RefreshTest, ReadsOnlyPacksItHasNotReadWhole) {
  const std::string a = random_bytes(6 * kBs, 1);
  put("a", a);
  put("b", random_bytes(4 * kBs, 2));
  auto st = refresh();  // no identities yet: every pack
  EXPECT_EQ(st.packs, 2u);
  EXPECT_EQ(st.packs_reused, 0u);
  EXPECT_EQ(packs_read(), 2u);
  reopen();
  std::string a2 = a;
  a2.replace(kBs, kBs, random_bytes(kBs, 3));
  const std::set<uint64_t> changed{1};
  const RevisionRecord r = put("a", a2, &changed);
  st = refresh();
  EXPECT_EQ(st.packs, 3u);
  EXPECT_EQ(st.packs_reused, 2u);
  EXPECT_EQ(packs_read(), 1u);  // only the new one
  reopen();
  EXPECT_EQ(read(*store_->revision(r.id)), a2);
  expect_same_as_full_rebuild();
}

TEST_F(RefreshTest, AnObjectNoLongerTheSameIsReadAgain) {
  put("a", random_bytes(3 * kBs, 1));
  put("b", random_bytes(3 * kBs, 2));
  (void)refresh();
  const auto packs = objects_->list("data/");
  ASSERT_EQ(packs.size(), 2u);
  objects_->changed[packs[0]] = "v2";  // removed and written again under its name, as RADOS sees it
  const auto st = refresh();
  EXPECT_EQ(st.packs_reused, 1u);
  EXPECT_EQ(objects_->opened.count(packs[0]), 1u);
  EXPECT_EQ(objects_->opened.count(packs[1]), 0u);
  expect_same_as_full_rebuild();
}

TEST_F(RefreshTest, ForgetAndGcElsewhereGiveTheFullRebuildsIndex) {
  const std::string a = random_bytes(8 * kBs, 1);
  const RevisionRecord r1 = put("a", a);
  std::string a2 = a;
  a2.replace(0, 2 * kBs, random_bytes(2 * kBs, 5));
  const std::set<uint64_t> changed{0, 1};
  const RevisionRecord r2 = put("a", a2, &changed);
  put("a", a2, &changed);
  (void)refresh();
  reopen();
  store_->forget(r1.id);
  store_->forget(r2.id);
  (void)gc(*store_, GcOptions{});  // packs rewritten and removed, as another host's gc does
  const auto st = refresh();
  EXPECT_GT(st.packs_reused, 0u);
  reopen();
  for (const RevisionRecord& r : store_->revisions()) EXPECT_EQ(read(r), a2);
  expect_same_as_full_rebuild();
}

TEST_F(RefreshTest, AReusedPackMissingAChunkFallsBackToReadingEverything) {
  put("a", random_bytes(4 * kBs, 1));
  (void)refresh();
  {  // the previous index lost a chunk record of a pack it remembers
    auto index = Index::open(dir_ / "index", dir_.string());
    IndexCursor c = index->scan(std::string_view(&kKeyChunk, 1));
    ASSERT_TRUE(c.valid());
    const std::string key(c.key());
    index->remove(key, Sync::kYes, "test");
  }
  const auto st = refresh();
  EXPECT_EQ(st.packs_reused, 0u);  // fell back
  EXPECT_EQ(packs_read(), 1u);
  expect_same_as_full_rebuild();
  reopen();
  EXPECT_EQ(read(store_->revisions().front()), random_bytes(4 * kBs, 1));
}

TEST_F(RefreshTest, ADamagedPackIsNotRememberedAndIsReadAgain) {
  const std::string id = store_->store_id();
  put("a", random_bytes(3 * kBs, 1));
  const auto packs = objects_->list("data/");
  ASSERT_EQ(packs.size(), 1u);
  {  // one payload byte of the first chunk
    std::fstream f(dir_ / packs[0], std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(kPackHeaderSize + kChunkHeaderSize + 10));
    f.put('\x55');
  }
  auto st = refresh();
  EXPECT_GT(st.chunks_skipped, 0u);
  const auto ids = read_pack_identities(dir_, id);
  EXPECT_TRUE(!ids || ids->empty());
  st = refresh();
  EXPECT_EQ(st.packs_reused, 0u);
  EXPECT_GT(st.chunks_skipped, 0u);  // reported again, not hidden by a remembered pack
}

TEST_F(RefreshTest, PatchChunksInRememberedPacksKeepTheirBases) {
  // Format 3: a partly changed block is a patch on its parent's chunk, holding a reference on it.
  std::string v = random_bytes(8 * kBs, 1);
  put("a", v);
  v[2 * kBs + 100] ^= 1;
  uint64_t patches = 0;
  put_changes("a", v, &patches);
  ASSERT_GT(patches, 0u);
  (void)refresh();
  reopen();
  v[5 * kBs + 7] ^= 1;
  const RevisionRecord r = put_changes("a", v, &patches);
  ASSERT_GT(patches, 0u);
  const auto st = refresh();
  EXPECT_EQ(st.packs_reused, 2u);
  // The new pack is read whole; its patch is checked against its base (one chunk of the first
  // pack); the remembered patch pack is not opened at all.
  const auto packs = objects_->list("data/");
  ASSERT_EQ(packs.size(), 3u);
  EXPECT_EQ(objects_->opened.count(packs[2]), 1u);
  EXPECT_EQ(objects_->opened.count(packs[1]), 0u) << "a remembered pack of patches was read again";
  reopen();
  EXPECT_EQ(read(*store_->revision(r.id)), v);
  expect_same_as_full_rebuild();
}

TEST(PackIdentities, RoundTripAndRefusals) {
  const PackIdentities ids{{1, "v17/100"}, {0x2a, "v9/4096"}};
  const std::string text = encode_pack_identities("0123456789abcdef", ids);
  EXPECT_EQ(text, "rbdvault pack identities 1 0123456789abcdef\n00000001 v17/100\n0000002a v9/4096\n");
  EXPECT_EQ(parse_pack_identities(text, "0123456789abcdef"), ids);
  EXPECT_FALSE(parse_pack_identities(text, "fedcba9876543210"));  // another store's
  EXPECT_FALSE(parse_pack_identities(text.substr(0, text.size() - 1), "0123456789abcdef"));  // torn
  const std::string head = "rbdvault pack identities 1 0123456789abcdef\n";
  EXPECT_FALSE(parse_pack_identities(head + "00000002 a\n00000001 b\n", "0123456789abcdef"));  // order
  EXPECT_FALSE(parse_pack_identities(head + "00000001 a\n00000001 b\n", "0123456789abcdef"));  // twice
  EXPECT_FALSE(parse_pack_identities(head + "0000000G a\n", "0123456789abcdef"));
  EXPECT_FALSE(parse_pack_identities(head + "00000001 " + std::string(65, 'a') + "\n", "0123456789abcdef"));
  EXPECT_FALSE(parse_pack_identities(head + "00000001 a b\n", "0123456789abcdef"));
  EXPECT_EQ(parse_pack_identities(head, "0123456789abcdef"), PackIdentities{});
}

}  // namespace
}  // namespace rbdvault::store::testing
