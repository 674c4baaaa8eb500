#!/usr/bin/env bash
# make conformance: start a moto server of our own on a free 127.0.0.1 port, run
# `scriptbox conformance` against it (it resets moto before each document), stop the server.
# Arguments: the corpus folder, the attachments folder; more arguments go to scriptbox.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/target/moto/venv/bin"
corpus=${1:?the corpus folder}; attachments=${2:?the attachments folder}; shift 2
if [ ! -d "$corpus" ]; then
  echo "SKIPPED: conformance: $corpus does not exist (the shared corpus is not in a user's clone)"
  exit 0
fi
port=$("$venv/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# AWS's managed policies (AdministratorAccess...) exist in every account; moto loads them only
# when asked.
MOTO_IAM_LOAD_MANAGED_POLICIES=true "$venv/moto_server" -H 127.0.0.1 -p "$port" >"$root/target/moto/conformance-server.log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true' EXIT
"$venv/python" - "$port" <<'PY'
import sys, time, urllib.request
url = "http://127.0.0.1:%s/moto-api/" % sys.argv[1]
for _ in range(150):
    try:
        urllib.request.urlopen(url, timeout=1)
        sys.exit(0)
    except Exception:
        time.sleep(0.2)
sys.exit("moto_server did not answer on %s within 30 s" % url)
PY
"$root/target/debug/scriptbox" conformance "$corpus" --attachments "$attachments" \
  --aws-endpoint "http://127.0.0.1:$port" --fixtures "$root/tests/conformance/fixtures" \
  --fixture-python "$venv/python" --expected "$root/tests/conformance/expected.tsv" "$@"
