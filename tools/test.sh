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
# The graph tests run real processes in real time on a small machine: a test that fails is run
# once more, and pytest's summary counts it as "rerun", so flakiness stays visible.
exec pytest --reruns 1 --reruns-delay 2 "$@"
