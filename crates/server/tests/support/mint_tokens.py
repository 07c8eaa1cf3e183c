"""Mints the tokens the auth tests verify, with PyJWT: an implementation
independent of protosync. Prints one JSON object: JWKS documents, tokens and
the time they were minted at.

Arguments: the HS256 secret, then the base URL of the Better Auth issuer the
test serves (its JWKS is at <base URL>/api/auth/jwks)."""
import base64, hashlib, hmac, json, sys, time, uuid
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

SECRET = sys.argv[1]
BETTER_AUTH_URL = sys.argv[2]
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

# Better Auth's jwt() plugin: EdDSA (Ed25519) keys in a JWKS whose entries
# carry crv, x, kty and kid only; tokens whose header is alg and kid (no typ),
# whose payload is the session's user (id, name, email, emailVerified, image,
# createdAt, updatedAt) plus iat, exp (15 minutes), iss (the base URL's
# origin), aud (the base URL, a string) and sub (the user id). No nbf, no jti.
better_auth_key = ed25519.Ed25519PrivateKey.generate()
better_auth_kid = str(uuid.uuid4())
_okp = json.loads(OKPAlgorithm.to_jwk(better_auth_key.public_key()))
better_auth_jwks = {"keys": [{"crv": _okp["crv"], "x": _okp["x"], "kty": "OKP", "kid": better_auth_kid}]}
_origin = "{0.scheme}://{0.netloc}".format(urlsplit(BETTER_AUTH_URL))

def better_auth(user_id, name, email, issued=now):
    payload = {
        "id": user_id,
        "name": name,
        "email": email,
        "emailVerified": True,
        "image": None,
        "createdAt": "2026-01-05T09:12:44.281Z",
        "updatedAt": "2026-01-05T09:12:44.281Z",
        "iat": issued,
        "exp": issued + 15 * 60,
        "iss": _origin,
        "aud": BETTER_AUTH_URL,
        "sub": user_id,
    }
    return jwt.encode(payload, better_auth_key, algorithm="EdDSA", headers={"kid": better_auth_kid, "typ": None})

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
    # exp passed 5 s ago: accepted within a leeway, but never live.
    "hs_expired_within_leeway": hs(claims(exp=now - 5, jti="lapsed")),
    "hs_no_jti": hs({k: v for k, v in claims().items() if k != "jti"}),
    "hs_old": hs(claims(iat=now - 7200)),
    "better_auth": better_auth("7dSGkR3mW1qVx9LpT0aZcB", "Ann Example", "ann@example.com"),
    # Another issuer's user with the same sub as the bridge's "ann".
    "better_auth_ann": better_auth("ann", "Ann Other", "ann@other.example"),
}
print(json.dumps({"jwks_v1": jwks_v1, "jwks_v2": jwks_v2, "better_auth_jwks": better_auth_jwks, "tokens": tokens, "now": now}))
