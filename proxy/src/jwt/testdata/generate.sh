#!/usr/bin/env bash
# Regenerates the JWT test keys and their JSON Web Key Set (run from this folder; needs openssl, xxd).
# The keys are test fixtures only: they sign tokens in proxy/src/jwt/tests.rs.
set -euo pipefail

b64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }
# The last N bytes of a DER public key (the raw point or key after the SPKI header), base64url.
tail_bytes() { openssl pkey -pubin -in "$1" -outform DER | tail -c "$2"; }

openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa.pem
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ec256.pem
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out ec384.pem
openssl genpkey -algorithm ED25519 -out ed25519.pem
for key in rsa ec256 ec384 ed25519; do openssl pkey -in "$key.pem" -pubout -out "$key.pub.pem"; done

n=$(openssl rsa -in rsa.pem -noout -modulus | cut -d= -f2 | xxd -r -p | b64url)
ec() { # $1 key, $2 coordinate length
  local point; point=$(tail_bytes "$1.pub.pem" $((2 * $2)) | xxd -p | tr -d '\n')
  x=$(echo "${point:0:$((4 * $2 / 2))}" | xxd -r -p | b64url)
  y=$(echo "${point:$((4 * $2 / 2))}" | xxd -r -p | b64url)
}
ec ec256 32; x256=$x; y256=$y
ec ec384 48; x384=$x; y384=$y
ed=$(tail_bytes ed25519.pub.pem 32 | b64url)

cat > jwks.json <<JSON
{"keys": [
  {"kty": "RSA", "kid": "rsa", "use": "sig", "n": "$n", "e": "AQAB"},
  {"kty": "EC", "kid": "ec256", "crv": "P-256", "x": "$x256", "y": "$y256"},
  {"kty": "EC", "kid": "ec384", "crv": "P-384", "alg": "ES384", "x": "$x384", "y": "$y384"},
  {"kty": "OKP", "kid": "ed25519", "crv": "Ed25519", "x": "$ed"}
]}
JSON
