#include "agent/status_page.h"

#include <cstdio>
#include <ctime>

#include "view/presentation.h"

namespace rbdvault::agent {
namespace {

std::string esc(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string time_text(int64_t t) {
  if (t == 0) return "never";
  std::time_t tt = static_cast<std::time_t>(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%SZ", &tm);
  return buf;
}

std::string age_text(int64_t s) {
  if (s < 0) return "-";
  if (s < 120) return std::to_string(s) + "s";
  if (s < 7200) return std::to_string(s / 60) + "m";
  if (s < 172800) return std::to_string(s / 3600) + "h";
  return std::to_string(s / 86400) + "d";
}

}  // namespace

std::string status_page(const std::vector<ImageStatus>& images, int64_t now) {
  std::string h;
  h += "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
       "<meta http-equiv=\"refresh\" content=\"60\"><title>rbdvault status</title><style>"
       "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
       "th,td{padding:.3em .8em;border-bottom:1px solid #ccc;text-align:left}td.n{text-align:right}"
       ".ok{color:#070}.failed{color:#b00;font-weight:bold}</style></head><body>\n"
       "<h1>rbdvault status</h1>\n<p>" + std::to_string(images.size()) + " images, as of " + time_text(now) +
       "</p>\n<table id=\"images\">\n<tr><th>Image</th><th>Last backup</th><th>Age</th><th>Result</th>"
       "<th>Revisions</th><th>Size</th><th>Stored</th><th>Consistency</th><th>Last error</th></tr>\n";
  for (const auto& s : images) {
    const std::string result = s.running ? "running" : s.last_result.empty() ? "-" : s.last_result;
    h += "<tr class=\"image\"><td class=\"name\">" + esc(s.image) + "</td><td>" + time_text(s.last_success) +
         "</td><td>" + age_text(s.last_success ? now - s.last_success : -1) + "</td><td class=\"result " +
         esc(s.last_result) + "\">" + esc(result) + "</td><td class=\"n revisions\">" + std::to_string(s.revisions) +
         "</td><td class=\"n\">" + view::human_size(s.size) + "</td><td class=\"n\">" + view::human_size(s.stored_bytes) +
         "</td><td>" + esc(s.consistency.empty() ? "-" : s.consistency) + (s.verify_failed ? ", differs from snapshot" : "") +
         "</td><td>" + esc(s.last_error) + "</td></tr>\n";
  }
  h += "</table>\n<p>Revisions as JSON: <a href=\"/v1/images\">/v1/images</a></p>\n</body></html>\n";
  return h;
}

}  // namespace rbdvault::agent
