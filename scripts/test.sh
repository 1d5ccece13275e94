#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine (as root) or a warm one:
# installs and starts the real services, then fmt check, clippy, all tests.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is not installed; install a Rust toolchain (rustup) first" >&2
  exit 2
fi
for tool in fmt clippy; do
  cargo "$tool" --version >/dev/null 2>&1 || { echo "cargo $tool is missing (rustup component add ${tool/fmt/rustfmt})" >&2; exit 2; }
done

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
echo "== cargo test"
cargo test --locked --all-targets -- --test-threads="${SB_TEST_THREADS:-4}"
