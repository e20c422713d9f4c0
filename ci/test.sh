#!/usr/bin/env bash
# Tern's test command: installs what is missing (ci/setup.sh), then runs
# the lints (ci/lint.sh: rustfmt, clippy on the host and kernel targets), then
# every test of the workspace: host unit tests of the portable crates and
# host tools, and the QEMU system tests in ci/tests (which build the kernels).
# Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash ci/setup.sh
bash ci/lint.sh
exec cargo test "$@"
