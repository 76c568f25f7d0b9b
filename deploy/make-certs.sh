#!/usr/bin/env bash
# Make a development CA, a server certificate and client certificates for TLS / mutual TLS.
#
#   deploy/make-certs.sh [OUT_DIR] [--hosts "localhost,127.0.0.1,lada.example.org"]
#                        [--clients "client-1 client-2 client-3"] [--days 825] [--force]
#
# OUT_DIR (default deploy/certs) receives:
#   ca.pem ca.key                  the CA (keep ca.key off the servers; re-running reuses it)
#   server.pem server.key          for `lada server --transport.tls_cert server.pem --transport.tls_key server.key`
#   clients/NAME.pem clients/NAME.key  one per client, CN and SAN = the client name, for
#                                      `lada client --client.tls_ca ca.pem --client.tls_cert ... --client.tls_key ...`
# With `lada server --transport.tls_client_ca ca.pem` (mutual TLS) a client must present a certificate
# signed by this CA that names the client it enrols as.
#
# ECDSA P-256 keys, SHA-256 signatures. Development only: for production use your own PKI.
set -euo pipefail

out="deploy/certs"
hosts="localhost,127.0.0.1"
clients="client-1 client-2 client-3"
days=825
force=0
if [[ $# -gt 0 && "$1" != --* ]]; then out="$1"; shift; fi
while [[ $# -gt 0 ]]; do
  case "$1" in
    --hosts) hosts="$2"; shift 2 ;;
    --clients) clients="$2"; shift 2 ;;
    --days) days="$2"; shift 2 ;;
    --force) force=1; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
command -v openssl >/dev/null || { echo "openssl not found" >&2; exit 1; }
mkdir -p "$out/clients"
umask 077
tmp="$(mktemp -d)"
mkdir -p "$tmp/clients"
trap 'rm -rf "$tmp"' EXIT

newkey() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# sign NAME CN SAN EKU: a certificate for key $out/NAME.key signed by the CA
sign() {
  local name="$1" cn="$2" san="$3" eku="$4"
  newkey "$out/$name.key"
  openssl req -new -key "$out/$name.key" -subj "/CN=$cn/O=LaDa development" -out "$tmp/$name.csr"
  printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=%s\nsubjectAltName=%s\n' \
    "$eku" "$san" > "$tmp/$name.ext"
  openssl x509 -req -in "$tmp/$name.csr" -CA "$out/ca.pem" -CAkey "$out/ca.key" -CAcreateserial \
    -CAserial "$tmp/ca.srl" -days "$days" -sha256 -extfile "$tmp/$name.ext" -out "$out/$name.pem" 2>/dev/null
  openssl verify -CAfile "$out/ca.pem" "$out/$name.pem" >/dev/null
}

if [[ $force -eq 1 || ! -f "$out/ca.pem" || ! -f "$out/ca.key" ]]; then
  newkey "$out/ca.key"
  openssl req -x509 -new -key "$out/ca.key" -sha256 -days "$days" -subj "/CN=LaDa development CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$out/ca.pem"
  echo "made CA $out/ca.pem"
else
  echo "reusing CA $out/ca.pem"
fi

san=""
IFS=',' read -ra hs <<< "$hosts"
for h in "${hs[@]}"; do
  h="${h// /}"
  [[ -z "$h" ]] && continue
  if [[ "$h" =~ ^[0-9.]+$ || "$h" == *:* ]]; then san+="IP:$h,"; else san+="DNS:$h,"; fi
done
sign server "${hs[0]// /}" "${san%,}" serverAuth
echo "made server certificate $out/server.pem for ${hosts}"

for c in $clients; do
  [[ "$c" =~ ^[A-Za-z0-9._-]+$ ]] || { echo "bad client name: $c" >&2; exit 2; }
  sign "clients/$c" "$c" "DNS:$c" clientAuth
done
[[ -n "$clients" ]] && echo "made client certificates for: $clients"
chmod 644 "$out"/*.pem
find "$out/clients" -name '*.pem' -exec chmod 644 {} +
