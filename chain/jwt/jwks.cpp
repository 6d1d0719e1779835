// A provider's keys: secret_file and jwks_file (RFC 7517 JWK Set, RFC 7518 6 key parameters),
// turned into OpenSSL 3 public keys with EVP_PKEY_fromdata.
#include <fcntl.h>
#include <fmt/format.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "chain/jwt/internal.hpp"

namespace policyd::jwt {

using detail::Owned;
using nlohmann::json;

void PkeyFree::operator()(EVP_PKEY* key) const noexcept { EVP_PKEY_free(key); }

namespace {

constexpr size_t kMaxKeyFile = 1 << 20;  // a secret or JWK Set larger than this is a mistake
constexpr int kMinRsaBits = 2048;        // RFC 7518 3.3
constexpr int kMaxRsaBits = 16384;       // OpenSSL's OPENSSL_RSA_MAX_MODULUS_BITS

using Bignum = Owned<BIGNUM, BN_free>;

struct FileDescriptor {
  int fd;
  explicit FileDescriptor(int opened) : fd(opened) {}
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  ~FileDescriptor() {
    if (fd >= 0) ::close(fd);
  }
};


// A key being read, or why it is left out (`skipped`), or an error.
struct Loaded {
  std::optional<Jwk> key;
  std::string skipped;
};

Result<Loaded> skip(std::string why) { return Loaded{std::nullopt, std::move(why)}; }

// What is wrong with one key: "jwks.json: key 2 (kid "x"): EC key without y".
class KeyReader {
 public:
  KeyReader(const json& entry, std::string label) : entry_(entry), label_(std::move(label)) {}

  const std::string& label() const { return label_; }
  Error error(std::string_view what) const {
    return make_error(fmt::format("{}: {}", label_, what));
  }

  // An optional string member; an error when present and not a string.
  Result<std::optional<std::string>> string(const char* name) const {
    const auto it = entry_.find(name);
    if (it == entry_.end()) return std::optional<std::string>();
    if (!it->is_string()) return error(fmt::format("\"{}\" is not a string", name));
    return std::optional<std::string>(it->get<std::string>());
  }

  // A required base64url member (RFC 7518 6.2.1, 6.3.1: Base64urlUInt or a coordinate).
  Result<std::string> bytes(const char* name, std::string_view kty) const {
    auto text = string(name);
    if (!text) return text.error();
    if (!*text) return error(fmt::format("{} key without {}", kty, name));
    auto decoded = base64url_decode(**text);
    if (!decoded) return error(fmt::format("\"{}\" is not base64url", name));
    if (decoded->empty()) return error(fmt::format("\"{}\" is empty", name));
    return std::move(*decoded);
  }

 private:
  const json& entry_;
  std::string label_;
};

// A public key from OSSL_PARAMs, for `type` "RSA" or "EC".
std::unique_ptr<EVP_PKEY, PkeyFree> from_params(const char* type, OSSL_PARAM_BLD* builder) {
  const Owned<OSSL_PARAM, OSSL_PARAM_free> params(OSSL_PARAM_BLD_to_param(builder));
  const Owned<EVP_PKEY_CTX, EVP_PKEY_CTX_free> ctx(
      EVP_PKEY_CTX_new_from_name(nullptr, type, nullptr));
  EVP_PKEY* key = nullptr;
  if (!params || !ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1 ||
      EVP_PKEY_fromdata(ctx.get(), &key, EVP_PKEY_PUBLIC_KEY, params.get()) != 1) {
    key = nullptr;
  }
  return std::unique_ptr<EVP_PKEY, PkeyFree>(key);
}

Bignum bignum(const std::string& big_endian) {
  return Bignum(BN_bin2bn(reinterpret_cast<const unsigned char*>(big_endian.data()),
                          static_cast<int>(big_endian.size()), nullptr));
}

Result<Loaded> rsa_key(const KeyReader& reader) {
  auto n_bytes = reader.bytes("n", "RSA");
  if (!n_bytes) return n_bytes.error();
  auto e_bytes = reader.bytes("e", "RSA");
  if (!e_bytes) return e_bytes.error();
  const Bignum n = bignum(*n_bytes);
  const Bignum e = bignum(*e_bytes);
  if (!n || !e) return reader.error("out of memory");
  const int bits = BN_num_bits(n.get());
  if (bits < kMinRsaBits || bits > kMaxRsaBits) {
    return skip(
        fmt::format("RSA key of {} bits (usable: {} to {})", bits, kMinRsaBits, kMaxRsaBits));
  }
  if (!BN_is_odd(e.get()) || BN_is_one(e.get()) || BN_cmp(e.get(), n.get()) >= 0) {
    return reader.error("RSA exponent \"e\" is not an odd number between 1 and n");
  }
  const Owned<OSSL_PARAM_BLD, OSSL_PARAM_BLD_free> builder(OSSL_PARAM_BLD_new());
  if (!builder || !OSSL_PARAM_BLD_push_BN(builder.get(), OSSL_PKEY_PARAM_RSA_N, n.get()) ||
      !OSSL_PARAM_BLD_push_BN(builder.get(), OSSL_PKEY_PARAM_RSA_E, e.get())) {
    return reader.error("out of memory");
  }
  Jwk jwk;
  jwk.type = Jwk::Type::Rsa;
  jwk.key = from_params("RSA", builder.get());
  if (!jwk.key) return reader.error("OpenSSL does not accept this RSA key");
  return Loaded{std::move(jwk), {}};
}

Result<Loaded> ec_key(const KeyReader& reader) {
  auto crv = reader.string("crv");
  if (!crv) return crv.error();
  if (!*crv) return reader.error("EC key without crv");
  // RFC 7518 3.4: ES256 is on P-256, ES384 on P-384; OpenSSL names the groups differently.
  const char* group = **crv == "P-256" ? "prime256v1" : **crv == "P-384" ? "secp384r1" : nullptr;
  if (!group)
    return skip(fmt::format("EC key on curve {} (usable: P-256, P-384)", detail::quoted(**crv)));
  const size_t size = **crv == "P-256" ? 32 : 48;
  std::string point = "\x04";  // SEC 1 uncompressed point: 04 || x || y
  for (const char* name : {"x", "y"}) {
    auto coordinate = reader.bytes(name, "EC");
    if (!coordinate) return coordinate.error();
    // RFC 7518 6.2.1.2/3: the full coordinate size, leading zeros included.
    if (coordinate->size() != size) {
      return reader.error(
          fmt::format("\"{}\" is {} bytes, {} needs {}", name, coordinate->size(), **crv, size));
    }
    point += *coordinate;
  }
  const Owned<OSSL_PARAM_BLD, OSSL_PARAM_BLD_free> builder(OSSL_PARAM_BLD_new());
  if (!builder ||
      !OSSL_PARAM_BLD_push_utf8_string(builder.get(), OSSL_PKEY_PARAM_GROUP_NAME, group, 0) ||
      !OSSL_PARAM_BLD_push_octet_string(builder.get(), OSSL_PKEY_PARAM_PUB_KEY, point.data(),
                                        point.size())) {
    return reader.error("out of memory");
  }
  Jwk jwk;
  jwk.type = Jwk::Type::Ec;
  jwk.crv = **crv;
  jwk.key = from_params("EC", builder.get());
  const Owned<EVP_PKEY_CTX, EVP_PKEY_CTX_free> check(
      jwk.key ? EVP_PKEY_CTX_new_from_pkey(nullptr, jwk.key.get(), nullptr) : nullptr);
  if (!check || EVP_PKEY_public_check(check.get()) != 1) {
    return reader.error(fmt::format("(x, y) is not a point on {}", **crv));
  }
  return Loaded{std::move(jwk), {}};
}

// One element of "keys".
Result<Loaded> read_key(const json& entry, const std::string& label) {
  if (!entry.is_object()) return make_error(label + ": not a JSON object");
  const KeyReader unnamed(entry, label);
  auto kid = unnamed.string("kid");
  if (!kid) return kid.error();
  const KeyReader reader =
      *kid ? KeyReader(entry, label + " (kid " + detail::quoted(**kid) + ")") : unnamed;
  auto use = reader.string("use");
  if (!use) return use.error();
  auto alg = reader.string("alg");
  if (!alg) return alg.error();
  auto kty = reader.string("kty");
  if (!kty) return kty.error();
  if (!*kty) return reader.error("key without kty");

  Result<Loaded> loaded = skip(fmt::format("kty {} (usable: RSA, EC)", detail::quoted(**kty)));
  if (*use == "enc") {
    loaded = skip("\"use\": \"enc\" (an encryption key)");
  } else if (**kty == "RSA") {
    loaded = rsa_key(reader);
  } else if (**kty == "EC") {
    loaded = ec_key(reader);
  }
  if (!loaded) return loaded;
  if (loaded->key) {
    loaded->key->kid = std::move(*kid);
    loaded->key->alg = std::move(*alg);
  } else {
    loaded->skipped = reader.label() + ": " + loaded->skipped;
  }
  return loaded;
}

}  // namespace

Result<std::string> read_key_file(const std::string& path) { return read_regular_file(path, kMaxKeyFile); }

Result<std::string> read_regular_file(const std::string& path, size_t max_bytes) {
  const auto fail = [&](std::string_view what) -> Result<std::string> {
    return make_error(fmt::format("{}: {}", path, what));
  };
  // O_PATH first: a FIFO would block the open, and a device's open may act (a watchdog
  // starts); only a regular file is then opened for reading, through the same inode
  const FileDescriptor where{::open(path.c_str(), O_PATH | O_CLOEXEC)};
  if (where.fd < 0) return fail(fmt::format("cannot open: {}", std::strerror(errno)));
  struct stat st {};
  if (::fstat(where.fd, &st) != 0) return fail(fmt::format("cannot stat: {}", std::strerror(errno)));
  if (!S_ISREG(st.st_mode)) return fail("not a regular file");
  const FileDescriptor file{::open(fmt::format("/proc/self/fd/{}", where.fd).c_str(),
                                   O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK)};
  const int fd = file.fd;
  if (fd < 0) return fail(fmt::format("cannot open: {}", std::strerror(errno)));
  if (static_cast<size_t>(st.st_size) > max_bytes)
    return fail(max_bytes % (1u << 20) == 0 ? fmt::format("larger than {} MiB", max_bytes >> 20)
                                             : fmt::format("larger than {} bytes", max_bytes));
  std::string content(static_cast<size_t>(st.st_size), '\0');
  size_t done = 0;
  while (done < content.size()) {
    const ssize_t n = ::read(fd, content.data() + done, content.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail(fmt::format("cannot read: {}", std::strerror(errno)));
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  content.resize(done);
  return content;
}

Result<std::string> load_secret(const std::string& path) {
  auto secret = read_key_file(path);
  if (!secret) return secret;
  // The secret is the file's bytes without one trailing "\n" or "\r\n": the line end that `echo`
  // and editors add is not meant as part of the key. (A secret that must end in a newline
  // needs a second one in the file.)
  std::string& bytes = *secret;
  if (bytes.ends_with("\r\n")) {
    bytes.resize(bytes.size() - 2);
  } else if (bytes.ends_with('\n')) {
    bytes.pop_back();
  }
  if (bytes.empty()) return make_error(path + ": the secret is empty");
  return secret;
}

Result<Keys> parse_jwks(std::string_view text, const std::string& name) {
  std::string why;
  const std::optional<json> set = detail::parse_object(text, why);
  if (!set) return make_error(fmt::format("{}: {}", name, why));
  const auto list = set->find("keys");
  if (list == set->end() || !list->is_array()) {
    return make_error(name + ": not a JWK Set (an object with a \"keys\" array)");
  }
  Keys keys;
  for (size_t i = 0; i < list->size(); ++i) {
    auto loaded = read_key((*list)[i], fmt::format("{}: key {}", name, i + 1));
    if (!loaded) return loaded.error();
    if (!loaded->key) {
      keys.skipped.push_back(std::move(loaded->skipped));
      continue;
    }
    Jwk& jwk = *loaded->key;
    for (const Jwk& earlier : keys.jwks) {
      if (jwk.kid && earlier.kid == jwk.kid && earlier.type == jwk.type) {
        return make_error(fmt::format("{}: key {} (kid {}): a second {} key with this kid", name,
                                      i + 1, detail::quoted(*jwk.kid),
                                      jwk.type == Jwk::Type::Rsa ? "RSA" : "EC"));
      }
    }
    keys.jwks.push_back(std::move(jwk));
  }
  if (keys.jwks.empty()) {
    std::string detail;
    for (const std::string& skipped : keys.skipped) detail += skipped + "\n";
    return make_error(fmt::format("{}: no usable key ({} skipped)", name, keys.skipped.size()),
                      detail);
  }
  return keys;
}

Result<Keys> load_jwks(const std::string& path) {
  auto text = read_key_file(path);
  if (!text) return text.error();
  return parse_jwks(*text, path);
}

Result<Keys> load_keys(const config::JwtProvider& provider) {
  Keys keys;
  if (provider.jwks_file) {
    auto jwks = load_jwks(*provider.jwks_file);
    if (!jwks) return jwks.error();
    keys = std::move(*jwks);
  }
  if (provider.secret_file) {
    auto secret = load_secret(*provider.secret_file);
    if (!secret) return secret.error();
    keys.secret = std::move(*secret);
  }
  return keys;
}

}  // namespace policyd::jwt
