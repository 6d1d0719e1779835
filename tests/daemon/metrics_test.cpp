// The metrics snapshot in the Prometheus text format: names, HELP/TYPE, label escaping,
// exact 64-bit counters, the apply histogram; and the whole output read back by
// prometheus_client's parser (tests/daemon/prom_parse.py), a reader that is not ours.
#include <cstdio>
#include <fstream>
#include <map>
#include <string>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "daemon/metrics.hpp"
#include "daemon/metrics_server.hpp"
#include "harness.hpp"

using namespace policyd::metrics;
using nlohmann::json;

namespace {

// A snapshot with something in every field, and label values that need escaping.
Snapshot sample_snapshot() {
  Snapshot s;
  s.version = "1.2.3";
  s.counters = {.packets = 40, .fast_path = 21, .head_partial = 2, .requests = 12, .flows_new = 14, .fail_open = 0,
                .truncated = 1, .generation_mismatch = 0};
  s.verdicts = {{"allow", 7}, {"deny", 5}, {"drop", 0}, {"reset", 0}, {"reject", 2}, {"unauth", 0}, {"hold", 0}};
  s.stages = {{"http", 14}, {"host", 12}, {"path", 12}, {"ratelimit", 5}, {"verdict", 14}};
  s.fail_mode = {{"head_too_large", 0}, {"multiple_host", 2}};
  s.rules = {{0, "app.example.com", "prefix /allowed/", "allow", 4},
             {1, "quote\"back\\slash\nnewline.example", "exact /a\"b", "deny", 3},
             {2, "*.example.com", "prefix /", "allow", UINT64_MAX}};
  s.ratelimit = {.allowed = 3, .limited = 2, .shared_bucket = 0, .limits = {{"per_client", 3, 2}}};
  s.jwt.tokens = {{"valid", 1}, {"missing", 2}};
  s.jwt.cache_hits = 5;
  s.jwt.daemon_received = 1;
  s.jwt.daemon_valid = 1;
  s.events = {.sent = 9, .suppressed = 1, .lost = 0, .received = 9, .follower_drops = 2, .followers = 1};
  s.flows = {.entries = 14, .max = 262144};
  s.generation = 2;
  s.applied_at = 1700000000;
  s.applies.record(ApplyResult::ok, 0.003);
  s.applies.record(ApplyResult::ok, 0.005);  // on a bound: inside it (le)
  s.applies.record(ApplyResult::invalid, 0.2);
  s.applies.record(ApplyResult::refused, 20);
  s.interfaces = {{"gw-c", 7, true}, {"eth1", 9, false}};
  return s;
}

bool has_line(const std::string& text, const std::string& line) {
  return text.find("\n" + line + "\n") != std::string::npos || text.rfind(line + "\n", 0) == 0;
}

// prom_parse.py (Debian's python3, which has python3-prometheus-client) on `text`: its exit
// status, its stdout (JSON) and stderr (the reason it refused).
struct Parsed {
  int status = -1;
  std::string out, err;
};
Parsed prom_parse(const std::string& text) {
  policyd::test::TempDir dir;
  std::ofstream(dir.file("metrics.prom")) << text;
  const std::string cmd = std::string("/usr/bin/python3 ") + POLICYD_SOURCE_DIR + "/tests/daemon/prom_parse.py " +
                          dir.file("metrics.prom") + " > " + dir.file("out") + " 2> " + dir.file("err");
  Parsed p;
  p.status = std::system(cmd.c_str());
  std::ifstream out(dir.file("out")), err(dir.file("err"));
  p.out.assign(std::istreambuf_iterator<char>(out), {});
  p.err.assign(std::istreambuf_iterator<char>(err), {});
  return p;
}

json parse_with_prometheus_client(const std::string& text) {
  auto p = prom_parse(text);
  INFO(p.err);
  REQUIRE(p.status == 0);
  return json::parse(p.out);
}

// (sample name, labels) -> value, from prom_parse.py's JSON.
std::map<std::pair<std::string, std::map<std::string, std::string>>, json> samples_of(const json& parsed) {
  std::map<std::pair<std::string, std::map<std::string, std::string>>, json> out;
  for (const auto& f : parsed["families"])
    for (const auto& s : f["samples"])
      out[{s["name"].get<std::string>(), s["labels"].get<std::map<std::string, std::string>>()}] = s["value"];
  return out;
}

}  // namespace

TEST_CASE("every family has HELP and TYPE, a valid name, and counters end in _total", "[metrics]") {
  const auto fams = families(sample_snapshot());
  const auto text = render(fams);
  REQUIRE(!fams.empty());
  for (const auto& f : fams) {
    INFO(f.name);
    CHECK(valid_metric_name(f.name));
    CHECK(f.name.rfind("policyd_", 0) == 0);
    CHECK(!f.help.empty());
    if (f.type == Type::counter) CHECK(f.name.size() > 6);
    if (f.type == Type::counter) CHECK(f.name.substr(f.name.size() - 6) == "_total");
    if (f.type != Type::counter) CHECK(f.name.find("_total") == std::string::npos);
    CHECK(text.find("# HELP " + f.name + " ") != std::string::npos);
    for (const auto& s : f.samples)
      for (const auto& [label, value] : s.labels) CHECK(valid_label_name(label));
  }
  CHECK(has_line(text, "# TYPE policyd_requests_total counter"));
  CHECK(has_line(text, "# TYPE policyd_flows gauge"));
  CHECK(has_line(text, "# TYPE policyd_apply_duration_seconds histogram"));
  CHECK(text.back() == '\n');
}

TEST_CASE("counters, labels and gauges render as the snapshot says", "[metrics]") {
  const auto text = exposition(sample_snapshot());
  INFO(text);
  CHECK(has_line(text, "policyd_build_info{version=\"1.2.3\"} 1"));
  CHECK(has_line(text, "policyd_requests_total 12"));
  CHECK(has_line(text, "policyd_packets_total 40"));
  CHECK(has_line(text, "policyd_verdicts_total{action=\"allow\"} 7"));
  CHECK(has_line(text, "policyd_verdicts_total{action=\"reject\"} 2"));
  CHECK(has_line(text, "policyd_stage_runs_total{stage=\"ratelimit\"} 5"));
  CHECK(has_line(text, "policyd_fail_mode_total{reason=\"multiple_host\"} 2"));
  CHECK(has_line(text, "policyd_rule_hits_total{rule=\"0\",host=\"app.example.com\",path=\"prefix /allowed/\","
                       "action=\"allow\"} 4"));
  CHECK(has_line(text, "policyd_ratelimit_limit_requests_total{limit=\"per_client\",result=\"limited\"} 2"));
  CHECK(has_line(text, "policyd_events_total{result=\"suppressed\"} 1"));
  CHECK(has_line(text, "policyd_events_follower_drops_total 2"));
  CHECK(has_line(text, "policyd_event_followers 1"));
  CHECK(has_line(text, "policyd_flows 14"));
  CHECK(has_line(text, "policyd_flows_max 262144"));
  CHECK(has_line(text, "policyd_generation 2"));
  CHECK(has_line(text, "policyd_applies_total{result=\"ok\"} 2"));
  CHECK(has_line(text, "policyd_applies_total{result=\"invalid\"} 1"));
  CHECK(has_line(text, "policyd_applies_total{result=\"refused\"} 1"));
  CHECK(has_line(text, "policyd_interface_attached{interface=\"gw-c\",ifindex=\"7\"} 1"));
  CHECK(has_line(text, "policyd_interface_attached{interface=\"eth1\",ifindex=\"9\"} 0"));
}

TEST_CASE("64-bit counters are exact, not rounded through a double", "[metrics]") {
  const auto text = exposition(sample_snapshot());
  CHECK(text.find("action=\"allow\"} 18446744073709551615\n") != std::string::npos);
}

TEST_CASE("label values escape backslash, double quote and line feed", "[metrics]") {
  const auto text = exposition(sample_snapshot());
  CHECK(text.find(R"(host="quote\"back\\slash\nnewline.example",path="exact /a\"b")") != std::string::npos);
  // no raw line feed inside a sample line: every line is a comment or name{...} value
  size_t start = 0;
  while (start < text.size()) {
    auto end = text.find('\n', start);
    auto line = text.substr(start, end - start);
    INFO(line);
    CHECK((line.rfind("# ", 0) == 0 || line.rfind("policyd_", 0) == 0));
    start = end + 1;
  }
}

TEST_CASE("the apply histogram: cumulative le buckets up to +Inf, _sum and _count", "[metrics]") {
  const auto text = exposition(sample_snapshot());
  INFO(text);
  CHECK(has_line(text, "policyd_apply_duration_seconds_bucket{le=\"0.005\"} 2"));
  CHECK(has_line(text, "policyd_apply_duration_seconds_bucket{le=\"0.1\"} 2"));
  CHECK(has_line(text, "policyd_apply_duration_seconds_bucket{le=\"0.25\"} 3"));
  CHECK(has_line(text, "policyd_apply_duration_seconds_bucket{le=\"10\"} 3"));
  CHECK(has_line(text, "policyd_apply_duration_seconds_bucket{le=\"+Inf\"} 4"));
  CHECK(has_line(text, "policyd_apply_duration_seconds_count 4"));
  CHECK(text.find("policyd_apply_duration_seconds_sum 20.208") != std::string::npos);
}

TEST_CASE("a flow table that could not be counted has no policyd_flows sample", "[metrics]") {
  auto s = sample_snapshot();
  s.flows.entries.reset();
  const auto text = exposition(s);
  CHECK(text.find("\npolicyd_flows ") == std::string::npos);
  CHECK(has_line(text, "policyd_flows_max 262144"));
}

TEST_CASE("prometheus_client's parser reads the exposition back as it was meant", "[metrics]") {
  const auto s = sample_snapshot();
  const auto parsed = parse_with_prometheus_client(exposition(s));
  const auto samples = samples_of(parsed);
  using L = std::map<std::string, std::string>;
  CHECK(samples.at({"policyd_requests_total", L{}}) == 12);
  CHECK(samples.at({"policyd_verdicts_total", L{{"action", "deny"}}}) == 5);
  // the escaped label values come back as the original strings
  CHECK(samples.at({"policyd_rule_hits_total", L{{"rule", "1"},
                                                 {"host", "quote\"back\\slash\nnewline.example"},
                                                 {"path", "exact /a\"b"},
                                                 {"action", "deny"}}}) == 3);
  CHECK(samples.at({"policyd_apply_duration_seconds_count", L{}}) == 4);
  CHECK(samples.at({"policyd_apply_duration_seconds_bucket", L{{"le", "+Inf"}}}) == 4);
  std::map<std::string, std::string> types;
  for (const auto& f : parsed["families"]) types[f["name"]] = f["type"];
  CHECK(types.at("policyd_requests") == "counter");  // the parser names counters without _total
  CHECK(types.at("policyd_flows") == "gauge");
  CHECK(types.at("policyd_apply_duration_seconds") == "histogram");
  CHECK(types.size() == families(s).size());
}

TEST_CASE("the parser check is not vacuous: a broken exposition fails it", "[metrics]") {
  auto p = prom_parse("# TYPE policyd_x_total counter\npolicyd_x_total{a=\"b\"c\"} 1\n");
  CHECK(p.status != 0);
  CHECK(p.err.find("parse error") != std::string::npos);
}

TEST_CASE("the metrics address: HOST:PORT, [IPV6]:PORT or off", "[metrics]") {
  using policyd::MetricsServer;
  auto v4 = MetricsServer::parse_address("127.0.0.1:9464");
  REQUIRE(v4);
  REQUIRE(v4.value());
  CHECK(v4.value()->address().to_string() == "127.0.0.1");
  CHECK(v4.value()->port() == 9464);
  auto v6 = MetricsServer::parse_address("[::1]:9100");
  REQUIRE(v6);
  REQUIRE(v6.value());
  CHECK(v6.value()->address().is_v6());
  CHECK(v6.value()->port() == 9100);
  for (const char* off : {"off", ""}) {
    auto r = MetricsServer::parse_address(off);
    REQUIRE(r);
    CHECK(!r.value());
  }
  for (const char* bad : {"127.0.0.1", "::1:9464", "[::1]9464", "localhost:9464", "127.0.0.1:", "127.0.0.1:65536",
                          "127.0.0.1:http", "[::1:9464"}) {
    auto r = MetricsServer::parse_address(bad);
    INFO(bad);
    REQUIRE(!r);
    CHECK(r.error().message.find(std::string("'") + bad + "'") != std::string::npos);
  }
}
