// What the parts of policyd_jwt share and callers do not need: strict JSON and signature checks.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "chain/jwt/jwt.hpp"

namespace policyd::jwt::detail {

// An OpenSSL object freed by `Free` (EVP_PKEY_CTX_free, BN_free, ...).
template <auto Free>
struct Freer {
  template <typename T>
  void operator()(T* p) const noexcept {
    Free(p);
  }
};
template <typename T, auto Free>
using Owned = std::unique_ptr<T, Freer<Free>>;

// A JSON object (RFC 8259, UTF-8, no byte order mark) with no duplicate member name in any
// object it contains; otherwise nullopt, and `why` says what is wrong.
std::optional<nlohmann::json> parse_object(std::string_view text, std::string& why);

// `text` in double quotes with JSON escapes, so untrusted bytes cannot forge a log line.
std::string quoted(std::string_view text);

// Whether `signature` is the JWS signature of `input` under `alg`: with `secret` for HS*, with
// `key` for RS*/ES* (the caller has checked that the key fits the alg).
bool signature_valid(pd_jwt_alg alg, std::string_view secret, const Jwk* key,
                     std::string_view input, std::string_view signature);

}  // namespace policyd::jwt::detail
