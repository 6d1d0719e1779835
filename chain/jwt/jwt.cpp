// Names, base64url, the Authorization value, parsing a compact JWS, and the checks of verify().
#include "chain/jwt/jwt.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <set>
#include <utility>

#include "chain/jwt/internal.hpp"

namespace policyd::jwt {

using nlohmann::json;

namespace {

constexpr std::array<std::pair<pd_jwt_alg, std::string_view>, 8> kAlgs{{
    {PD_ALG_HS256, "HS256"},
    {PD_ALG_HS384, "HS384"},
    {PD_ALG_HS512, "HS512"},
    {PD_ALG_RS256, "RS256"},
    {PD_ALG_RS384, "RS384"},
    {PD_ALG_RS512, "RS512"},
    {PD_ALG_ES256, "ES256"},
    {PD_ALG_ES384, "ES384"},
}};

// The value of a base64url character, or -1.
int base64url_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '-') return 62;
  if (c == '_') return 63;
  return -1;
}

bool iequals(std::string_view a, std::string_view b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(), [](char x, char y) {
    return std::tolower(static_cast<unsigned char>(x)) ==
           std::tolower(static_cast<unsigned char>(y));
  });
}

// NumericDate bounds: far beyond any real time, and far enough inside int64_t that now and
// clock_skew can be added and subtracted without overflow.
constexpr int64_t kDateLimit = int64_t{1} << 62;

// A NumericDate (RFC 7519 section 2, a JSON number that may have a fraction) in whole seconds.
// exp is rounded down and nbf up: with a whole-second `now`, "now > exp + skew" and
// "now < nbf - skew" then give the same answer as with the exact value.
int64_t whole_seconds(const json& value, bool round_up) {
  if (value.is_number_unsigned()) {
    return static_cast<int64_t>(std::min<uint64_t>(value.get<uint64_t>(), kDateLimit));
  }
  if (value.is_number_integer()) {
    return std::clamp<int64_t>(value.get<int64_t>(), -kDateLimit, kDateLimit);
  }
  const double seconds =
      round_up ? std::ceil(value.get<double>()) : std::floor(value.get<double>());
  if (seconds >= static_cast<double>(kDateLimit)) return kDateLimit;
  if (seconds <= -static_cast<double>(kDateLimit)) return -kDateLimit;
  return static_cast<int64_t>(seconds);
}

Parsed refuse_parse(pd_jwt_reason reason, std::string detail) {
  Parsed parsed;
  parsed.reason = reason;
  parsed.detail = std::move(detail);
  return parsed;
}

// A registered claim (RFC 7519 4.1) this project reads: the JSON type it must have, and where
// it goes in a Token.
struct ClaimReader {
  const char* name;
  const char* expected;  // for the message when the claim has another type
  bool (*fits)(const json&);
  void (*store)(Token&, const json&);
};

constexpr ClaimReader kClaimReaders[] = {
    {"iss", "a string", [](const json& v) { return v.is_string(); },
     [](Token& t, const json& v) { t.iss = v.get<std::string>(); }},
    {"sub", "a string", [](const json& v) { return v.is_string(); },
     [](Token& t, const json& v) { t.sub = v.get<std::string>(); }},
    {"aud", "a string or an array of strings",
     [](const json& v) {
       return v.is_string() || (v.is_array() && std::all_of(v.begin(), v.end(), [](const json& e) {
                                  return e.is_string();
                                }));
     },
     [](Token& t, const json& v) {
       t.aud = v.is_string() ? std::vector<std::string>{v.get<std::string>()}
                             : v.get<std::vector<std::string>>();
     }},
    {"exp", "a number", [](const json& v) { return v.is_number(); },
     [](Token& t, const json& v) { t.exp = whole_seconds(v, false); }},
    {"nbf", "a number", [](const json& v) { return v.is_number(); },
     [](Token& t, const json& v) { t.nbf = whole_seconds(v, true); }},
};

// Reads the claims of kClaimReaders; false (with `why`) when one has the wrong type.
bool read_claims(Token& token, std::string& why) {
  for (const ClaimReader& claim : kClaimReaders) {
    const auto it = token.payload.find(claim.name);
    if (it == token.payload.end()) continue;
    if (!claim.fits(*it)) {
      why = fmt::format("payload \"{}\" is not {}", claim.name, claim.expected);
      return false;
    }
    claim.store(token, *it);
  }
  return true;
}

// One dot-separated part of the token, decoded.
bool decode_part(std::string_view text, std::string_view what, std::string& out, std::string& why) {
  auto decoded = base64url_decode(text);
  if (!decoded) {
    why = fmt::format("{} is not base64url", what);
    return false;
  }
  out = std::move(*decoded);
  return true;
}

Verdict refuse(pd_jwt_reason reason, std::string detail) {
  Verdict verdict;
  verdict.reason = reason;
  verdict.detail = std::move(detail);
  return verdict;
}

bool is_hmac(pd_jwt_alg alg) {
  return alg == PD_ALG_HS256 || alg == PD_ALG_HS384 || alg == PD_ALG_HS512;
}
bool is_rsa(pd_jwt_alg alg) {
  return alg == PD_ALG_RS256 || alg == PD_ALG_RS384 || alg == PD_ALG_RS512;
}

struct Selection {
  const Jwk* key = nullptr;
  pd_jwt_reason reason = PD_J_OK;
  std::string detail;
};

Selection not_selected(pd_jwt_reason reason, std::string detail) {
  return Selection{nullptr, reason, std::move(detail)};
}

// The jwks key for an RS*/ES* token (step 2 of verify()).
Selection select_key(const Token& token, pd_jwt_alg alg, const Keys& keys) {
  const Jwk::Type type = is_rsa(alg) ? Jwk::Type::Rsa : Jwk::Type::Ec;
  const std::string_view kty = is_rsa(alg) ? "RSA" : "EC";
  const Jwk* chosen = nullptr;
  if (token.kid) {
    bool kid_known = false;
    for (const Jwk& key : keys.jwks) {
      if (key.kid != token.kid) continue;
      kid_known = true;
      if (key.type == type) chosen = &key;
    }
    if (!kid_known) {
      return not_selected(PD_J_UNKNOWN_KID, "no key has kid " + detail::quoted(*token.kid));
    }
    if (!chosen) {
      return not_selected(PD_J_ALG, fmt::format("key {} is not an {} key, which {} needs",
                                                detail::quoted(*token.kid), kty, alg_name(alg)));
    }
  } else {
    const auto count = std::count_if(keys.jwks.begin(), keys.jwks.end(),
                                     [&](const Jwk& key) { return key.type == type; });
    if (count != 1) {
      return not_selected(PD_J_UNKNOWN_KID,
                          fmt::format("no kid, and {} {} keys to choose from", count, kty));
    }
    chosen = &*std::find_if(keys.jwks.begin(), keys.jwks.end(),
                            [&](const Jwk& key) { return key.type == type; });
  }
  const std::string_view curve = alg == PD_ALG_ES256 ? "P-256" : "P-384";
  if (type == Jwk::Type::Ec && chosen->crv != curve) {
    return not_selected(
        PD_J_ALG, fmt::format("the key is on {}, {} needs {}", chosen->crv, alg_name(alg), curve));
  }
  if (chosen->alg && *chosen->alg != alg_name(alg)) {
    return not_selected(PD_J_ALG, fmt::format("the key is for alg {}, the token uses {}",
                                              detail::quoted(*chosen->alg), alg_name(alg)));
  }
  return Selection{chosen, PD_J_OK, {}};
}

// A route's require claim (step 8 of verify()).
bool claim_holds(const json& payload, const std::string& name, const std::string& value) {
  const auto claim = payload.find(name);
  if (claim == payload.end()) return false;
  if (claim->is_array()) {
    return std::any_of(claim->begin(), claim->end(), [&](const json& element) {
      return element.is_string() && element.get_ref<const std::string&>() == value;
    });
  }
  if (!claim->is_string()) return false;
  const std::string& text = claim->get_ref<const std::string&>();
  if (name != "scope") return text == value;
  // RFC 6749 3.3: scope-token *( SP scope-token ). Runs of spaces are tolerated.
  std::string_view rest = text;
  while (!rest.empty()) {
    const size_t end = std::min(rest.find(' '), rest.size());
    if (rest.substr(0, end) == value) return true;
    rest.remove_prefix(std::min(end + 1, rest.size()));
  }
  return false;
}

}  // namespace

std::string_view reason_name(pd_jwt_reason reason) {
  switch (reason) {
    case PD_J_OK:
      return "ok";
    case PD_J_MISSING:
      return "missing";
    case PD_J_MALFORMED:
      return "malformed";
    case PD_J_TOO_LARGE:
      return "too_large";
    case PD_J_ALG:
      return "alg";
    case PD_J_UNKNOWN_KID:
      return "unknown_kid";
    case PD_J_SIGNATURE:
      return "signature";
    case PD_J_EXPIRED:
      return "expired";
    case PD_J_NOT_YET_VALID:
      return "not_yet_valid";
    case PD_J_ISSUER:
      return "issuer";
    case PD_J_AUDIENCE:
      return "audience";
    case PD_J_CLAIM:
      return "claim";
    case PD_J_UNVERIFIED:
      return "unverified";
    case PD_J_MAX:
      break;
  }
  return "unknown";
}

std::optional<pd_jwt_alg> alg_from_name(std::string_view name) {
  for (const auto& [alg, alg_text] : kAlgs) {
    if (alg_text == name) return alg;
  }
  return std::nullopt;
}

std::string_view alg_name(pd_jwt_alg alg) {
  for (const auto& [known, text] : kAlgs) {
    if (known == alg) return text;
  }
  return "none";
}

std::optional<std::string> base64url_decode(std::string_view text) {
  if (text.size() % 4 == 1) return std::nullopt;  // 6 bits cannot make a byte
  std::string out;
  out.reserve(text.size() / 4 * 3 + 2);
  uint32_t pending = 0;  // bits read and not yet written out
  int pending_bits = 0;
  for (const char c : text) {
    const int value = base64url_value(c);
    if (value < 0) return std::nullopt;
    pending = (pending << 6) | static_cast<uint32_t>(value);
    pending_bits += 6;
    if (pending_bits >= 8) {
      pending_bits -= 8;
      out.push_back(static_cast<char>((pending >> pending_bits) & 0xff));
      pending &= (1u << pending_bits) - 1;
    }
  }
  if (pending != 0) return std::nullopt;  // a canonical encoding leaves the unused bits zero
  return out;
}

std::optional<std::string_view> bearer_token(std::string_view authorization_value) {
  constexpr std::string_view kScheme = "Bearer";
  if (authorization_value.size() <= kScheme.size() ||
      !iequals(authorization_value.substr(0, kScheme.size()), kScheme)) {
    return std::nullopt;
  }
  std::string_view rest = authorization_value.substr(kScheme.size());
  const size_t spaces = std::min(rest.find_first_not_of(' '), rest.size());
  if (spaces == 0) return std::nullopt;
  rest.remove_prefix(spaces);
  if (rest.empty() || rest.find_first_of(" \t") != std::string_view::npos) return std::nullopt;
  return rest;
}

namespace detail {

std::string quoted(std::string_view text) {
  return json(std::string(text)).dump(-1, ' ', false, json::error_handler_t::replace);
}

std::optional<json> parse_object(std::string_view text, std::string& why) {
  if (text.substr(0, 3) == "\xEF\xBB\xBF") {
    why = "starts with a byte order mark";
    return std::nullopt;
  }
  // nlohmann keeps the last of duplicate names; RFC 7515 4 and RFC 7519 4 let us reject
  // duplicate header parameter and claim names instead, and we do: two parsers (ours and the
  // dataplane's) could otherwise read different values. Those are the top-level members;
  // inside a nested object (which no rule reads, here or in the dataplane) names may repeat.
  std::vector<std::set<std::string>> names;  // of each object being read
  std::optional<std::string> duplicate;
  const auto watch = [&](int, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::object_start) {
      names.emplace_back();
    } else if (event == json::parse_event_t::object_end) {
      names.pop_back();
    } else if (event == json::parse_event_t::key && names.size() == 1 &&
               !names.back().insert(parsed.get<std::string>()).second && !duplicate) {
      duplicate = parsed.get<std::string>();
    }
    return true;
  };
  json value;
  try {
    value = json::parse(text.begin(), text.end(), watch);
  } catch (const json::exception& e) {
    // "[json.exception.parse_error.101] parse error at ..." -> "parse error at ..."
    std::string_view message = e.what();
    if (const size_t end = message.find("] "); end != std::string_view::npos) {
      message.remove_prefix(end + 2);
    }
    // nlohmann quotes what it read last ("; last read: '...'"): never echo a file's bytes (a
    // key file may be any file the policy names) nor a token's
    if (const size_t quote = message.find("; last read:"); quote != std::string_view::npos) {
      message = message.substr(0, quote);
    }
    why = fmt::format("not JSON: {}", message);
    return std::nullopt;
  }
  if (duplicate) {
    why = "duplicate member " + detail::quoted(*duplicate);
    return std::nullopt;
  }
  if (!value.is_object()) {
    why = "not a JSON object";
    return std::nullopt;
  }
  return value;
}

}  // namespace detail

Parsed parse(std::string_view compact) {
  if (compact.empty()) return refuse_parse(PD_J_MISSING, "no token");
  if (compact.size() > PD_JWT_MAX) {
    return refuse_parse(PD_J_TOO_LARGE,
                        fmt::format("{} bytes, over the {} judged", compact.size(), PD_JWT_MAX));
  }
  const size_t first_dot = compact.find('.');
  const size_t second_dot =
      first_dot == std::string_view::npos ? first_dot : compact.find('.', first_dot + 1);
  if (second_dot == std::string_view::npos ||
      compact.find('.', second_dot + 1) != std::string_view::npos) {
    return refuse_parse(PD_J_MALFORMED, "not three dot-separated parts");
  }
  Token token;
  std::string header_text;
  std::string payload_text;
  std::string why;
  if (!decode_part(compact.substr(0, first_dot), "the header", header_text, why) ||
      !decode_part(compact.substr(first_dot + 1, second_dot - first_dot - 1), "the payload",
                   payload_text, why) ||
      !decode_part(compact.substr(second_dot + 1), "the signature", token.signature, why)) {
    return refuse_parse(PD_J_MALFORMED, why);
  }

  auto header = detail::parse_object(header_text, why);
  if (!header) return refuse_parse(PD_J_MALFORMED, "header: " + why);
  token.header = std::move(*header);
  const auto alg = token.header.find("alg");
  if (alg == token.header.end() || !alg->is_string()) {
    return refuse_parse(PD_J_MALFORMED, "header \"alg\" is missing or not a string");
  }
  token.alg = alg->get<std::string>();
  if (const auto kid = token.header.find("kid"); kid != token.header.end()) {
    if (!kid->is_string()) return refuse_parse(PD_J_MALFORMED, "header \"kid\" is not a string");
    token.kid = kid->get<std::string>();
  }
  // RFC 7515 4.1.11: a recipient that does not understand a listed extension must reject the
  // JWS. We understand none, so any "crit" (even an empty or ill-typed one) is refused.
  if (token.header.contains("crit")) {
    return refuse_parse(PD_J_MALFORMED, "header has \"crit\" (no extensions are understood)");
  }

  auto payload = detail::parse_object(payload_text, why);
  if (!payload) return refuse_parse(PD_J_MALFORMED, "payload: " + why);
  token.payload = std::move(*payload);
  if (!read_claims(token, why)) return refuse_parse(PD_J_MALFORMED, why);

  token.signing_input = std::string(compact.substr(0, second_dot));
  Parsed parsed;
  parsed.reason = PD_J_OK;
  parsed.token = std::move(token);
  return parsed;
}

Verdict verify(const Token& token, const config::JwtProvider& provider, const Keys& keys,
               const config::JwtRef* route_require, int64_t now_unix_seconds) {
  // 1. alg
  const std::optional<pd_jwt_alg> alg = alg_from_name(token.alg);
  if (!alg || std::find(provider.algorithms.begin(), provider.algorithms.end(), token.alg) ==
                  provider.algorithms.end()) {
    return refuse(PD_J_ALG, fmt::format("alg {} is not one of the provider's algorithms",
                                        detail::quoted(token.alg)));
  }

  // 2. key
  const Jwk* key = nullptr;
  std::string_view secret;
  if (is_hmac(*alg)) {
    if (!keys.secret) return refuse(PD_J_ALG, "no secret is loaded for this provider");
    secret = *keys.secret;
  } else {
    Selection selection = select_key(token, *alg, keys);
    if (!selection.key) return refuse(selection.reason, std::move(selection.detail));
    key = selection.key;
  }

  // 3. signature
  if (!detail::signature_valid(*alg, secret, key, token.signing_input, token.signature)) {
    return refuse(PD_J_SIGNATURE, fmt::format("the {} signature does not verify", alg_name(*alg)));
  }

  // 4., 5. exp and nbf. Both dates are within +-2^62, so this arithmetic cannot overflow.
  const int64_t now = now_unix_seconds;
  const int64_t skew = provider.clock_skew.count();
  if (!token.exp) {
    if (provider.require_exp)
      return refuse(PD_J_CLAIM, "no \"exp\", and the provider requires one");
  } else if (now - skew > *token.exp) {
    return refuse(PD_J_EXPIRED,
                  fmt::format("expired at {} (now {}, clock_skew {}s)", *token.exp, now, skew));
  }
  if (token.nbf && now + skew < *token.nbf) {
    return refuse(PD_J_NOT_YET_VALID, fmt::format("not valid before {} (now {}, clock_skew {}s)",
                                                  *token.nbf, now, skew));
  }

  // 6. iss
  if (token.iss != provider.issuer) {
    return refuse(PD_J_ISSUER, token.iss
                                   ? "iss " + detail::quoted(*token.iss) + " is not the issuer"
                                   : std::string("no \"iss\""));
  }

  // 7. aud
  const bool audience_ok =
      token.aud && std::any_of(token.aud->begin(), token.aud->end(), [&](const std::string& aud) {
        return std::find(provider.audiences.begin(), provider.audiences.end(), aud) !=
               provider.audiences.end();
      });
  if (!audience_ok) {
    return refuse(PD_J_AUDIENCE,
                  token.aud ? "aud holds none of the provider's audiences" : "no \"aud\"");
  }

  // 8. the route's require claims
  if (route_require) {
    for (const auto& [name, value] : route_require->require) {
      if (!claim_holds(token.payload, name, value)) {
        return refuse(PD_J_CLAIM, fmt::format("claim {} does not hold {}", detail::quoted(name),
                                              detail::quoted(value)));
      }
    }
  }

  Verdict verdict;
  verdict.reason = PD_J_OK;
  verdict.exp = token.exp;
  verdict.sub = token.sub.value_or("");
  return verdict;
}

Verdict check(std::string_view token, const config::JwtProvider& provider, const Keys& keys,
              const config::JwtRef* route_require, int64_t now_unix_seconds) {
  Parsed parsed = parse(token);
  if (!parsed.token) return refuse(parsed.reason, std::move(parsed.detail));
  return verify(*parsed.token, provider, keys, route_require, now_unix_seconds);
}

pd_jwt_reason evaluate(std::string_view token, const config::JwtProvider& provider,
                       const Keys& keys, const config::JwtRef* route_require,
                       int64_t now_unix_seconds) {
  return check(token, provider, keys, route_require, now_unix_seconds).reason;
}

}  // namespace policyd::jwt
