#!/usr/bin/env bash
# One entry point for a newcomer and for CI: sets up what is missing, then runs.
#   bash tools/dev.sh demo [ARGS]   the demo of the main job
#   bash tools/dev.sh test [ARGS]   the whole test suite (lint, types, tests with coverage)
#   bash tools/dev.sh bench [ARGS]  the benchmarks (tools/bench.py)
# Setup is idempotent: a virtualenv in .venv with the project and its dev extras installed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}

need_python() {
    if ! command -v "$PYTHON" >/dev/null 2>&1; then
        echo "tools/dev.sh: $PYTHON not found; install Python 3.11 or newer" >&2
        exit 2
    fi
    "$PYTHON" - <<'PY' || { echo "tools/dev.sh: Python 3.11 or newer is required" >&2; exit 2; }
import sys
sys.exit(0 if sys.version_info >= (3, 11) else 1)
PY
}

setup_venv() {
    need_python
    local stamp=.venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)
    if [ ! -x .venv/bin/python ]; then
        "$PYTHON" -m venv .venv
    fi
    if [ ! -f "$stamp" ]; then
        .venv/bin/python -m pip install --quiet --upgrade pip
        .venv/bin/python -m pip install --quiet -e '.[dev]'
        rm -f .venv/.installed-*
        touch "$stamp"
    fi
}

cmd=${1:-}
shift || true
case "$cmd" in
    demo)
        setup_venv
        exec .venv/bin/kci-engine demo "$@"
        ;;
    test)
        setup_venv
        .venv/bin/ruff check engine tests tools
        .venv/bin/ruff format --check engine tests tools
        .venv/bin/mypy engine
        exec .venv/bin/python -m pytest "$@"
        ;;
    bench)
        setup_venv
        exec .venv/bin/python tools/bench.py "$@"
        ;;
    *)
        echo "usage: bash tools/dev.sh {demo|test|bench} [ARGS]" >&2
        exit 2
        ;;
esac
