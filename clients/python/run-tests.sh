#!/usr/bin/env bash
# Tests the Python client: a venv with pinned tools, mypy --strict on the
# package and its tests, then pytest against a real keyward server started by the tests.
#
#   clients/python/run-tests.sh                 # every test
#   clients/python/run-tests.sh tests/test_shop.py -x   # any pytest arguments instead
#
# Env: KEYWARD_PY_VENV (venv path, default target/py-client-venv),
# KEYWARD_BIN (server binary, default target/release/keyward, built if absent),
# KEYWARD_PY_SKIP (test files left out of the default run, space-separated).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
venv=${KEYWARD_PY_VENV:-$repo/target/py-client-venv}
export KEYWARD_BIN=${KEYWARD_BIN:-$repo/target/release/keyward}
skip=${KEYWARD_PY_SKIP-}

if [ ! -x "$KEYWARD_BIN" ]; then
  (cd "$repo" && cargo build --release --locked -p keyward-cli)
fi

if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
"${pip[@]}" install "httpx==0.29.0" "pytest==9.2.0" "pytest-asyncio==1.5.0" "mypy==2.4.1"
# Reinstall the package itself every run, so the tests see the current source.
"${pip[@]}" install --force-reinstall --no-deps "$here"

cd "$here"
"$venv/bin/mypy" --strict src/keyward tests

if [ "$#" -gt 0 ]; then
  exec "$venv/bin/python" -m pytest "$@"
fi
ignores=()
for f in $skip; do
  ignores+=("--ignore=$f")
done
exec "$venv/bin/python" -m pytest -q "${ignores[@]}" tests
