#!/usr/bin/env bash
# What CI runs: the README's test command (the same as .ci/run). Only calls nox.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 -m nox -s build test "$@"
