// docs/cookbook.md, held to the code: every recipe's ```yaml block is loaded and compiled as
// the daemon does it, passes the built `policyctl validate` with no warning, and every line of
// the ```checks block after it is sent through the real BPF programs (BPF_PROG_TEST_RUN) and
// must get the result the line names. The format of the checks is described in the cookbook
// itself ("How to read the checks"); a line this test cannot read is a failure, never skipped.
//
// Key files a recipe names (secret_file, jwks_file) are made here, in a temporary directory,
// by tests/bpf/cookbook_tokens.py (PyJWT), which also signs the recipe's tokens; the policy
// is applied with those paths put in place of the ones printed. Tokens the daemon verifies
// (RS*/ES*) are answered as the daemon does (chain::jwt_answer, as JwtService), then the held
// segment is sent again, as TCP would.
//
// COOKBOOK_MD=FILE checks another copy of the cookbook (to see a changed recipe fail).
#include <bpf/libbpf.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "chain/abi.hpp"
#include "chain/compile.hpp"
#include "chain/jwt_tables.hpp"
#include "config/loader.hpp"
#include "fixture.hpp"
#include "chain/jwt/jwt.hpp"

using namespace policyd;
using namespace policyd::test;
using nlohmann::json;

namespace {

// ---- the Markdown --------------------------------------------------------------------

struct Block {
  std::string text;
  int line = 0;  // the line of the opening fence
};

struct Recipe {
  std::string title;
  int line = 0;  // the heading's line
  Block yaml, checks;
};

std::string trim(std::string_view s) {
  const size_t b = s.find_first_not_of(" \t\r");
  if (b == std::string_view::npos) return "";
  const size_t e = s.find_last_not_of(" \t\r");
  return std::string(s.substr(b, e - b + 1));
}

// Recipes: a "## " section holding a ```yaml block and, after it, a ```checks block. Any other
// arrangement of those blocks is a problem (so no recipe goes unchecked).
std::vector<Recipe> parse_markdown(const std::string& text, const std::string& name,
                                   std::vector<std::string>& problems) {
  std::vector<Recipe> recipes;
  std::istringstream in(text);
  std::string line;
  int n = 0;
  std::string title;
  int title_line = 0;
  std::optional<Block> yaml, checks;
  bool in_fence = false;
  std::string fence_lang;
  Block current;
  auto where = [&](int at) { return name + ":" + std::to_string(at) + ": "; };
  auto close_section = [&] {
    if (yaml && !checks) problems.push_back(where(yaml->line) + "a ```yaml block without a ```checks block after it");
    if (yaml && checks) recipes.push_back({title, title_line, *yaml, *checks});
    yaml.reset();
    checks.reset();
  };
  while (std::getline(in, line)) {
    ++n;
    if (!in_fence && line.starts_with("```")) {
      in_fence = true;
      fence_lang = trim(line.substr(3));
      current = Block{"", n};
      continue;
    }
    if (in_fence && trim(line) == "```") {
      in_fence = false;
      if (fence_lang == "yaml") {
        if (yaml) problems.push_back(where(current.line) + "a second ```yaml block in section '" + title + "'");
        else yaml = current;
      } else if (fence_lang == "checks") {
        if (!yaml) problems.push_back(where(current.line) + "a ```checks block without a ```yaml block before it");
        else if (checks) problems.push_back(where(current.line) + "a second ```checks block in section '" + title + "'");
        else checks = current;
      }
      continue;
    }
    if (in_fence) {
      current.text += line + "\n";
      continue;
    }
    if (line.starts_with("## ")) {
      close_section();
      title = trim(line.substr(3));
      title_line = n;
    }
  }
  if (in_fence) problems.push_back(where(current.line) + "a code block that is never closed");
  close_section();
  return recipes;
}

// ---- the checks ---------------------------------------------------------------------

enum class Result { Allow, Forbidden, Unauthorized, TooMany, Deny, Drop, Reset, Pass, FailOpen, FailClosed };

const std::map<std::string, Result> kResults{
    {"allow", Result::Allow},       {"403", Result::Forbidden},        {"401", Result::Unauthorized},
    {"429", Result::TooMany},       {"deny", Result::Deny},            {"drop", Result::Drop},
    {"reset", Result::Reset},       {"pass", Result::Pass},            {"fail-open", Result::FailOpen},
    {"fail-closed", Result::FailClosed}};

struct TokenDef {
  std::string name, provider, alg;
  json claims = json::object();
  bool other_signer = false;
  int line = 0;
};

struct Check {
  int line = 0;
  std::string text;
  int repeat = 1;
  enum Kind { Http, Tls, Udp } kind = Http;
  std::string method, authority, target;  // HTTP
  std::optional<std::string> sni;         // TLS (nullopt: no server_name)
  uint16_t port = 0;
  std::string token;
  std::vector<std::string> headers;
  std::string from, to;
  Result result = Result::Allow;
  std::string result_word;
};

struct CheckBlock {
  std::vector<TokenDef> tokens;
  std::vector<Check> checks;
};

class CheckError : public std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Words split at blanks; "..." keeps blanks (the quotes are removed).
// The line without its comment: from a '#' that starts a word outside quotes.
std::string strip_comment(const std::string& s) {
  bool quoted = false;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '"') quoted = !quoted;
    if (s[i] == '#' && !quoted && (i == 0 || s[i - 1] == ' ' || s[i - 1] == '\t')) return trim(s.substr(0, i));
  }
  return trim(s);
}

std::vector<std::string> words(const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  bool quoted = false, any = false;
  for (char c : s) {
    if (c == '"') {
      quoted = !quoted;
      any = true;
    } else if (!quoted && (c == ' ' || c == '\t')) {
      if (any) out.push_back(cur);
      cur.clear();
      any = false;
    } else {
      cur += c;
      any = true;
    }
  }
  if (quoted) throw CheckError("unbalanced '\"'");
  if (any) out.push_back(cur);
  return out;
}

bool all_digits(const std::string& s) {
  return !s.empty() && s.find_first_not_of("0123456789") == std::string::npos;
}

uint16_t parse_port(const std::string& s) {
  if (!all_digits(s) || s.size() > 5 || std::stoul(s) == 0 || std::stoul(s) > 65535)
    throw CheckError("bad port '" + s + "'");
  return static_cast<uint16_t>(std::stoul(s));
}

// relative seconds: +N or -N
int64_t parse_relative(const std::string& key, const std::string& v) {
  if (v.size() < 2 || (v[0] != '+' && v[0] != '-') || !all_digits(v.substr(1)))
    throw CheckError(key + " takes +SECONDS or -SECONDS (from now), got '" + v + "'");
  const int64_t n = std::stoll(v.substr(1));
  return v[0] == '-' ? -n : n;
}

TokenDef parse_token(const std::string& rest, int line, const config::Policy& policy) {
  // token NAME: CLAIM=VALUE ...
  const size_t colon = rest.find(':');
  if (colon == std::string::npos) throw CheckError("a token line is 'token NAME: CLAIM=VALUE ...'");
  TokenDef t;
  t.line = line;
  t.name = trim(rest.substr(0, colon));
  if (t.name.empty() || t.name.find_first_of(" \t=") != std::string::npos)
    throw CheckError("bad token name '" + t.name + "'");
  std::optional<std::string> provider, alg, iss, aud;
  std::optional<int64_t> exp = 300, nbf;
  for (const std::string& w : words(rest.substr(colon + 1))) {
    const size_t eq = w.find('=');
    if (eq == std::string::npos || eq == 0) throw CheckError("expected CLAIM=VALUE, got '" + w + "'");
    const std::string k = w.substr(0, eq), v = w.substr(eq + 1);
    if (k == "provider") provider = v;
    else if (k == "alg") alg = v;
    else if (k == "signer") {
      if (v != "own" && v != "other") throw CheckError("signer is own or other, got '" + v + "'");
      t.other_signer = v == "other";
    } else if (k == "exp") {
      exp = v == "none" ? std::nullopt : std::optional<int64_t>(parse_relative(k, v));
    } else if (k == "nbf") {
      nbf = parse_relative(k, v);
    } else if (k == "iss") {
      iss = v;
    } else if (k == "aud") {
      aud = v;
    } else if (t.claims.contains(k)) {
      throw CheckError("claim '" + k + "' given twice");
    } else {
      t.claims[k] = v;
    }
  }
  if (!provider) {
    if (policy.jwt_providers.size() != 1)
      throw CheckError("the policy has " + std::to_string(policy.jwt_providers.size()) +
                       " jwt providers: name one with provider=NAME");
    provider = policy.jwt_providers.begin()->first;
  }
  const auto p = policy.jwt_providers.find(*provider);
  if (p == policy.jwt_providers.end()) throw CheckError("no jwt provider '" + *provider + "' in the policy");
  t.provider = *provider;
  t.alg = alg.value_or(p->second.algorithms.front());
  const int64_t now = std::time(nullptr);
  t.claims["iss"] = iss.value_or(p->second.issuer);
  t.claims["aud"] = aud.value_or(p->second.audiences.front());
  t.claims["iat"] = now;
  if (exp) t.claims["exp"] = now + *exp;
  if (nbf) t.claims["nbf"] = now + *nbf;
  return t;
}

Check parse_check(const std::string& line_text, int line) {
  Check c;
  c.line = line;
  c.text = line_text;
  const size_t arrow = line_text.find(" -> ");
  if (arrow == std::string::npos) throw CheckError("a check is 'REQUEST -> RESULT'");
  const std::string result = trim(line_text.substr(arrow + 4));
  const auto r = kResults.find(result);
  if (r == kResults.end()) {
    std::string known;
    for (const auto& [k, v] : kResults) known += (known.empty() ? "" : ", ") + k;
    throw CheckError("unknown result '" + result + "' (known: " + known + ")");
  }
  c.result = r->second;
  c.result_word = result;
  std::vector<std::string> w = words(line_text.substr(0, arrow));
  size_t i = 0;
  if (w.size() >= 2 && all_digits(w[0]) && w[1] == "x") {
    c.repeat = std::stoi(w[0]);
    if (c.repeat < 1 || c.repeat > 1000) throw CheckError("repeat count 1..1000");
    i = 2;
  }
  if (i >= w.size()) throw CheckError("no request before '->'");
  const std::string& kind = w[i++];
  if (kind == "TLS") {
    c.kind = Check::Tls;
    c.port = 443;
  } else if (kind == "UDP") {
    c.kind = Check::Udp;
    c.port = 443;
  } else {
    if (kind.empty() || kind.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZ") != std::string::npos)
      throw CheckError("expected TLS, UDP or an HTTP method, got '" + kind + "'");
    c.kind = Check::Http;
    c.method = kind;
    if (i >= w.size() || !w[i].starts_with("http://"))
      throw CheckError("an HTTP check needs a URL http://HOST[:PORT]/PATH after the method");
    const std::string url = w[i++].substr(7);
    const size_t slash = url.find('/');
    c.authority = url.substr(0, slash);
    c.target = slash == std::string::npos ? "/" : url.substr(slash);
    if (c.authority.empty()) throw CheckError("the URL has no host");
    c.port = 80;
    const size_t bracket = c.authority.rfind(']');
    const size_t colon = c.authority.rfind(':');
    if (colon != std::string::npos && (bracket == std::string::npos || colon > bracket))
      c.port = parse_port(c.authority.substr(colon + 1));
  }
  bool sni_given = false;
  for (; i < w.size(); ++i) {
    const std::string& opt = w[i];
    const size_t eq = opt.find('=');
    const std::string k = opt.substr(0, eq), v = eq == std::string::npos ? "" : opt.substr(eq + 1);
    if (c.kind == Check::Tls && opt == "no-sni") {
      c.sni.reset();
      sni_given = true;
    } else if (eq == std::string::npos || v.empty()) {
      throw CheckError("expected OPTION=VALUE, got '" + opt + "'");
    } else if (k == "from") {
      c.from = v;
    } else if (k == "to") {
      c.to = v;
    } else if (k == "port" && c.kind != Check::Http) {
      c.port = parse_port(v);
    } else if (k == "sni" && c.kind == Check::Tls) {
      c.sni = v;
      sni_given = true;
    } else if (k == "token" && c.kind == Check::Http) {
      c.token = v;
    } else if (k == "header" && c.kind == Check::Http) {
      if (v.find(':') == std::string::npos) throw CheckError("header=\"Name: value\", got '" + v + "'");
      c.headers.push_back(v);
    } else {
      throw CheckError("unknown option '" + k + "' for a " + kind + " check");
    }
  }
  if (c.kind == Check::Tls && !sni_given) throw CheckError("a TLS check needs sni=NAME or no-sni");
  const bool http = c.kind == Check::Http;
  if (!http && (c.result == Result::Forbidden || c.result == Result::Unauthorized || c.result == Result::TooMany))
    throw CheckError("'" + result + "' is an HTTP answer; a " + kind + " check is refused with deny, reset or drop");
  if (http && c.result == Result::Deny) throw CheckError("an HTTP request is denied with a 403: write 403");
  return c;
}

CheckBlock parse_checks(const Block& b, const std::string& name, const config::Policy& policy,
                        std::vector<std::string>& problems) {
  CheckBlock out;
  std::istringstream in(b.text);
  std::string line;
  int n = b.line;
  while (std::getline(in, line)) {
    ++n;
    const std::string t = strip_comment(line);
    if (t.empty()) continue;
    try {
      if (t.starts_with("token ")) {
        out.tokens.push_back(parse_token(t.substr(6), n, policy));
        for (size_t i = 0; i + 1 < out.tokens.size(); ++i)
          if (out.tokens[i].name == out.tokens.back().name) throw CheckError("token '" + out.tokens[i].name + "' defined twice");
      } else {
        out.checks.push_back(parse_check(t, n));
        const std::string& token = out.checks.back().token;
        bool known = token.empty();
        for (const auto& d : out.tokens) known = known || d.name == token;
        if (!known) throw CheckError("token '" + token + "' is not defined (above, with 'token NAME: ...')");
      }
    } catch (const CheckError& e) {
      problems.push_back(name + ":" + std::to_string(n) + ": " + e.what() + "\n    " + t);
    }
  }
  return out;
}

// ---- processes ------------------------------------------------------------------------

// Runs argv; returns the exit status and stdout (stderr appended to *err).
int run(const std::vector<std::string>& argv, std::string& out, std::string& err) {
  const std::string errfile = std::filesystem::temp_directory_path() / ("cookbook-err." + std::to_string(getpid()));
  std::string cmd;
  for (const auto& a : argv) {
    std::string q = "'";
    for (char c : a) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
    cmd += q + "' ";
  }
  cmd += "2>'" + errfile + "'";
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) throw std::runtime_error("popen: " + cmd);
  char buf[4096];
  size_t got;
  while ((got = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, got);
  const int status = pclose(p);
  std::ifstream e(errfile);
  err.append(std::istreambuf_iterator<char>(e), {});
  std::filesystem::remove(errfile);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read " + path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

struct TempDir {
  std::string path;
  TempDir() {
    char dir[] = "/tmp/pd-cookbook.XXXXXX";
    if (!mkdtemp(dir)) throw std::runtime_error("mkdtemp");
    path = dir;
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
};

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size()))
    s.replace(at, from.size(), to);
}

// ---- the daemon's side of RS*/ES* tokens ---------------------------------------------

struct Daemon {
  chain::Dataplane& dp;
  const config::Policy& policy;
  const chain::Tables& tables;
  std::map<std::string, jwt::Keys> keys;
  std::vector<pd_event_jwt> events;

  static int on_event(void* self, void* data, size_t size) {
    uint32_t type = 0;
    if (size >= sizeof type) std::memcpy(&type, data, sizeof type);
    if (type == PD_EV_JWT_VERIFY && size >= sizeof(pd_event_jwt))
      static_cast<Daemon*>(self)->events.push_back(*static_cast<pd_event_jwt*>(data));
    return 0;
  }

  // As JwtService::handle: every token in the ring buffer verified and answered.
  size_t answer_all() {
    events.clear();
    ring_buffer* rb = ring_buffer__new(dp.map_fd(policyd::abi::Map::events), &Daemon::on_event, this, nullptr);
    REQUIRE(rb);
    ring_buffer__consume(rb);
    ring_buffer__free(rb);
    for (const auto& ev : events) {
      const uint32_t index = ev.provider % PD_JWT_PROVIDERS;
      REQUIRE(index < tables.jwt.providers.size());
      const std::string& name = tables.jwt.providers[index];
      std::string_view token(reinterpret_cast<const char*>(ev.token), ev.token_len);
      auto v = chain::jwt_answer(token, policy.jwt_providers.at(name), keys.at(name), tables.jwt_claims,
                                 tables.config.hash_seed, static_cast<int64_t>(std::time(nullptr)));
      v.tail = ev.tail;
      REQUIRE(dp.put_jwt_answer(ev.key, v));
    }
    return events.size();
  }
};

// ---- packets -----------------------------------------------------------------------------

std::string describe(const Outcome& o) {
  std::string s = o.passed_unchanged() ? "passed"
                  : o.dropped()        ? "dropped"
                  : o.refused()        ? "refused"
                                       : "retval " + std::to_string(o.retval);
  for (unsigned a = 1; a < PD_ACT_MAX; ++a)
    if (o.verdict(a)) s += ", verdict " + std::string(abi::action_name(a));
  for (unsigned r = 1; r < PD_R_MAX; ++r)
    if (o.reason(r)) s += ", fail-mode reason " + std::string(abi::reason_name(r));
  if (o.counter(PD_C_FAIL_OPEN)) s += " (fail_mode open: passed)";
  for (unsigned j = 0; j < PD_J_MAX; ++j)
    if (o.counter(PD_C_JWT_BASE + j)) s += ", jwt " + std::string(jwt::reason_name(static_cast<pd_jwt_reason>(j)));
  if (o.counter(PD_C_RL_LIMITED)) s += ", over a rate limit";
  if (o.counter(PD_C_QUIC_DENIED)) s += ", quic denied";
  if (!o.counter(PD_C_PACKETS)) s += ", not on a listener";
  return s;
}

unsigned total_verdicts(const Outcome& o) {
  unsigned n = 0;
  for (unsigned a = 1; a < PD_ACT_MAX; ++a) n += static_cast<unsigned>(o.verdict(a));
  return n;
}

unsigned total_reasons(const Outcome& o) {
  unsigned n = 0;
  for (unsigned r = 1; r < PD_R_MAX; ++r) n += static_cast<unsigned>(o.reason(r));
  return n;
}

bool matches(const Outcome& o, const Check& c) {
  const bool no_fail = total_reasons(o) == 0;
  switch (c.result) {
    case Result::Allow:
      return o.passed_unchanged() && o.verdict(PD_ACT_ALLOW) == 1 && no_fail;
    case Result::Forbidden:
    case Result::Deny:
      return o.refused() && o.verdict(PD_ACT_DENY) == 1 && no_fail;
    case Result::Unauthorized:
      return o.refused() && o.verdict(PD_ACT_UNAUTH) == 1 && no_fail;
    case Result::TooMany:
      return o.refused() && o.verdict(PD_ACT_REJECT) == 1 && o.counter(PD_C_RL_LIMITED) == 1;
    case Result::Reset:
      return o.refused() && o.verdict(PD_ACT_RESET) == 1 && no_fail;
    case Result::Drop:
      if (c.kind == Check::Udp) return o.dropped() && o.counter(PD_C_QUIC_DENIED) == 1;
      return o.dropped() && o.verdict(PD_ACT_DROP) == 1 && no_fail;
    case Result::Pass:
      return o.passed_unchanged() && total_verdicts(o) == 0 && total_reasons(o) == 0 &&
             o.counter(PD_C_PACKETS) == 0 && o.counter(PD_C_QUIC_DENIED) == 0;
    case Result::FailOpen:
      return o.passed_unchanged() && o.counter(PD_C_FAIL_OPEN) == 1 && total_reasons(o) == 1;
    case Result::FailClosed:
      return !o.passed_unchanged() && !o.counter(PD_C_FAIL_OPEN) && total_reasons(o) == 1;
  }
  return false;
}

class Runner {
 public:
  Runner(Fixture& fx, Daemon& daemon, const std::map<std::string, std::string>& tokens, uint16_t& next_port)
      : fx_(fx), daemon_(daemon), tokens_(tokens), next_port_(next_port) {}

  Outcome once(const Check& c) {
    Packet p;
    const bool v6 = c.from.find(':') != std::string::npos || c.to.find(':') != std::string::npos;
    p.family = v6 ? 6 : 4;
    p.src = !c.from.empty() ? c.from : v6 ? "2001:db8:c::2" : "198.51.100.2";
    p.dst = !c.to.empty() ? c.to : v6 ? "2001:db8:5::2" : "192.0.2.2";
    if ((p.src.find(':') != std::string::npos) != (p.dst.find(':') != std::string::npos))
      throw CheckError("from= and to= must be of one address family");
    if (next_port_ == 65535) throw std::runtime_error("out of source ports");
    p.sport = next_port_++;
    p.dport = c.port;
    if (c.kind == Check::Udp) {
      p.proto = 17;
      p.payload = std::string("\xc0\x00\x00\x00\x01", 5) + std::string(1195, '\0');  // a QUIC Initial's start
      return fx_.run(p);
    }
    const uint32_t isn = 100000;
    Packet syn = p;
    syn.flags = kSyn;
    syn.seq = isn;
    syn.ack = 0;
    fx_.run(syn);
    p.seq = isn + 1;
    p.ack = 700001;
    const std::string data = c.kind == Check::Tls ? hello(c) : head(c);
    // a head longer than one segment arrives in several; each but the last passes while kept
    constexpr size_t kMss = 1400;
    size_t at = 0;
    for (; data.size() - at > kMss; at += kMss) {
      p.payload = data.substr(at, kMss);
      Outcome part = fx_.run(p);
      if (!part.passed_unchanged()) return part;
      p.seq += kMss;
    }
    p.payload = data.substr(at);
    Outcome o = fx_.run(p);
    if (o.dropped() && o.counter(PD_C_JWT_PUNTED) == 1) {
      // held for the daemon: it answers, and TCP sends the segment again
      if (daemon_.answer_all() != 1) throw std::runtime_error("the held token is not in the ring buffer");
      o = fx_.run(p);
    }
    return o;
  }

 private:
  std::string head(const Check& c) const {
    std::string h = c.method + " " + c.target + " HTTP/1.1\r\nHost: " + c.authority +
                    "\r\nUser-Agent: cookbook-test\r\nAccept: */*\r\n";
    if (!c.token.empty()) h += "Authorization: Bearer " + tokens_.at(c.token) + "\r\n";
    for (const auto& x : c.headers) h += x + "\r\n";
    if (c.method == "POST" || c.method == "PUT" || c.method == "PATCH") h += "Content-Length: 0\r\n";
    return h + "\r\n";
  }

  static std::string hello(const Check& c) {
    Hello h;
    h.sni = c.sni;
    return client_hello(h);
  }

  Fixture& fx_;
  Daemon& daemon_;
  const std::map<std::string, std::string>& tokens_;
  uint16_t& next_port_;
};

std::string cookbook_path() {
  if (const char* p = std::getenv("COOKBOOK_MD"); p && *p) return p;
  return std::string(POLICYD_TEST_SOURCE_DIR) + "/docs/cookbook.md";
}

// The recipe's position for messages: a loader error's line within the block, as a line of
// the Markdown file.
std::string policy_error(const config::PolicyError& e, const std::string& md, const Recipe& r) {
  if (e.line() <= 0) return md + ":" + std::to_string(r.yaml.line) + ": " + e.message();
  return md + ":" + std::to_string(r.yaml.line + e.line()) + ":" + std::to_string(e.column()) + ": " + e.message();
}

// One loaded dataplane; each recipe is applied to it as the next generation, as the daemon
// applies a changed policy. Flows do not carry over (every connection has a source port of
// its own), nor do JWT cache entries (every recipe has keys of its own). Rate-limit buckets
// carry over when a limit keeps its name and key: a recipe with such a limit gets a freshly
// loaded dataplane instead.
struct Gateway {
  std::unique_ptr<Fixture> fx;
  std::set<std::string> limits;
  uint16_t next_port = 20000;

  void apply(const std::string& yaml, const config::Policy& policy) {
    bool fresh = !fx;
    for (const auto& [name, limit] : policy.ratelimits)
      fresh = !limits.insert(name + "/" + std::string(config::to_string(limit.key))).second || fresh;
    if (fresh) {
      fx.reset();
      fx = std::make_unique<Fixture>(yaml);
    } else {
      fx->apply(yaml);
    }
  }
};

// Checks one recipe: every problem is a failed CHECK naming the line of the Markdown file.
void check_recipe(const Recipe& r, const std::string& md, Gateway& gw, size_t& checks_run) {
  INFO("recipe '" << r.title << "' (" << md << ":" << r.line << ")");
  // 1. The policy as printed loads (key files are not read by the loader).
  config::Policy printed;
  try {
    printed = config::load_policy_string(r.yaml.text, md);
  } catch (const config::PolicyError& e) {
    FAIL_CHECK("the recipe's policy does not load: " << policy_error(e, md, r));
    return;
  }
  // 2. Its key files are made in a temporary directory, and the policy names them there.
  TempDir dir;
  std::string yaml = r.yaml.text;
  json spec{{"providers", json::object()}, {"tokens", json::array()}};
  for (const auto& [name, p] : printed.jwt_providers) {
    json entry{{"algorithms", p.algorithms}};
    for (const auto& [key, file] : {std::pair{"secret_file", p.secret_file}, std::pair{"jwks_file", p.jwks_file}}) {
      if (!file) continue;
      const std::string here = dir.path + "/" + name + "-" + std::filesystem::path(*file).filename().string();
      if (yaml.find(*file) == std::string::npos) {
        FAIL_CHECK("provider '" << name << "': " << key << " " << *file << " must be an absolute path, written once in the recipe");
        return;
      }
      replace_all(yaml, *file, here);
      entry[key] = here;
    }
    spec["providers"][name] = entry;
  }
  std::vector<std::string> problems;
  CheckBlock block = parse_checks(r.checks, md, printed, problems);
  for (const auto& p : problems) FAIL_CHECK(p);
  if (!problems.empty()) return;
  CHECK(block.checks.size() >= 3);
  for (const auto& t : block.tokens)
    spec["tokens"].push_back(
        {{"name", t.name}, {"provider", t.provider}, {"alg", t.alg}, {"claims", t.claims},
         {"signer", t.other_signer ? "other" : "own"}});
  std::map<std::string, std::string> tokens;
  if (!printed.jwt_providers.empty()) {
    const std::string spec_file = dir.path + "/spec.json";
    std::ofstream(spec_file) << spec.dump();
    std::string out, err;
    const int rc = run({BPF_TESTS_PYTHON, COOKBOOK_TOKENS, spec_file}, out, err);
    if (rc != 0) {
      FAIL_CHECK("cookbook_tokens.py failed (" << rc << "): " << err);
      return;
    }
    tokens = json::parse(out).at("tokens").get<std::map<std::string, std::string>>();
  }
  const std::string policy_file = dir.path + "/policy.yaml";
  std::ofstream(policy_file) << yaml;

  // 3. policyctl validate (the built binary): valid, with no warning.
  {
    std::string out, err;
    const int rc = run({COOKBOOK_POLICYCTL, "-o", "json", "validate", policy_file}, out, err);
    INFO("policyctl validate: exit " << rc << "\n" << out << err);
    CHECK(rc == 0);
    json v = json::parse(out, nullptr, false);
    CHECK((v.is_object() && v.value("valid", false)));
    if (v.is_object() && v.contains("warnings")) CHECK(v["warnings"].empty());
    if (rc != 0) return;
  }

  // 4. Loaded and compiled as the daemon does; committed to the real dataplane.
  config::Policy policy = config::load_policy_file(policy_file);
  auto material = chain::read_key_material(policy);
  REQUIRE(material);
  std::map<std::string, jwt::Keys> keys;
  for (const auto& [name, p] : policy.jwt_providers) {
    auto k = chain::provider_keys(*material, name, p);
    REQUIRE(k);
    keys.emplace(name, std::move(*k));
  }
  gw.apply(yaml, policy);
  Fixture& fx = *gw.fx;
  auto tables = chain::compile(policy, fx.dp().active_gen(), fx.dp().hash_seed(), &*material);
  REQUIRE(tables);
  Daemon daemon{fx.dp(), policy, *tables, std::move(keys), {}};
  Runner runner(fx, daemon, tokens, gw.next_port);

  // 5. Every check, in order (rate-limit buckets carry over from line to line).
  const auto started = std::chrono::steady_clock::now();
  for (const Check& c : block.checks) {
    for (int i = 0; i < c.repeat; ++i) {
      Outcome o;
      try {
        o = runner.once(c);
      } catch (const CheckError& e) {
        FAIL_CHECK(md << ":" << c.line << ": " << e.what() << "\n    " << c.text);
        break;
      }
      ++checks_run;
      if (!matches(o, c)) {
        const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
        FAIL_CHECK(md << ":" << c.line << ": " << c.text << "\n    request " << (i + 1) << " of " << c.repeat
                      << ": expected " << c.result_word << ", got: " << describe(o) << "\n    ("
                      << secs << " s since this recipe's first check)");
        break;
      }
    }
  }
}

}  // namespace

TEST_CASE("every recipe of docs/cookbook.md loads, validates and does what its checks say", "[cookbook]") {
  const std::string md = cookbook_path();
  const std::string text = slurp(md);
  std::vector<std::string> problems;
  const std::vector<Recipe> recipes = parse_markdown(text, md, problems);
  for (const auto& p : problems) FAIL_CHECK(p);
  CHECK(recipes.size() >= 10);
  size_t checks_run = 0;
  Gateway gw;
  for (const Recipe& r : recipes) check_recipe(r, md, gw, checks_run);
  WARN(recipes.size() << " recipes, " << checks_run << " requests and handshakes sent");
}
