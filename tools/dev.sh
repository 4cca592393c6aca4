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
        .venv/bin/python -m pip install --quiet -e '.[all,dev]'
        # The wheels of a bare install (the engine and its base dependencies) and of pytest, so
        # tests/test_packaging.py can install kci-engine into a fresh virtualenv offline.
        rm -rf .venv/wheelhouse
        .venv/bin/python -m pip wheel --quiet -w .venv/wheelhouse . pytest
        rm -f .venv/.installed-*
        touch "$stamp"
    fi
}

# The test suite runs against a real PostgreSQL server, renders statecharts with Graphviz and
# checks the documentation site's pages in a headless Chromium.
ensure_system_packages() {
    local missing=()
    if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null; then
        missing+=(postgresql)
    fi
    command -v dot >/dev/null 2>&1 || missing+=(graphviz)
    [ -x /usr/bin/chromium ] || missing+=(chromium)
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "tools/dev.sh: installing ${missing[*]} with apt-get" >&2
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "tools/dev.sh: please install ${missing[*]} (no apt-get here)" >&2
        exit 2
    fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

cmd=${1:-}
shift || true
case "$cmd" in
    demo)
        setup_venv
        exec .venv/bin/kci-engine demo "$@"
        ;;
    test)
        ensure_system_packages
        setup_venv
        .venv/bin/ruff check engine tests tools
        .venv/bin/ruff format --check engine tests tools
        .venv/bin/mypy engine
        # Two worker processes (KCI_TEST_WORKERS=0 for one): every test picks free ports and
        # its own files and databases, and pytest-cov combines the workers' coverage.
        exec .venv/bin/python -m pytest -n "${KCI_TEST_WORKERS:-2}" "$@"
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
