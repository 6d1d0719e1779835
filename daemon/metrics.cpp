#include "daemon/metrics.hpp"

#include <cmath>

#include <fmt/format.h>

namespace policyd::metrics {

namespace {

// Prometheus' default buckets: an apply takes milliseconds (nothing changed) to seconds
// (programs loaded and verified).
const std::vector<double> kApplyBuckets = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};

std::string number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  return fmt::format("{}", v);
}

std::string number(const std::variant<uint64_t, int64_t, double>& v) {
  if (const auto* u = std::get_if<uint64_t>(&v)) return fmt::format("{}", *u);
  if (const auto* i = std::get_if<int64_t>(&v)) return fmt::format("{}", *i);
  return number(std::get<double>(v));
}

// Label values: backslash, double quote and line feed escaped. HELP text: backslash and
// line feed only (the format leaves quotes in HELP alone).
void escape(std::string& out, std::string_view s, bool quotes) {
  for (char c : s) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '\n')
      out += "\\n";
    else if (c == '"' && quotes)
      out += "\\\"";
    else
      out += c;
  }
}

std::string_view type_name(Type t) {
  switch (t) {
    case Type::counter: return "counter";
    case Type::gauge: return "gauge";
    case Type::histogram: return "histogram";
  }
  return "untyped";
}

// Builds the family list in order; each helper adds one family.
class Builder {
 public:
  Family& family(std::string name, std::string help, Type type) {
    out_.push_back(Family{std::move(name), std::move(help), type, {}});
    return out_.back();
  }
  void counter(std::string name, std::string help, uint64_t value) {
    auto& f = family(std::move(name), std::move(help), Type::counter);
    f.samples.push_back(Sample{f.name, {}, value});
  }
  void gauge(std::string name, std::string help, std::variant<uint64_t, int64_t, double> value, Labels labels = {}) {
    auto& f = family(std::move(name), std::move(help), Type::gauge);
    f.samples.push_back(Sample{f.name, std::move(labels), value});
  }
  // One counter per name in `counts`, the name as the value of `label`.
  void counters(std::string name, std::string help, const std::string& label, const Counts& counts) {
    auto& f = family(std::move(name), std::move(help), Type::counter);
    for (const auto& [key, v] : counts) f.samples.push_back(Sample{f.name, {{label, key}}, v});
  }
  void histogram(std::string name, std::string help, const Histogram& h) {
    auto& f = family(std::move(name), std::move(help), Type::histogram);
    uint64_t cumulative = 0;
    for (size_t i = 0; i < h.counts().size(); ++i) {
      cumulative += h.counts()[i];
      std::string le = i < h.bounds().size() ? number(h.bounds()[i]) : "+Inf";
      f.samples.push_back(Sample{f.name + "_bucket", {{"le", le}}, cumulative});
    }
    f.samples.push_back(Sample{f.name + "_sum", {}, h.sum()});
    f.samples.push_back(Sample{f.name + "_count", {}, h.count()});
  }
  std::vector<Family> take() { return std::move(out_); }

 private:
  std::vector<Family> out_;
};

}  // namespace

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double value) {
  size_t i = 0;
  while (i < bounds_.size() && value > bounds_[i]) ++i;  // le: the bound itself is inside
  ++counts_[i];
  sum_ += value;
  ++count_;
}

std::string_view apply_result_name(ApplyResult r) {
  switch (r) {
    case ApplyResult::ok: return "ok";
    case ApplyResult::invalid: return "invalid";
    case ApplyResult::refused: return "refused";
  }
  return "unknown";
}

Applies::Applies() : durations_(kApplyBuckets) {}

void Applies::record(ApplyResult result, double seconds) {
  ++counts_[static_cast<size_t>(result)];
  durations_.observe(seconds);
}

bool valid_metric_name(std::string_view name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

bool valid_label_name(std::string_view name) {
  return valid_metric_name(name) && name.find(':') == std::string_view::npos && name.rfind("__", 0) != 0;
}

std::vector<Family> families(const Snapshot& s) {
  Builder b;
  b.gauge("policyd_build_info", "policyd's version (the value is always 1)", uint64_t{1},
          {{"version", s.version}});
  // the dataplane
  const auto& c = s.counters;
  b.counter("policyd_packets_total", "TCP segments to a listener seen at TC ingress", c.packets);
  b.counter("policyd_fast_path_total", "segments decided from the flow entry alone (no stage ran)", c.fast_path);
  b.counter("policyd_head_partial_total", "segments of an incomplete request head, passed while their bytes are kept",
            c.head_partial);
  b.counter("policyd_requests_total",
            "HTTP request heads parsed and judged by the chain (heads that get the fail mode are "
            "policyd_fail_mode_total)",
            c.requests);
  b.counter("policyd_handshakes_total",
            "SYNs of new connections to a listener (kept apart until the handshake completes, so that SYNs "
            "never evict established connections)",
            c.syn_new);
  b.counter("policyd_flows_created_total",
            "flow table entries created: handshakes completed (far fewer than policyd_handshakes_total: a SYN "
            "flood, or a scan)",
            c.flows_new);
  b.counter("policyd_egress_client_side_total",
            "packets leaving toward a client that came in on the client's side, so not the server's: policyd's own "
            "replies, and spoofed server packets routed back; they tell the gateway nothing of the server",
            c.egress_client_side);
  b.counter("policyd_handshakes_refused_total",
            "handshakes the server answered with no SYN-ACK (a challenge ACK on a connection it still has, a RST)",
            c.syn_refused);
  b.counter("policyd_fail_open_total", "fail-mode events let through (fail_mode: open)", c.fail_open);
  b.counter("policyd_truncated_total", "segments cut at a judged request boundary", c.truncated);
  b.counter("policyd_generation_mismatch_total",
            "packets that found their generation's half refilled under them (stays 0)", c.generation_mismatch);
  b.counters("policyd_verdicts_total", "decisions taken, by action", "action", s.verdicts);
  b.counters("policyd_stage_runs_total", "stage program runs (the entry program's are policyd_packets_total)", "stage",
             s.stages);
  if (s.bpf_stats) {  // only with --bpf-stats: without it the kernel counts nothing
    b.counter("policyd_chain_runs_total", "runs of the chain at TC ingress as the kernel counts them (--bpf-stats)",
              s.chain_runs);
    auto& f = b.family("policyd_chain_run_seconds_total",
                       "CPU time the kernel measured in the chain, every stage it reached included (--bpf-stats)",
                       Type::counter);
    f.samples.push_back(Sample{f.name, {}, static_cast<double>(s.chain_ns) / 1e9});
  }
  b.counter("policyd_quic_denied_total", "UDP datagrams to a TLS listener with quic: deny, dropped", c.quic_denied);
  b.counter("policyd_upgraded_connections_total",
            "HTTP connections the server switched to another protocol (101 to an Upgrade: WebSocket, h2c); "
            "their later bytes are not parsed",
            c.upgraded);
  b.counters("policyd_ignored_segments_total",
             "listener segments the server's TCP would discard (bad checksum, TTL expiring here, ...), dropped "
             "without being judged",
             "reason", s.ignored);
  b.counters("policyd_fail_mode_total", "requests or connections that could not be judged with certainty, by reason",
             "reason", s.fail_mode);
  {
    auto& f = b.family("policyd_rule_hits_total",
                       "requests (TLS: ClientHellos) matched by each rule of the active generation; "
                       "starts from 0 when a generation becomes active",
                       Type::counter);
    for (const auto& r : s.rules)
      f.samples.push_back(Sample{f.name,
                                 {{"rule", std::to_string(r.rule)}, {"host", r.host}, {"path", r.path},
                                  {"action", r.action}},
                                 r.hits});
  }
  const auto& rl = s.ratelimit;
  b.counters("policyd_ratelimit_requests_total", "requests through the rate-limit stage: allowed drew a token, "
             "limited was over its limit (429 or drop)",
             "result", {{"allowed", rl.allowed}, {"limited", rl.limited}});
  {
    auto& f = b.family("policyd_ratelimit_limit_requests_total",
                       "requests per rate limit of the active generation (starts from 0 when a generation "
                       "becomes active)",
                       Type::counter);
    for (const auto& l : rl.limits) {
      f.samples.push_back(Sample{f.name, {{"limit", l.name}, {"result", "allowed"}}, l.allowed});
      f.samples.push_back(Sample{f.name, {{"limit", l.name}, {"result", "limited"}}, l.limited});
    }
  }
  b.counter("policyd_ratelimit_shared_bucket_total",
            "requests that drew from one of their limit's shared buckets (its share of the bucket table was full)", rl.shared_bucket);
  const auto& j = s.jwt;
  b.counters("policyd_jwt_tokens_total", "JWTs judged: valid, or the reason they were refused", "result", j.tokens);
  b.counter("policyd_jwt_cache_hits_total", "JWT verdicts taken from the verified-token cache", j.cache_hits);
  b.counter("policyd_jwt_hmac_verified_total", "HS256/384/512 signatures verified in the dataplane", j.hmac_verified);
  b.counter("policyd_jwt_sent_to_daemon_total", "tokens the dataplane sent to the daemon to verify",
            j.sent_to_daemon);
  b.counter("policyd_jwt_send_failed_total", "tokens the dataplane could not send (ring buffer full)", j.send_failed);
  b.counter("policyd_jwt_daemon_received_total", "tokens the daemon received to verify", j.daemon_received);
  b.counters("policyd_jwt_daemon_answers_total",
             "the daemon's answers: valid signature, invalid, or stale (its provider changed since)", "result",
             {{"valid", j.daemon_valid}, {"invalid", j.daemon_invalid}, {"stale", j.daemon_stale}});
  b.counter("policyd_jwt_daemon_dropped_total",
            "tokens the daemon did not verify: over its queue's bounds (per client, or in all)", j.daemon_dropped);
  b.gauge("policyd_jwt_daemon_queue", "tokens waiting for a verifying thread now", j.daemon_queued);
  b.counters("policyd_events_total",
             "decision events: sent to the daemon, suppressed (over the event rate), lost (ring buffer full)",
             "result", {{"sent", s.events.sent}, {"suppressed", s.events.suppressed}, {"lost", s.events.lost}});
  b.counter("policyd_events_received_total", "decision events the daemon read", s.events.received);
  b.counter("policyd_events_follower_drops_total",
            "events not written to a `policyctl events --follow` that was not reading", s.events.follower_drops);
  b.gauge("policyd_event_followers", "`policyctl events --follow` connections now", s.events.followers);
  if (s.flows.entries)
    b.gauge("policyd_flows", "entries in the flow table (connections seen, until the LRU evicts them)",
            *s.flows.entries);
  b.gauge("policyd_flows_max", "size of the flow table (limits.max_flows at load)", s.flows.max);
  // the control plane
  b.gauge("policyd_generation", "the active policy generation", uint64_t{s.generation});
  b.gauge("policyd_last_change_timestamp_seconds", "unix time the active generation was last changed",
          int64_t{s.applied_at});
  b.counters("policyd_applies_total",
             "applies (policyctl apply, reload, SIGHUP, file change, the first at start) by result: ok, invalid "
             "(policy refused by validation or compilation), refused (kernel or preflight)",
             "result",
             {{"ok", s.applies.count(ApplyResult::ok)},
              {"invalid", s.applies.count(ApplyResult::invalid)},
              {"refused", s.applies.count(ApplyResult::refused)}});
  b.histogram("policyd_apply_duration_seconds", "how long applies took, whatever their result",
              s.applies.durations());
  b.counters("policyd_interface_changes_total",
             "interfaces attached after the start (appeared or renamed into the globs), re-attached (policyd's "
             "filter or qdisc removed by someone else), forgotten (went away)",
             "change",
             {{"attached", s.links.attached}, {"reattached", s.links.reattached}, {"forgotten", s.links.forgotten}});
  {
    auto& f = b.family("policyd_interface_attached",
                       "1 if policyd's filters are on the interface's TC ingress and egress now, else 0 "
                       "(interfaces the policy names and those the chain was attached to)",
                       Type::gauge);
    for (const auto& i : s.interfaces)
      f.samples.push_back(Sample{f.name,
                                 {{"interface", i.name}, {"ifindex", std::to_string(i.ifindex)}},
                                 uint64_t{i.attached ? 1u : 0u}});
  }
  return b.take();
}

std::string render(const std::vector<Family>& families) {
  std::string out;
  out.reserve(16384);
  for (const auto& f : families) {
    out += "# HELP ";
    out += f.name;
    out += ' ';
    escape(out, f.help, false);
    out += "\n# TYPE ";
    out += f.name;
    out += ' ';
    out += type_name(f.type);
    out += '\n';
    for (const auto& s : f.samples) {
      out += s.name;
      if (!s.labels.empty()) {
        out += '{';
        for (size_t i = 0; i < s.labels.size(); ++i) {
          if (i) out += ',';
          out += s.labels[i].first;
          out += "=\"";
          escape(out, s.labels[i].second, true);
          out += '"';
        }
        out += '}';
      }
      out += ' ';
      out += number(s.value);
      out += '\n';
    }
  }
  return out;
}

}  // namespace policyd::metrics
