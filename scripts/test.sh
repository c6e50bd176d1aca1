#!/usr/bin/env bash
# The README's test command: installs everything the tests need on a fresh machine of
# this kind (Debian, PyPI and npm packages), builds once and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "test dependencies: Debian's chromium and chromium-driver (browser tests)"
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium chromium-driver >/dev/null
fi

step "test dependencies: the official Segment libraries, playwright-core and schemathesis (PyPI, npm)"
python3 -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt
(cd tests/clients && npm ci --no-audit --no-fund --loglevel=error)

step "build (debug, tests included)"
cargo build --locked --all-targets

step "tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --locked --no-fail-fast
else
    cargo test --locked --no-fail-fast
fi
