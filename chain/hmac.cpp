#include "chain/hmac.hpp"

// The midstate is only reachable through the low-level SHA API, deprecated in OpenSSL 3.
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <algorithm>
#include <stdexcept>

namespace policyd::chain {

namespace {

constexpr unsigned char kIpad = 0x36, kOpad = 0x5c;

// The chaining state of ctx (SHA256_CTX or SHA512_CTX), which is then wiped.
template <typename Ctx>
std::array<uint64_t, 8> take_state(Ctx& ctx) {
  std::array<uint64_t, 8> h{};
  std::copy(std::begin(ctx.h), std::end(ctx.h), h.begin());
  OPENSSL_cleanse(&ctx, sizeof(ctx));
  return h;
}

// The state after compressing the one block K' ^ pad.
std::array<uint64_t, 8> midstate(int alg, std::string_view key, unsigned char pad) {
  const size_t block = alg == 256 ? SHA256_CBLOCK : SHA512_CBLOCK;
  unsigned char b[SHA512_CBLOCK] = {};
  const auto* k = reinterpret_cast<const unsigned char*>(key.data());
  if (key.size() > block) {  // K' = H(K)
    if (alg == 256)
      SHA256(k, key.size(), b);
    else if (alg == 384)
      SHA384(k, key.size(), b);
    else
      SHA512(k, key.size(), b);
  } else {
    std::copy(k, k + key.size(), b);
  }
  for (size_t i = 0; i < block; ++i) b[i] ^= pad;

  std::array<uint64_t, 8> h;
  if (alg == 256) {
    SHA256_CTX c;
    SHA256_Init(&c);
    SHA256_Update(&c, b, block);
    h = take_state(c);
  } else {
    SHA512_CTX c;
    if (alg == 384)
      SHA384_Init(&c);
    else
      SHA512_Init(&c);
    SHA512_Update(&c, b, block);
    h = take_state(c);
  }
  OPENSSL_cleanse(b, sizeof(b));
  return h;
}

}  // namespace

HmacMidstates hmac_midstates(int alg, std::string_view key) {
  if (alg != 256 && alg != 384 && alg != 512)
    throw std::invalid_argument("hmac_midstates: alg must be 256, 384 or 512");
  return {midstate(alg, key, kIpad), midstate(alg, key, kOpad)};
}

}  // namespace policyd::chain
