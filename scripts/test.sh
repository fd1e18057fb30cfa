#!/usr/bin/env bash
# The test suite: fetches the real models it checks against (cached), then runs every test.
# Real-model tests read $LOWBIT_MODELS (default ~/.cache/lowbit/models).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/fetch-models.sh all >/dev/null
LOWBIT_REQUIRE_MODELS=1 cargo test --workspace --release
