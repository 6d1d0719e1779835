// Golden error messages: every tests/config/invalid/NAME.yaml starts with
// "# expect: LINE:COL: MESSAGE" and must fail to load with exactly "FILE:LINE:COL: MESSAGE".
#include <algorithm>
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "config/loader.hpp"

using namespace policyd::config;

namespace {

const std::string kInvalidDir = std::string(POLICYD_SOURCE_DIR) + "/tests/config/invalid";
constexpr std::string_view kExpectPrefix = "# expect: ";

std::vector<std::string> invalid_files() {
  std::vector<std::string> files;
  for (const auto& entry : std::filesystem::directory_iterator(kInvalidDir)) {
    if (entry.path().extension() == ".yaml") files.push_back(entry.path().string());
  }
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace

TEST_CASE("invalid policies fail with their golden message", "[config][invalid]") {
  const std::vector<std::string> files = invalid_files();
  CHECK(files.size() >= 30);
  for (const std::string& file : files) {
    INFO(file);
    std::ifstream in(file);
    std::string first_line;
    std::getline(in, first_line);
    REQUIRE(first_line.rfind(kExpectPrefix, 0) == 0);
    const std::string expected = file + ":" + first_line.substr(kExpectPrefix.size());

    std::string actual = "(loaded without error)";
    try {
      load_policy_file(file);
    } catch (const PolicyError& e) {
      actual = e.what();
      CHECK(e.file() == file);
      CHECK(e.line() > 0);
      CHECK(e.column() > 0);
    }
    CHECK(actual == expected);
  }
}
