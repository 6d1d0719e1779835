// JWS signature checks (RFC 7518 3): HMAC, RSASSA-PKCS1-v1_5 and ECDSA, with OpenSSL 3.
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>

#include <optional>
#include <string>

#include "chain/jwt/internal.hpp"

namespace policyd::jwt::detail {

namespace {

const char* digest_name(pd_jwt_alg alg) {
  switch (alg) {
    case PD_ALG_HS256:
    case PD_ALG_RS256:
    case PD_ALG_ES256:
      return "SHA256";
    case PD_ALG_HS384:
    case PD_ALG_RS384:
    case PD_ALG_ES384:
      return "SHA384";
    case PD_ALG_HS512:
    case PD_ALG_RS512:
      return "SHA512";
    default:
      return nullptr;
  }
}

const unsigned char* bytes(std::string_view text) {
  return reinterpret_cast<const unsigned char*>(text.data());
}

bool hmac_valid(const char* digest, std::string_view secret, std::string_view input,
                std::string_view signature) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  size_t mac_len = 0;
  if (!EVP_Q_mac(nullptr, "HMAC", nullptr, digest, nullptr, secret.data(), secret.size(),
                 bytes(input), input.size(), mac, sizeof mac, &mac_len)) {
    return false;
  }
  return signature.size() == mac_len && CRYPTO_memcmp(mac, signature.data(), mac_len) == 0;
}

// RFC 7518 3.4: the JWS form of an ECDSA signature is R || S, each the size of a coordinate;
// OpenSSL verifies the DER form (RFC 3279 Ecdsa-Sig-Value).
std::optional<std::string> ecdsa_der(std::string_view raw, size_t coordinate_bytes) {
  if (raw.size() != 2 * coordinate_bytes) return std::nullopt;
  Owned<ECDSA_SIG, ECDSA_SIG_free> sig(ECDSA_SIG_new());
  BIGNUM* r = BN_bin2bn(bytes(raw), static_cast<int>(coordinate_bytes), nullptr);
  BIGNUM* s = BN_bin2bn(bytes(raw) + coordinate_bytes, static_cast<int>(coordinate_bytes), nullptr);
  if (!sig || !r || !s || !ECDSA_SIG_set0(sig.get(), r, s)) {  // set0 owns r and s on success
    BN_free(r);
    BN_free(s);
    return std::nullopt;
  }
  const int der_len = i2d_ECDSA_SIG(sig.get(), nullptr);
  if (der_len <= 0) return std::nullopt;
  std::string der(static_cast<size_t>(der_len), '\0');
  auto* out = reinterpret_cast<unsigned char*>(der.data());
  if (i2d_ECDSA_SIG(sig.get(), &out) != der_len) return std::nullopt;
  return der;
}

bool pkey_valid(const char* digest, const Jwk& key, std::string_view input,
                std::string_view signature) {
  Owned<EVP_MD_CTX, EVP_MD_CTX_free> ctx(EVP_MD_CTX_new());
  EVP_PKEY_CTX* pkey_ctx = nullptr;  // owned by ctx
  if (!ctx || EVP_DigestVerifyInit_ex(ctx.get(), &pkey_ctx, digest, nullptr, nullptr, key.key.get(),
                                      nullptr) != 1) {
    return false;
  }
  if (key.type == Jwk::Type::Rsa &&
      EVP_PKEY_CTX_set_rsa_padding(pkey_ctx, RSA_PKCS1_PADDING) != 1) {
    return false;
  }
  return EVP_DigestVerify(ctx.get(), bytes(signature), signature.size(), bytes(input),
                          input.size()) == 1;
}

bool valid(pd_jwt_alg alg, std::string_view secret, const Jwk* key, std::string_view input,
           std::string_view signature) {
  const char* digest = digest_name(alg);
  if (!digest) return false;
  switch (alg) {
    case PD_ALG_HS256:
    case PD_ALG_HS384:
    case PD_ALG_HS512:
      return !secret.empty() && hmac_valid(digest, secret, input, signature);
    case PD_ALG_RS256:
    case PD_ALG_RS384:
    case PD_ALG_RS512:
      // OpenSSL also insists on a signature exactly as long as the modulus.
      return key && key->type == Jwk::Type::Rsa &&
             signature.size() == static_cast<size_t>(EVP_PKEY_get_size(key->key.get())) &&
             pkey_valid(digest, *key, input, signature);
    case PD_ALG_ES256:
    case PD_ALG_ES384: {
      if (!key || key->type != Jwk::Type::Ec) return false;
      const auto der = ecdsa_der(signature, alg == PD_ALG_ES256 ? 32 : 48);
      return der && pkey_valid(digest, *key, input, *der);
    }
    default:
      return false;
  }
}

}  // namespace

bool signature_valid(pd_jwt_alg alg, std::string_view secret, const Jwk* key,
                     std::string_view input, std::string_view signature) {
  const bool result = valid(alg, secret, key, input, signature);
  ERR_clear_error();  // a failed check leaves OpenSSL errors on this thread's queue
  return result;
}

}  // namespace policyd::jwt::detail
