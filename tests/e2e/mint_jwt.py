#!/usr/bin/python3
"""Tokens and key sets for the end-to-end JWT tests, made with PyJWT (python3-jwt) and
cryptography (python3-cryptography) -- tools independent of policyd.

  mint_jwt.py token --alg HS256 --key SECRET_FILE [--kid K] [--claims JSON] [--exp-in S]
                    [--nbf-in S] [--no-exp] [--drop CLAIM]
      prints a token; claims default to iss https://auth.example.com, aud api, sub alice,
      exp now+300 (--exp-in, relative to now; --no-exp leaves it out)
  mint_jwt.py jwks PEM:KID [PEM:KID ...]
      prints an RFC 7517 JWK Set of the public halves of the given private keys
"""
import argparse
import base64
import json
import sys
import time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa


def b64_uint(n, size=None):
    size = size or (n.bit_length() + 7) // 8
    return base64.urlsafe_b64encode(n.to_bytes(size, "big")).rstrip(b"=").decode()


def load_private(path):
    with open(path, "rb") as f:
        return serialization.load_pem_private_key(f.read(), password=None)


def cmd_token(a):
    now = int(time.time())
    claims = {"iss": "https://auth.example.com", "aud": "api", "sub": "alice", "iat": now}
    if not a.no_exp:
        claims["exp"] = now + a.exp_in
    if a.nbf_in is not None:
        claims["nbf"] = now + a.nbf_in
    claims.update(json.loads(a.claims))
    for name in a.drop:
        claims.pop(name, None)
    headers = {"kid": a.kid} if a.kid else None
    if a.alg.startswith("HS"):
        with open(a.key, "rb") as f:
            key = f.read().rstrip(b"\n")
    else:
        key = load_private(a.key)
    print(jwt.encode(claims, key, algorithm=a.alg, headers=headers))


def cmd_jwks(a):
    keys = []
    for spec in a.keys:
        path, kid = spec.rsplit(":", 1)
        pub = load_private(path).public_key()
        if isinstance(pub, rsa.RSAPublicKey):
            n = pub.public_numbers()
            keys.append({"kty": "RSA", "kid": kid, "use": "sig", "n": b64_uint(n.n), "e": b64_uint(n.e)})
        elif isinstance(pub, ec.EllipticCurvePublicKey):
            n = pub.public_numbers()
            crv, size = {"secp256r1": ("P-256", 32), "secp384r1": ("P-384", 48)}[pub.curve.name]
            keys.append({"kty": "EC", "kid": kid, "use": "sig", "crv": crv, "x": b64_uint(n.x, size),
                         "y": b64_uint(n.y, size)})
        else:
            sys.exit("unsupported key " + path)
    print(json.dumps({"keys": keys}))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("token")
    t.add_argument("--alg", required=True)
    t.add_argument("--key", required=True)
    t.add_argument("--kid")
    t.add_argument("--claims", default="{}")
    t.add_argument("--exp-in", type=int, default=300)
    t.add_argument("--nbf-in", type=int)
    t.add_argument("--no-exp", action="store_true")
    t.add_argument("--drop", action="append", default=[], help="leave this claim out")
    j = sub.add_parser("jwks")
    j.add_argument("keys", nargs="+")
    a = p.parse_args()
    (cmd_token if a.cmd == "token" else cmd_jwks)(a)


if __name__ == "__main__":
    main()
