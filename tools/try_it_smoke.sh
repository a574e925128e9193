#!/usr/bin/env bash
# CI check of the README's "Try it in five minutes" path, exactly as written there:
# `make run`, then `hypermobility-cds scenarios` and the two `fire` commands, against port 8000.
set -euo pipefail
cd "$(dirname "$0")/.."
log="$(mktemp)"
if curl -s -o /dev/null http://127.0.0.1:8000/healthz; then
    echo "port 8000 is already in use; cannot run the README's make run" >&2
    exit 1
fi
setsid make run >"$log" 2>&1 &
runner=$!
cleanup() { kill -- -"$runner" 2>/dev/null || true; wait "$runner" 2>/dev/null || true; rm -f "$log"; }
trap cleanup EXIT
for _ in $(seq 1 60); do
    if curl -sf -o /dev/null http://127.0.0.1:8000/readyz; then break; fi
    sleep 1
done
curl -sf -o /dev/null http://127.0.0.1:8000/readyz || { cat "$log" >&2; exit 1; }
listing="$(.venv/bin/hypermobility-cds scenarios)"
grep -q "pv-rehab-referral" <<<"$listing"
cards="$(.venv/bin/hypermobility-cds fire pv-rehab-referral)"
echo "$cards"
grep -q "rehab-referral" <<<"$cards"
cards="$(.venv/bin/hypermobility-cds fire sign-opioid-steroid-brace --no-prefetch)"
echo "$cards"
grep -q "opioid-order" <<<"$cards"
echo "try-it path OK: make run served, scenarios listed, both fire commands printed their cards"
