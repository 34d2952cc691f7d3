#!/usr/bin/env bash
# README command 2: set up (idempotent), lint, and run the whole test suite.
#   bash tools/test.sh [extra pytest args]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash tools/setup.sh
# shellcheck disable=SC1091
. ./locara_env.sh
echo "[test] ruff check"
ruff check .
echo "[test] pytest"
# No reruns: a test that needs a second try is a defect (in the test or in the product).
exec pytest "$@"
