#!/usr/bin/env bash
# Regenerates the development CA and the server certificate for localhost and 127.0.0.1.
# These keys are public: never use them outside development and tests.
set -euo pipefail
cd "$(dirname "$0")"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
  -subj "/CN=Understudy Dev CA" -keyout ca.key -out ca.crt \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -subj "/CN=localhost" -keyout server.key.tmp -out server.csr
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -out server.crt \
  -extfile <(printf "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n")
openssl pkcs8 -topk8 -nocrypt -in server.key.tmp -out server.key
rm -f server.csr server.key.tmp ca.srl
# Git records only 644/755, so a checkout has these 0644 again; check-config warns then.
chmod 600 ca.key server.key
echo "wrote ca.crt, ca.key, server.crt, server.key"
