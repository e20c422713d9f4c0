#!/usr/bin/env bash
# The discipline checks CI runs before the tests: rustfmt, and clippy with
# warnings as errors on the host workspace and on every kernel target (the
# workspace lints in Cargo.toml make a missing `SAFETY:` comment, an unsafe
# operation outside an `unsafe` block in an unsafe fn, and an undocumented
# public item of a library crate fail here).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

echo "lint: cargo fmt --check" >&2
cargo fmt --all -- --check

echo "lint: clippy, host workspace" >&2
cargo clippy --all-targets --quiet -- -D warnings

# Kernels build in their own target directory (as `flash` builds them).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/kernels"
for board in "tern-board-pc x86_64-unknown-none" \
    "tern-board-virt aarch64-unknown-none" \
    "tern-board-rpi4 aarch64-unknown-none"; do
    set -- $board
    echo "lint: clippy, $1 ($2)" >&2
    cargo clippy --release --quiet -p "$1" --target "$2" -- -D warnings
done
