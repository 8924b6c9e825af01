#!/usr/bin/env bash
# The main job: build every wheel, run every benchmark, print the reports (docs/benchmarks/).
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 -m nox -s bench "$@"
