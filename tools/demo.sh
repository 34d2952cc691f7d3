#!/usr/bin/env bash
# README command 1: set up (idempotent), then run the on-robot topology end to end on the
# shipped sample audio and image (or live devices with --live). Options: python tools/demo.py -h
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash tools/setup.sh
# shellcheck disable=SC1091
. ./locara_env.sh
exec python tools/demo.py "$@"
