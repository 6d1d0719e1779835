#!/usr/bin/python3
"""Makes the keys and tokens jwt_tests judges, with tools independent of policyd: PyJWT
(python3-jwt) and cryptography (python3-cryptography), or hmac/base64 by hand where PyJWT refuses
to make a bad token.

Usage: make_tokens.py OUTDIR
Writes OUTDIR/secret.key (the HS* secret plus a trailing newline, which the loader must strip),
OUTDIR/jwks.json (the main JWK Set), OUTDIR/jwks-single.json (one RSA key without kid) and
OUTDIR/cases.json:
  {"now": N, "issuer": ..., "audiences": [...], "cases": [
     {"name", "token", "expect": reason name ("ok", "alg", ...),
      optional: "now", "algorithms", "audiences", "skew", "require_exp", "require": {claim: value},
      "jwks": "single", "sub" and "exp" (what a valid token must yield)}]}
"""

import base64
import hashlib
import hmac
import json
import os
import sys

import jwt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

NOW = 1_700_000_000
ISSUER = "https://auth.example.com"
AUDIENCES = ["api"]
SECRET = "k3y-f0r-hs-t0kens-that-is-long-enough-for-hs512-0123456789abcdefghij"
DROP = object()  # a claim to leave out


def b64(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64_uint(number, size=None):
    size = size or (number.bit_length() + 7) // 8
    return b64(number.to_bytes(size, "big"))


def compact_json(value):
    return json.dumps(value, separators=(",", ":"))


def claims(**changes):
    base = {"iss": ISSUER, "aud": "api", "sub": "alice", "exp": NOW + 3600, "nbf": NOW - 60,
            "iat": NOW - 60}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not DROP}


def hmac_token(header, payload, key=SECRET, digest=hashlib.sha256):
    """A HS* token by hand; header and payload may be dicts or raw text."""
    parts = [b64(h if isinstance(h, str) else compact_json(h)) for h in (header, payload)]
    signing_input = ".".join(parts)
    key = key.encode() if isinstance(key, str) else key
    mac = hmac.new(key, signing_input.encode(), digest).digest()
    return signing_input + "." + b64(mac)


def rsa_public_jwk(key, **members):
    numbers = key.public_key().public_numbers()
    return {"kty": "RSA", **members, "n": b64_uint(numbers.n), "e": b64_uint(numbers.e)}


def ec_public_jwk(key, crv, size, **members):
    numbers = key.public_key().public_numbers()
    return {"kty": "EC", **members, "crv": crv, "x": b64_uint(numbers.x, size),
            "y": b64_uint(numbers.y, size)}


def main(out):
    rsa_main = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_enc = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_512_only = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    ec256 = ec.generate_private_key(ec.SECP256R1())
    ec384 = ec.generate_private_key(ec.SECP384R1())
    ec521 = ec.generate_private_key(ec.SECP521R1())

    jwks = {"keys": [
        rsa_public_jwk(rsa_main, kid="rsa-1", use="sig"),
        rsa_public_jwk(rsa_enc, kid="enc-1", use="enc"),          # ignored: an encryption key
        rsa_public_jwk(rsa_512_only, kid="rsa-512-only", alg="RS512"),
        ec_public_jwk(ec256, "P-256", 32, kid="ec-256", alg="ES256"),
        ec_public_jwk(ec384, "P-384", 48, kid="ec-384"),
        ec_public_jwk(ec521, "P-521", 66, kid="ec-521"),           # skipped: curve not used
        {"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": b64(b"\x01" * 32)},  # skipped
        # the same kid on keys of two kinds (RFC 7517 4.5 allows it): the alg picks the kind
        rsa_public_jwk(rsa_other, kid="shared"),
        ec_public_jwk(ec256, "P-256", 32, kid="shared"),
    ]}
    single = {"keys": [rsa_public_jwk(rsa_main)]}  # no kid: a kid-less RS* token may use it

    with open(os.path.join(out, "secret.key"), "w") as f:
        f.write(SECRET + "\n")
    with open(os.path.join(out, "jwks.json"), "w") as f:
        json.dump(jwks, f, indent=2)
    with open(os.path.join(out, "jwks-single.json"), "w") as f:
        json.dump(single, f)

    cases = []

    def case(name, token, expect, **extra):
        cases.append({"name": name, "token": token, "expect": expect, **extra})

    def sign(alg, payload=None, key=None, kid=None, headers=None):
        key = {"HS": SECRET, "RS": rsa_main, "ES": ec256 if alg == "ES256" else ec384}[alg[:2]] \
            if key is None else key
        headers = dict(headers or {})
        if kid is not None:
            headers["kid"] = kid
        return jwt.encode(claims() if payload is None else payload, key, algorithm=alg,
                          headers=headers or None)

    # ---- valid, every algorithm -------------------------------------------------------
    for alg in ("HS256", "HS384", "HS512"):
        case(f"{alg} valid", sign(alg), "ok", sub="alice", exp=NOW + 3600)
    for alg in ("RS256", "RS384", "RS512"):
        case(f"{alg} valid", sign(alg, kid="rsa-1"), "ok", sub="alice", exp=NOW + 3600)
    case("ES256 valid (key alg ES256)", sign("ES256", kid="ec-256"), "ok", sub="alice")
    case("ES384 valid", sign("ES384", kid="ec-384"), "ok", sub="alice")
    case("RS512 with a key whose alg is RS512", sign("RS512", key=rsa_512_only, kid="rsa-512-only"),
         "ok")
    case("valid without sub", sign("HS256", claims(sub=DROP)), "ok", sub="")
    case("kid shared by an RSA and an EC key: RS256", sign("RS256", key=rsa_other, kid="shared"),
         "ok")
    case("kid shared by an RSA and an EC key: ES256", sign("ES256", kid="shared"), "ok")
    case("HS256 ignores a kid", sign("HS256", kid="whatever"), "ok")
    case("RS256 without kid, the only RSA key", sign("RS256"), "ok", jwks="single")

    # ---- alg ----------------------------------------------------------------------------
    case("alg none (PyJWT)", jwt.encode(claims(), None, algorithm="none"), "alg")
    unsigned = b64(compact_json({"alg": "NONE"})) + "." + b64(compact_json(claims())) + "."
    case("alg NONE by hand", unsigned, "alg")
    case("alg hs256 (alg names are case-sensitive)", hmac_token({"alg": "hs256"}, claims()), "alg")
    case("alg not listed for the provider", sign("HS256"), "alg", algorithms=["RS256", "ES256"])
    case("RS256 not listed", sign("RS256", kid="rsa-1"), "alg", algorithms=["HS256"])
    pss_header = b64(compact_json({"alg": "PS256", "kid": "rsa-1"}))
    pss_input = pss_header + "." + b64(compact_json(claims()))
    pss = rsa_main.sign(pss_input.encode(), padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                                        salt_length=32), hashes.SHA256())
    case("alg PS256 (not supported)", pss_input + "." + b64(pss), "alg")

    # Algorithm confusion: the RSA public key (PEM, as a verifier might hold it) used as an HS256
    # secret. PyJWT refuses to make this token, so it is made by hand.
    pem = rsa_main.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
    confused = hmac_token({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}, claims(), key=pem)
    case("confusion: RSA public key PEM as HS256 secret, only RS256 listed", confused, "alg",
         algorithms=["RS256"])
    case("confusion: RSA public key PEM as HS256 secret, HS256 listed too", confused, "signature")
    jwk_text = compact_json(rsa_public_jwk(rsa_main, kid="rsa-1"))
    case("confusion: the JWK text as HS256 secret",
         hmac_token({"alg": "HS256", "kid": "rsa-1"}, claims(), key=jwk_text), "signature")
    case("RS256 naming an EC key", sign("RS256", kid="ec-256"), "alg")
    case("ES256 naming an RSA key", sign("ES256", kid="rsa-1"), "alg")
    case("ES256 naming a P-384 key", sign("ES256", kid="ec-384"), "alg")
    case("ES384 naming a P-256 key", sign("ES384", kid="ec-256"), "alg")
    case("RS256 with a key whose alg is RS512",
         sign("RS256", key=rsa_512_only, kid="rsa-512-only"), "alg")

    # ---- unknown_kid --------------------------------------------------------------------
    case("unknown kid", sign("RS256", kid="nope"), "unknown_kid")
    case("kid of a use=enc key", sign("RS256", key=rsa_enc, kid="enc-1"), "unknown_kid")
    case("kid of a skipped P-521 key", sign("ES256", kid="ec-521"), "unknown_kid")
    case("RS256 without kid, several RSA keys", sign("RS256"), "unknown_kid")
    case("ES256 without kid, several EC keys", sign("ES256"), "unknown_kid")
    case("empty kid", sign("RS256", kid=""), "unknown_kid")

    # ---- signature ----------------------------------------------------------------------
    def splice(token, other):
        return other.rsplit(".", 1)[0] + "." + token.rsplit(".", 1)[1]

    for alg, kid in (("HS256", None), ("RS256", "rsa-1"), ("ES256", "ec-256"), ("ES384", "ec-384")):
        valid = sign(alg, kid=kid)
        forged = sign(alg, claims(sub="mallory"), kid=kid)
        case(f"{alg} signature spliced onto another payload", splice(valid, forged), "signature")
    case("HS256 with another secret", sign("HS256", key="not-the-secret"), "signature")
    case("HS384 signature on an HS256 header",
         hmac_token({"alg": "HS256"}, claims(), digest=hashlib.sha384), "signature")
    case("HS256 with the secret including its newline", sign("HS256", key=SECRET + "\n"),
         "signature")
    es = sign("ES256", kid="ec-256")
    head, _, sig = es.rpartition(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=="))
    raw[10] ^= 0x01
    case("ES256 signature with a flipped bit", head + "." + b64(bytes(raw)), "signature")
    der = ec256.sign(head.encode(), ec.ECDSA(hashes.SHA256()))
    case("ES256 signature in DER instead of R||S", head + "." + b64(der), "signature")
    rs = sign("RS256", kid="rsa-1")
    head, _, sig = rs.rpartition(".")
    case("RS256 signature one byte short",
         head + "." + b64(base64.urlsafe_b64decode(sig + "==")[:-1]), "signature")
    case("RS256 empty signature", rs.rsplit(".", 1)[0] + ".", "signature")
    hs = sign("HS256")
    head, _, sig = hs.rpartition(".")
    case("HS256 signature cut to 16 bytes",
         head + "." + b64(base64.urlsafe_b64decode(sig + "=")[:16]), "signature")
    case("HS256 empty signature", head + ".", "signature")
    case("RS256 signed by another RSA key", sign("RS256", key=rsa_other, kid="rsa-1"), "signature")

    # ---- malformed ------------------------------------------------------------------------
    hs = sign("HS256")
    head, _, sig = hs.rpartition(".")
    case("empty token", "", "missing")
    case("padding '=' on the signature", hs + "=", "malformed")
    case("standard base64 '+' in the signature", head + ".+" + sig[1:], "malformed")
    case("standard base64 '/' in the signature", head + "./" + sig[1:], "malformed")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(sig[-1])
    assert len(sig) % 4 == 3 and last & 3 == 0  # 43 characters: 2 unused bits, zero
    case("non-zero unused bits in the last character", head + "." + sig[:-1] + alphabet[last | 1],
         "malformed")
    case("signature of length 1 mod 4", hs + "AA", "malformed")
    case("a space inside", hs[:20] + " " + hs[20:], "malformed")
    case("a newline at the end", hs + "\n", "malformed")
    case("two parts", head, "malformed")
    case("four parts", hs + ".", "malformed")
    case("JWE-like five parts", hs + ".a.b", "malformed")
    case("empty header part", "." + hs.split(".", 1)[1], "malformed")

    # A token a careless encoder makes with standard base64 ('+', '/', '=').
    for shift in range(3):  # "???" encodes to "Pz8/", ">>>" to "Pj4+" when aligned
        payload_text = compact_json(claims(note="a" * shift + "??????>>>>>>"))
        std = base64.b64encode(payload_text.encode()).decode()
        if "+" in std and "/" in std:
            break
    assert "+" in std and "/" in std
    signing_input = base64.b64encode(compact_json({"alg": "HS256"}).encode()).decode() + "." + std
    mac = hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    case("standard base64 throughout", signing_input + "." + base64.b64encode(mac).decode(),
         "malformed")

    case("header is a JSON array", hmac_token('["HS256"]', claims()), "malformed")
    case("header is not JSON", hmac_token("{alg: HS256}", claims()), "malformed")
    case("payload is not JSON", hmac_token({"alg": "HS256"}, "hello"), "malformed")
    case("payload is a JSON string", hmac_token({"alg": "HS256"}, '"sub"'), "malformed")
    case("payload with a byte order mark",
         hmac_token({"alg": "HS256"}, "\ufeff" + compact_json(claims())), "malformed")
    case("payload with invalid UTF-8", b64(compact_json({"alg": "HS256"})) + "." +
         b64(b'{"sub":"\xff"}') + "." + b64(b"x" * 32), "malformed")
    case("duplicate alg in the header",
         hmac_token('{"alg":"HS256","alg":"none"}', claims()), "malformed")
    case("duplicate sub in the payload",
         hmac_token({"alg": "HS256"}, compact_json(claims())[:-1] + ',"sub":"root"}'), "malformed")
    # RFC 7519 4: duplicate claim names are top-level; nested objects are nobody's claims
    case("duplicate member in a nested object is not judged",
         hmac_token({"alg": "HS256"}, compact_json(claims())[:-1] + ',"x":{"a":1,"a":2}}'),
         "ok")
    case("same name in two objects is fine",
         hmac_token({"alg": "HS256"}, compact_json(claims())[:-1] + ',"x":{"sub":1}}'), "ok")
    case("crit in the header (PyJWT)", sign("HS256", headers={"crit": ["exp"], "exp": 1}),
         "malformed")
    case("empty crit in the header", hmac_token({"alg": "HS256", "crit": []}, claims()),
         "malformed")
    case("no alg", hmac_token({"typ": "JWT"}, claims()), "malformed")
    case("alg is a number", hmac_token({"alg": 256}, claims()), "malformed")
    case("kid is a number", hmac_token({"alg": "HS256", "kid": 1}, claims()), "malformed")
    case("exp is a string", sign("HS256", claims(exp=str(NOW + 3600))), "malformed")
    case("nbf is a boolean", hmac_token({"alg": "HS256"}, claims(nbf=True)), "malformed")
    case("aud is a number", hmac_token({"alg": "HS256"}, claims(aud=1)), "malformed")
    case("aud array holds a number", hmac_token({"alg": "HS256"}, claims(aud=["api", 1])),
         "malformed")
    case("iss is an array", hmac_token({"alg": "HS256"}, claims(iss=[ISSUER])), "malformed")
    case("sub is a number", hmac_token({"alg": "HS256"}, claims(sub=7)), "malformed")

    # ---- too_large: PD_JWT_MAX is 4096 bytes ----------------------------------------------
    def token_of_length(length):
        for pad in range(0, 4000):
            for extra in range(0, 3):
                token = sign("HS256", claims(pad="x" * pad, sub="alice" + "y" * extra))
                if len(token) == length:
                    return token
        raise SystemExit(f"no token of length {length}")

    case("exactly 4096 bytes", token_of_length(4096), "ok")
    case("4097 bytes", token_of_length(4097), "too_large")
    case("far too large", sign("HS256", claims(pad="x" * 10000)), "too_large")
    case("over the limit and malformed", "a" * 5000, "too_large")

    # ---- exp and nbf (clock_skew 30 s unless said) -----------------------------------------
    for exp, expect in ((NOW - 31, "expired"), (NOW - 30, "ok"), (NOW - 30.5, "expired"),
                        (NOW - 29.5, "ok"), (1e300, "ok"), (-5, "expired")):
        label = f"now{exp - NOW:+}" if abs(exp - NOW) < 1e6 else f"{exp}"
        case(f"exp {label}", sign("HS256", claims(exp=exp)), expect)
    for exp, expect in ((NOW, "ok"), (NOW - 1, "expired"), (NOW - 0.5, "expired")):
        case(f"exp now{exp - NOW:+} with clock_skew 0", sign("HS256", claims(exp=exp)), expect,
             skew=0)
    for nbf, expect in ((NOW + 31, "not_yet_valid"), (NOW + 30, "ok"),
                        (NOW + 30.5, "not_yet_valid"), (NOW + 29.5, "ok")):
        case(f"nbf now{nbf - NOW:+}", sign("HS256", claims(nbf=nbf)), expect)
    case("nbf now+1 with clock_skew 0", sign("HS256", claims(nbf=NOW + 1)), "not_yet_valid", skew=0)
    case("nbf now+0.5 with clock_skew 0", sign("HS256", claims(nbf=NOW + 0.5)), "not_yet_valid",
         skew=0)
    case("no exp, require_exp true", sign("HS256", claims(exp=DROP)), "claim")
    case("no exp, require_exp false", sign("HS256", claims(exp=DROP)), "ok", require_exp=False)
    case("expired, require_exp false", sign("HS256", claims(exp=NOW - 100)), "expired",
         require_exp=False)
    case("valid an hour later is expired", sign("HS256"), "expired", now=NOW + 3600 + 31)

    # ---- iss and aud --------------------------------------------------------------------------
    case("wrong iss", sign("HS256", claims(iss="https://evil.example.com")), "issuer")
    case("iss differs in case", sign("HS256", claims(iss="https://AUTH.example.com")), "issuer")
    case("iss with a trailing slash", sign("HS256", claims(iss=ISSUER + "/")), "issuer")
    case("no iss", sign("HS256", claims(iss=DROP)), "issuer")
    case("wrong aud", sign("HS256", claims(aud="web")), "audience")
    case("aud array holding api", sign("HS256", claims(aud=["web", "api"])), "ok")
    case("aud array without api", sign("HS256", claims(aud=["web", "mobile"])), "audience")
    case("empty aud array", sign("HS256", claims(aud=[])), "audience")
    case("no aud", sign("HS256", claims(aud=DROP)), "audience")
    case("aud is the second provider audience", sign("HS256", claims(aud="admin")), "ok",
         audiences=["api", "admin"])

    # ---- route require claims -----------------------------------------------------------------
    for scope, expect in (("read write", "ok"), ("write read", "ok"), ("read", "ok"),
                          ("readonly write", "claim"), ("READ", "claim"), ("", "claim"),
                          ("write  read", "ok")):
        case(f"scope {scope!r} requires read", sign("HS256", claims(scope=scope)), expect,
             require={"scope": "read"})
    case("scope as an array", sign("HS256", claims(scope=["read", "write"])), "ok",
         require={"scope": "read"})
    case("no scope", sign("HS256"), "claim", require={"scope": "read"})
    case("equal claim", sign("HS256", claims(tenant="acme")), "ok", require={"tenant": "acme"})
    case("different claim", sign("HS256", claims(tenant="acme-evil")), "claim",
         require={"tenant": "acme"})
    case("an equal claim is not a word list", sign("HS256", claims(tenant="acme other")), "claim",
         require={"tenant": "acme"})
    case("absent claim", sign("HS256"), "claim", require={"tenant": "acme"})
    case("array claim holding the value", sign("HS256", claims(roles=["dev", "admin"])), "ok",
         require={"roles": "admin"})
    case("array claim without the value", sign("HS256", claims(roles=["dev"])), "claim",
         require={"roles": "admin"})
    case("number claim", sign("HS256", claims(level=3)), "claim", require={"level": "3"})
    case("boolean claim", sign("HS256", claims(admin=True)), "claim", require={"admin": "true"})
    case("object claim", sign("HS256", claims(org={"name": "acme"})), "claim",
         require={"org": "acme"})
    case("two require claims hold", sign("HS256", claims(scope="read", tenant="acme")), "ok",
         require={"scope": "read", "tenant": "acme"})
    case("one of two require claims fails", sign("HS256", claims(scope="read", tenant="x")),
         "claim", require={"scope": "read", "tenant": "acme"})
    case("require on sub", sign("HS256"), "ok", require={"sub": "alice"})

    # ---- the first failing check wins -----------------------------------------------------------
    case("order: alg before unknown kid", sign("RS256", kid="nope"), "alg", algorithms=["HS256"])
    case("order: unknown kid before signature", splice(sign("RS256", kid="nope"),
                                                       sign("RS256", claims(sub="x"), kid="nope")),
         "unknown_kid")
    case("order: signature before expired",
         splice(sign("HS256", claims(exp=NOW - 100)), sign("HS256", claims(exp=NOW - 99))),
         "signature")
    case("order: expired before issuer", sign("HS256", claims(exp=NOW - 100, iss="x")), "expired")
    case("order: missing exp before nbf", sign("HS256", claims(exp=DROP, nbf=NOW + 100)), "claim")
    case("order: nbf before issuer", sign("HS256", claims(nbf=NOW + 100, iss="x")),
         "not_yet_valid")
    case("order: issuer before audience", sign("HS256", claims(iss="x", aud="x")), "issuer")
    case("order: audience before require", sign("HS256", claims(aud="x")), "audience",
         require={"tenant": "acme"})
    case("order: malformed claim before alg", hmac_token({"alg": "none"}, claims(exp="soon")),
         "malformed")

    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump({"now": NOW, "issuer": ISSUER, "audiences": AUDIENCES, "cases": cases}, f,
                  indent=1, ensure_ascii=True)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: make_tokens.py OUTDIR")
    main(sys.argv[1])
