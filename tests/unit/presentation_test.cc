// view/presentation: the one place sizes, times and revision JSON are formatted, for the command
// line and the HTTP API alike.
#include "view/presentation.h"

#include <gtest/gtest.h>

#include "view/http_api.h"
#include "view/store_view.h"

namespace rbdvault::view {
namespace {

TEST(Presentation, HumanSizesUseBinaryUnits) {
  EXPECT_EQ(human_size(0), "0 B");
  EXPECT_EQ(human_size(1023), "1023 B");
  EXPECT_EQ(human_size(1024), "1.0 KiB");
  EXPECT_EQ(human_size(uint64_t{3} << 29), "1.5 GiB");
  EXPECT_EQ(human_size(uint64_t{1} << 62), "4096.0 PiB");  // the largest unit stays
}

TEST(Presentation, TimesAreUtcIso8601) {
  EXPECT_EQ(iso_time(0), "1970-01-01T00:00:00Z");
  EXPECT_EQ(iso_time(1764095551), "2025-11-25T18:32:31Z");
}

store::RevisionRecord sample_revision() {
  store::RevisionRecord r;
  r.id = 7, r.pool = "rbd", r.name = "vm-1", r.created = 1764095551, r.size = 1 << 20, r.parent = 5;
  r.kind = store::RevisionKind::kDelta, r.bytes_read = 4096, r.bytes_stored = 100, r.new_chunks = 1;
  r.map_entries = 2, r.ceph_image_id = "abc", r.snap_name = "rbdvault-7", r.snap_id = 9;
  r.flags = store::kRevisionProtected | store::kRevisionGroup, r.group = "db", r.group_run = 3;
  return r;
}

TEST(Presentation, RevisionJsonNamesEveryField) {
  const auto j = revision_json(sample_revision());
  EXPECT_EQ(j["id"], 7);
  EXPECT_EQ(j["image"], "rbd/vm-1");
  EXPECT_EQ(j["created"], "2025-11-25T18:32:31Z");
  EXPECT_EQ(j["parent"], 5);
  EXPECT_EQ(j["kind"], "delta");
  EXPECT_EQ(j["snapshot_id"], 9);
  EXPECT_EQ(j["protected"], true);
  EXPECT_EQ(j["verify_failed"], false);
  EXPECT_EQ(j["group"]["name"], "db");
  EXPECT_EQ(j["group"]["run"], 3);
  store::RevisionRecord full = sample_revision();
  full.parent = 0, full.flags = 0;
  EXPECT_TRUE(revision_json(full)["parent"].is_null());
  EXPECT_TRUE(revision_json(full)["group"].is_null());
}

TEST(Presentation, HttpApiGivesTheSameRevisionObjectAsTheCommandLine) {
  Snapshot snap;
  snap.images[{"rbd", "vm-1"}] = {sample_revision()};
  const auto api = nlohmann::ordered_json::parse(image_json(snap, "rbd", "vm-1"));
  ASSERT_EQ(api["revisions"].size(), 1u);
  EXPECT_EQ(api["revisions"][0], revision_json(sample_revision()));
  const auto list = nlohmann::ordered_json::parse(images_json(snap));
  EXPECT_EQ(list[0]["latest"]["created"], "2025-11-25T18:32:31Z");
}

}  // namespace
}  // namespace rbdvault::view
