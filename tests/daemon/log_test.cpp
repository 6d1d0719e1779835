// The daemon's log formats: --log-format json writes one valid JSON object per line whatever
// the message holds (quotes, backslashes, newlines, control bytes, bytes that are not UTF-8);
// text keeps the readable pattern; bad values are refused with what was expected.
#include <cstdio>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "daemon/log.hpp"

namespace {

// Everything the loggers wrote to a temporary file, split in lines.
struct Captured {
  std::FILE* file = std::tmpfile();
  ~Captured() {
    spdlog::drop_all();  // the loggers hold `file`
    std::fclose(file);
  }
  std::vector<std::string> lines() const {
    std::fflush(file);
    std::rewind(file);
    std::vector<std::string> out;
    std::string cur;
    for (int c; (c = std::fgetc(file)) != EOF;) {
      if (c == '\n') {
        out.push_back(cur);
        cur.clear();
      } else {
        cur.push_back(static_cast<char>(c));
      }
    }
    if (!cur.empty()) out.push_back(cur);  // a line without its newline: reported as such
    return out;
  }
};

}  // namespace

TEST_CASE("--log-format json: one valid object per line, whatever the message holds", "[log]") {
  Captured cap;
  std::string err;
  REQUIRE(policyd::setup_logging("debug", "json", &err, cap.file));
  const std::string nasty = "policy.yaml:3:7: expected \"allow\" or 'deny', got \\x\n  second line\ttab \x01 end";
  const std::string not_utf8 = std::string("host=caf\xe9") + "\xff\xfe";
  spdlog::get("config")->error("{}", nasty);
  spdlog::get("chain")->info("{}", not_utf8);
  spdlog::get("main")->debug("plain");
  spdlog::get("main")->trace("below the level");

  auto lines = cap.lines();
  REQUIRE(lines.size() == 3);  // the newline inside the message did not split the record
  std::vector<nlohmann::json> recs;
  for (const auto& l : lines) {
    INFO(l);
    recs.push_back(nlohmann::json::parse(l));  // throws (fails) on invalid JSON
  }
  CHECK(recs[0]["level"] == "error");
  CHECK(recs[0]["logger"] == "config");
  CHECK(recs[0]["msg"] == nasty);
  CHECK(recs[1]["logger"] == "chain");
  CHECK(recs[1]["level"] == "info");
  CHECK(recs[1]["msg"].get<std::string>().rfind("host=caf", 0) == 0);  // invalid bytes replaced, rest kept
  CHECK(recs[2]["msg"] == "plain");
  for (const auto& r : recs) {
    const std::string t = r["time"];
    CHECK(t.size() == 23);  // 2026-11-24T00:35:49.901
    CHECK(t[10] == 'T');
  }
}

TEST_CASE("--log-format text keeps the readable pattern; bad values are refused", "[log]") {
  {
    Captured cap;
    std::string err;
    REQUIRE(policyd::setup_logging("info", "text", &err, cap.file));
    spdlog::get("main")->warn("hello {}", 1);
    auto lines = cap.lines();
    REQUIRE(lines.size() == 1);
    CHECK(lines[0].find(" warning [main] hello 1") != std::string::npos);
  }
  std::string err;
  CHECK_FALSE(policyd::setup_logging("info", "xml", &err));
  CHECK(err == "unknown --log-format 'xml' (expected text or json)");
  CHECK_FALSE(policyd::setup_logging("loud", "text", &err));
  CHECK(err.find("unknown --log-level 'loud'") == 0);
}
