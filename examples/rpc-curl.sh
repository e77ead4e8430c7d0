#!/usr/bin/env bash
# Call fsup's signed /rpc API with curl: the wire-level reference for the HMAC scheme.
#
#   examples/rpc-curl.sh METHOD PATH [BODY_FILE] [extra curl arguments...]
#
# Signs "METHOD\nPATH\nTIMESTAMP\nBODY" with HMAC-SHA256 keyed by secret_key from
# $MUXI_HOME/server/credentials.json (default ~/.muxi), base64-encoded. The server is
# $MUXI_URL (default http://127.0.0.1:7890). Needs curl, openssl and python3.
set -euo pipefail

if [ $# -lt 2 ]; then
  echo "usage: $0 METHOD PATH [BODY_FILE] [curl args...]" >&2
  exit 2
fi
method=$1 path=$2
body=${3:-/dev/null}
shift $(( $# >= 3 ? 3 : 2 ))

creds=${MUXI_HOME:-$HOME/.muxi}/server/credentials.json
key_id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["key_id"])' "$creds")
secret=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["secret_key"])' "$creds")
timestamp=$(date -u +%Y-%m-%dT%H:%M:%SZ)
signature=$( { printf '%s\n%s\n%s\n' "$method" "$path" "$timestamp"; cat "$body"; } \
  | openssl dgst -sha256 -hmac "$secret" -binary | base64 -w0)

exec curl -sS -X "$method" "${MUXI_URL:-http://127.0.0.1:7890}$path" \
  -H "X-MUXI-Key-ID: $key_id" \
  -H "X-MUXI-Timestamp: $timestamp" \
  -H "X-MUXI-Signature: $signature" \
  --data-binary @"$body" "$@"
