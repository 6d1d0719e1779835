#include "bench_util.hpp"

#include <algorithm>
#include <climits>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string_view>

#include <unistd.h>

#include "harness.hpp"

namespace fs = std::filesystem;

namespace policyd::bench {

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  // nearest rank: the smallest value with at least p% of the values at or below it
  auto rank = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size())));
  return v[std::min(v.size(), std::max<size_t>(rank, 1)) - 1];
}

nlohmann::json summary(const std::vector<double>& v, bool with_p99) {
  nlohmann::json j{{"median", median(v)},
                   {"min", v.empty() ? 0 : *std::min_element(v.begin(), v.end())},
                   {"max", v.empty() ? 0 : *std::max_element(v.begin(), v.end())},
                   {"n", v.size()},
                   {"values", v}};
  if (with_p99) j["p99"] = percentile(v, 99);
  return j;
}

ProcMemory proc_memory(pid_t pid) {
  ProcMemory m;
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    auto value = [&line] { return std::strtoull(line.c_str() + line.find(':') + 1, nullptr, 10); };
    if (line.rfind("VmRSS:", 0) == 0) m.rss_kib = value();
    if (line.rfind("VmHWM:", 0) == 0) m.hwm_kib = value();
  }
  return m;
}

BpfMemory bpf_memory(pid_t pid) {
  BpfMemory b;
  std::map<uint32_t, uint64_t> maps, progs;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/proc/" + std::to_string(pid) + "/fdinfo", ec)) {
    std::ifstream in(e.path());
    uint64_t memlock = 0;
    long map_id = -1, prog_id = -1;
    for (std::string line; std::getline(in, line);) {
      auto value = [&line] { return std::strtoull(line.c_str() + line.find(':') + 1, nullptr, 10); };
      if (line.rfind("memlock:", 0) == 0) memlock = value();
      if (line.rfind("map_id:", 0) == 0) map_id = static_cast<long>(value());
      if (line.rfind("prog_id:", 0) == 0) prog_id = static_cast<long>(value());
    }
    if (map_id >= 0) maps[static_cast<uint32_t>(map_id)] = memlock;
    else if (prog_id >= 0) progs[static_cast<uint32_t>(prog_id)] = memlock;
  }
  for (const auto& [id, bytes] : maps) {
    b.map_bytes += bytes;
    b.map_ids.emplace_back(id, bytes);
  }
  for (const auto& [id, bytes] : progs) b.prog_bytes += bytes;
  b.maps = static_cast<int>(maps.size());
  b.progs = static_cast<int>(progs.size());
  return b;
}

pid_t find_process_with_arg(const std::string& arg) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/proc", ec)) {
    const std::string name = e.path().filename();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream in(e.path() / "cmdline", std::ios::binary);
    std::string cmdline((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::istringstream args(cmdline);
    for (std::string a; std::getline(args, a, '\0');)
      if (a == arg) return static_cast<pid_t>(std::stol(name));
  }
  return -1;
}

bool write_json(const std::string& path, const nlohmann::json& j) {
  std::ofstream out(path, std::ios::trunc);
  out << j.dump(1) << "\n";
  return static_cast<bool>(out.flush());
}

}  // namespace policyd::bench
