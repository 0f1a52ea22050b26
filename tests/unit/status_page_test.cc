// The status page of `serve` (agent/status_page.h): what it shows and that names are escaped.
#include <gtest/gtest.h>

#include "agent/status_page.h"

namespace rbdvault::agent {
namespace {

TEST(StatusPage, ShowsEveryImageAndEscapesNames) {
  ImageStatus a;
  a.image = "rbd/vm-101";
  a.revisions = 7;
  a.size = 3ull << 30;
  a.last_success = 1796601600;  // 2026-12-07T00:00:00Z
  a.last_result = "ok";
  ImageStatus b;
  b.image = "rbd/<script>alert(1)</script>";
  b.last_result = "failed";
  b.last_error = "cluster \"down\" & out";
  const std::string page = status_page({a, b}, a.last_success + 3600);
  EXPECT_NE(page.find("<td class=\"name\">rbd/vm-101</td>"), std::string::npos);
  EXPECT_NE(page.find("<td class=\"n revisions\">7</td>"), std::string::npos);
  EXPECT_NE(page.find("3.0 GiB"), std::string::npos);
  EXPECT_NE(page.find("2026-12-07 00:00:00Z"), std::string::npos);
  EXPECT_NE(page.find(">60m<"), std::string::npos);
  EXPECT_EQ(page.find("<script>"), std::string::npos);
  EXPECT_NE(page.find("rbd/&lt;script&gt;alert(1)&lt;/script&gt;"), std::string::npos);
  EXPECT_NE(page.find("cluster &quot;down&quot; &amp; out"), std::string::npos);
  EXPECT_NE(page.find("never"), std::string::npos);  // b has no revision
  EXPECT_EQ(page.find("http://"), std::string::npos);  // no external assets
  EXPECT_EQ(page.find("https://"), std::string::npos);
}

}  // namespace
}  // namespace rbdvault::agent
