#!/usr/bin/env bash
# Call fsup's signed /rpc API with curl: the wire-level reference for the HMAC scheme.
#
#   examples/rpc-curl.sh [--auth-scheme signed-headers|muxi-hmac] METHOD PATH [BODY_FILE] [curl options...]
#
# BODY_FILE is the third argument when it does not start with "-" (name a file that does as
# ./-file). It is signed and sent as the request body (--data-binary). Without it, the empty
# body is signed and none is sent. Every argument after METHOD PATH [BODY_FILE] goes to curl
# unchanged, e.g.:
#
#   examples/rpc-curl.sh GET /rpc/formations
#   examples/rpc-curl.sh POST /rpc/formations/hello/restart -H 'Accept: text/event-stream'
#   examples/rpc-curl.sh PUT /rpc/formations/hello hello.tar.gz -H 'Content-Type: application/gzip'
#   examples/rpc-curl.sh GET /rpc/formations/hello/download -o hello.zip
#
# signed-headers (the default) signs "METHOD\nPATH\nTIMESTAMP\nBODY" with HMAC-SHA256 keyed by
# secret_key from $MUXI_HOME/server/credentials.json (default ~/.muxi), base64-encoded, in the
# X-MUXI-* headers; PATH includes any ?query, exactly as sent. muxi-hmac signs
# "UNIX_SECONDS;METHOD;PATH_WITHOUT_QUERY" the same way and sends it as MUXI's clients do:
# "Authorization: MUXI-HMAC key=..., timestamp=..., signature=...". The server is $MUXI_URL
# (default http://127.0.0.1:7890).
# Needs curl, openssl and python3.
set -euo pipefail

usage="usage: $0 [--auth-scheme signed-headers|muxi-hmac] METHOD PATH [BODY_FILE] [curl options...]"
scheme=signed-headers
if [ "${1:-}" = --auth-scheme ]; then
  scheme=${2:-}
  shift 2 || true
fi
if [ "$scheme" != signed-headers ] && [ "$scheme" != muxi-hmac ]; then
  echo "$0: --auth-scheme is signed-headers or muxi-hmac, not '$scheme'" >&2
  echo "$usage" >&2
  exit 2
fi
if [ $# -lt 2 ]; then
  echo "$usage" >&2
  exit 2
fi
method=$1 path=$2
shift 2
body=
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
  body=$1
  shift
  if [ ! -f "$body" ] || [ ! -r "$body" ]; then
    echo "$0: body file not found or not readable: $body" >&2
    echo "$usage" >&2
    exit 2
  fi
fi

creds=${MUXI_HOME:-$HOME/.muxi}/server/credentials.json
key_id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["key_id"])' "$creds")
secret=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["secret_key"])' "$creds")
hmac() { openssl dgst -sha256 -hmac "$secret" -binary | base64 -w0; }
if [ "$scheme" = muxi-hmac ]; then
  timestamp=$(date -u +%s)
  signature=$(printf '%s;%s;%s' "$timestamp" "$method" "${path%%\?*}" | hmac)
  auth=(-H "Authorization: MUXI-HMAC key=$key_id, timestamp=$timestamp, signature=$signature")
else
  timestamp=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  signature=$( { printf '%s\n%s\n%s\n' "$method" "$path" "$timestamp"; [ -z "$body" ] || cat "$body"; } | hmac)
  auth=(-H "X-MUXI-Key-ID: $key_id" -H "X-MUXI-Timestamp: $timestamp" -H "X-MUXI-Signature: $signature")
fi

data=()
if [ -n "$body" ]; then
  data=(--data-binary "@$body")
fi
exec curl -sS -X "$method" "${MUXI_URL:-http://127.0.0.1:7890}$path" "${auth[@]}" \
  ${data[@]+"${data[@]}"} "$@"
