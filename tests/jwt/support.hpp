// What the jwt tests share: a temporary directory, files in it, and a provider with defaults.
#pragma once

#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "config/policy.hpp"

namespace policyd::jwt::test {

// A directory under $TMPDIR (or /tmp), removed with everything in it when destroyed.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string name = std::string(base && *base ? base : "/tmp") + "/jwt_tests.XXXXXX";
    if (::mkdtemp(name.data())) path_ = name;
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ignored;
    if (!path_.empty()) std::filesystem::remove_all(path_, ignored);
  }

  bool ok() const { return !path_.empty(); }
  std::string file(std::string_view name) const { return path_ + "/" + std::string(name); }

  // Writes `content` (bytes as given) to `name` in the directory; returns the path.
  std::string write(std::string_view name, std::string_view content) const {
    const std::string path = file(name);
    std::ofstream(path, std::ios::binary) << content;
    return path;
  }

 private:
  std::string path_;
};

inline config::JwtProvider provider(std::string issuer, std::vector<std::string> algorithms) {
  config::JwtProvider p;
  p.name = "main";
  p.issuer = std::move(issuer);
  p.audiences = {"api"};
  p.algorithms = std::move(algorithms);
  p.clock_skew = std::chrono::seconds(30);
  p.require_exp = true;
  return p;
}

}  // namespace policyd::jwt::test
