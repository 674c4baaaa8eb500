#!/usr/bin/env bash
# Make sure moto (the AWS emulator the tests run against) is installed in target/moto/venv:
# a venv of the machine's python3 holding exactly scripts/moto-requirements.txt (moto[server]
# 5.2.5 and its pinned dependencies, installed with --no-deps so nothing else is resolved).
# Idempotent: a stamp holds the requirements file's hash; when it matches, nothing runs (< 1 s).
# Prints one line.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
reqs="$root/scripts/moto-requirements.txt"
dir="$root/target/moto"
venv="$dir/venv"
stamp="$dir/installed.sha256"
python=${PYTHON:-python3}

want=$(sha256sum "$reqs" | cut -d' ' -f1)
if [ -x "$venv/bin/moto_server" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "ensure-moto: moto already installed in target/moto/venv"
  exit 0
fi

log="$dir/install.log"
mkdir -p "$dir"
fail() { echo "ensure-moto: $1 (see $log)" >&2; exit 1; }
start=$(date +%s)
# A half-built or outdated venv is rebuilt from nothing, so the set is exactly the file's.
rm -rf "$venv" "$stamp"
"$python" -m venv "$venv" >"$log" 2>&1 || fail "$python -m venv failed"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
  --no-deps --only-binary=:all: -r "$reqs" >>"$log" 2>&1 || fail "pip install of $reqs failed"
"$venv/bin/python" -m pip check >>"$log" 2>&1 || fail "the installed set is inconsistent (pip check)"
[ -x "$venv/bin/moto_server" ] || fail "moto_server is missing after the install"
echo "$want" >"$stamp"
echo "ensure-moto: installed moto $("$venv/bin/python" -c 'import moto; print(moto.__version__)') in target/moto/venv ($(( $(date +%s) - start )) s)"
