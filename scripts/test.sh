#!/usr/bin/env bash
# The README's test command: installs everything the tests need on a fresh machine of
# this kind (Debian, PyPI and npm packages), builds once and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "test dependencies: Debian's chromium and chromium-driver (browser tests), clickhouse-server (the ClickHouse store's tests start it as a plain process)"
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1 || [ ! -x /usr/sbin/clickhouse-server ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # The package's own service is not started (no init here); the tests run their own.
    apt-get install -y -qq chromium chromium-driver clickhouse-server >/dev/null
fi

step "test dependencies: the official Segment libraries, playwright-core and schemathesis (PyPI, npm)"
python3 -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt
(cd tests/clients && npm ci --no-audit --no-fund --loglevel=error)

step "format and lints: cargo fmt --check, cargo clippy -D warnings (STYLE.md; rustfmt.toml, clippy.toml)"
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    rustup component add rustfmt clippy
fi
cargo fmt --check
(cd fuzz && cargo fmt --check)
cargo clippy --locked --all-targets -- -D warnings

step "build (debug, tests included)"
cargo build --locked --all-targets

step "tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --locked --no-fail-fast
else
    cargo test --locked --no-fail-fast
fi

step "fuzz smoke run: every parser of outside input, 10 s each (fuzz/README.md)"
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked --version 0.13.2
fi
scratch=$(mktemp -d)
(
    cd fuzz
    for target in segment_payload record_import config signed_tokens; do
        mkdir -p "$scratch/$target"
        if ! RUSTC_BOOTSTRAP=1 cargo fuzz run -O --sanitizer none "$target" "$scratch/$target" "corpus/$target" \
            -- -max_total_time=10 -rss_limit_mb=2048 > "$scratch/$target.log" 2>&1; then
            tail -40 "$scratch/$target.log" >&2
            echo "fuzz target $target failed; its input is in fuzz/artifacts/$target" >&2
            exit 1
        fi
        echo "$target: $(grep -E '^Done' "$scratch/$target.log")"
    done
)
rm -rf "$scratch"

