#!/usr/bin/python3
"""Key files and tokens for the cookbook test (cookbook_tests.cpp), made with PyJWT
(python3-jwt) and cryptography (python3-cryptography): tools independent of policyd.

  cookbook_tokens.py SPEC.json

SPEC: {"providers": {NAME: {"secret_file": PATH?, "jwks_file": PATH?, "algorithms": [ALG...]}},
       "tokens": [{"name": N, "provider": NAME, "alg": ALG, "claims": {...}, "signer": "own"|"other"}]}

Writes every provider's secret_file (a random secret) and jwks_file (a JWK Set with one key
per key type its algorithms need: RSA 2048 "rsa-1", P-256 "p256-1", P-384 "p384-1"), then
prints {"tokens": {N: TOKEN}}. A token with signer "other" has the same header (and kid) but
is signed with a key or secret the provider does not have.
"""
import base64
import json
import secrets
import sys

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa


def b64_uint(n, size=None):
    size = size or (n.bit_length() + 7) // 8
    return base64.urlsafe_b64encode(n.to_bytes(size, "big")).rstrip(b"=").decode()


def key_type(alg):
    if alg.startswith("HS"):
        return "hs"
    if alg.startswith("RS"):
        return "rsa"
    return {"ES256": "p256", "ES384": "p384"}[alg]


def new_key(kind):
    if kind == "hs":
        return secrets.token_urlsafe(32).encode()
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1() if kind == "p256" else ec.SECP384R1())


def jwk(kind, kid, key):
    pub = key.public_key().public_numbers()
    if kind == "rsa":
        return {"kty": "RSA", "kid": kid, "use": "sig", "n": b64_uint(pub.n), "e": b64_uint(pub.e)}
    crv, size = ("P-256", 32) if kind == "p256" else ("P-384", 48)
    return {"kty": "EC", "kid": kid, "use": "sig", "crv": crv, "x": b64_uint(pub.x, size),
            "y": b64_uint(pub.y, size)}


def main():
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    keys = {}  # (provider, kind) -> (kid, key)
    for name, p in spec["providers"].items():
        if p.get("secret_file"):
            secret = new_key("hs")
            with open(p["secret_file"], "wb") as f:
                f.write(secret + b"\n")
            keys[(name, "hs")] = (None, secret)
        if p.get("jwks_file"):
            jwks = []
            for kind in sorted({key_type(a) for a in p["algorithms"]} - {"hs"}):
                kid = kind + "-1"
                key = new_key(kind)
                keys[(name, kind)] = (kid, key)
                jwks.append(jwk(kind, kid, key))
            with open(p["jwks_file"], "w") as f:
                json.dump({"keys": jwks}, f)
    out = {}
    for t in spec["tokens"]:
        kind = key_type(t["alg"])
        if (t["provider"], kind) not in keys:
            sys.exit(f"token {t['name']}: provider {t['provider']} has no {t['alg']} key")
        kid, key = keys[(t["provider"], kind)]
        if t.get("signer", "own") == "other":
            key = new_key(kind)
        headers = {"kid": kid} if kid else None
        out[t["name"]] = jwt.encode(t["claims"], key, algorithm=t["alg"], headers=headers)
    json.dump({"tokens": out}, sys.stdout)


if __name__ == "__main__":
    main()
