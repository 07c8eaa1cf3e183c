"""Mints the tokens the auth tests verify, with PyJWT: an implementation
independent of protosync. Prints one JSON object: JWKS documents and tokens."""
import base64, hashlib, hmac, json, sys, time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

SECRET = sys.argv[1]
now = int(time.time())
HS_ISS, IDP_ISS, AUD = "https://bridge.test", "https://idp.test", "protosync"

rsa1 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
rsa2 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ec1 = ec.generate_private_key(ec.SECP256R1())
ed1 = ed25519.Ed25519PrivateKey.generate()

def jwk(algorithm, key, kid, alg):
    d = json.loads(algorithm.to_jwk(key.public_key()))
    d.update(kid=kid, use="sig", alg=alg)
    return d

jwks_v1 = {"keys": [jwk(RSAAlgorithm, rsa1, "rsa1", "RS256"), jwk(ECAlgorithm, ec1, "ec1", "ES256"), jwk(OKPAlgorithm, ed1, "ed1", "EdDSA")]}
jwks_v2 = {"keys": jwks_v1["keys"] + [jwk(RSAAlgorithm, rsa2, "rsa2", "RS256")]}

def claims(sub="ann", iss=HS_ISS, **extra):
    c = {"sub": sub, "iss": iss, "aud": AUD, "iat": now, "exp": now + 600, "jti": f"{sub}-{iss}-{len(extra)}"}
    c.update(extra)
    return c

def hs(c, secret=SECRET):
    return jwt.encode(c, secret, algorithm="HS256")

def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

def forge_hs_with_public_key():
    # The HS/RS confusion: HMAC over the token with the RSA public key as the secret.
    header = {"alg": "HS256", "typ": "JWT", "kid": "rsa1"}
    pem = rsa1.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims(iss=IDP_ISS)).encode())
    signature = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(signature)

def tampered():
    header, payload, signature = hs(claims()).split(".")
    body = claims(sub="bob")
    return header + "." + b64(json.dumps(body).encode()) + "." + signature

tokens = {
    "hs_ann": hs(claims()),
    "hs_ann_again": hs(claims(refreshed=True)),
    "hs_bob": hs(claims(sub="bob")),
    "hs_short": hs(claims(exp=now + 3, jti="short")),
    "hs_revocable": hs(claims(jti="revoke-me")),
    "rs": jwt.encode(claims(iss=IDP_ISS), rsa1, algorithm="RS256", headers={"kid": "rsa1"}),
    "es": jwt.encode(claims(iss=IDP_ISS), ec1, algorithm="ES256", headers={"kid": "ec1"}),
    "eddsa": jwt.encode(claims(iss=IDP_ISS), ed1, algorithm="EdDSA", headers={"kid": "ed1"}),
    "rotated": jwt.encode(claims(iss=IDP_ISS), rsa2, algorithm="RS256", headers={"kid": "rsa2"}),
    "expired": hs(claims(exp=now - 600)),
    "not_yet_valid": hs(claims(nbf=now + 600)),
    "wrong_issuer": hs(claims(iss="https://evil.test")),
    "wrong_audience": hs(claims(aud="someone-else")),
    "wrong_key": hs(claims(), secret="x" * 40),
    "alg_none": jwt.encode(claims(), None, algorithm="none"),
    "hs_rs_confusion": forge_hs_with_public_key(),
    "tampered": tampered(),
    "unknown_kid": jwt.encode(claims(iss=IDP_ISS), rsa2, algorithm="RS256", headers={"kid": "nobody"}),
}
print(json.dumps({"jwks_v1": jwks_v1, "jwks_v2": jwks_v2, "tokens": tokens}))
