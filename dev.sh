#!/usr/bin/env bash
# The project's two entry points, each self-sufficient on a fresh clone:
#   ./dev.sh demo   run the built-in end-to-end fusion example
#   ./dev.sh test   run the test suite (fails when it collects no tests)
# Also: ./dev.sh test-all (slow tests too), ./dev.sh bench [--quick], ./dev.sh lint, ./dev.sh shell CMD...
# A project-local virtual environment (.venv) is created on first use and re-synced only when
# pyproject.toml or constraints.txt change, so a second run starts at once.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

VENV=.venv
STAMP="$VENV/.installed"
PY="${PYTHON:-python3}"

ensure_venv() {
    local extras="$1"
    local want
    want="$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)-$extras"
    if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then return; fi
    [[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
    echo "dev.sh: installing into $VENV (first run takes ~2 min)..." >&2
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -c constraints.txt torch==2.13.0
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[$extras]"
    echo "$want" > "$STAMP"
}

export HF_HUB_DISABLE_XET=1 HF_HUB_DISABLE_TELEMETRY=1 HF_HUB_DISABLE_UPDATE_CHECK=1 TOKENIZERS_PARALLELISM=false

cmd="${1:-help}"; shift || true
case "$cmd" in
    demo)     ensure_venv test,bench; exec "$VENV/bin/hf-heterofusion" demo "$@" ;;
    # One pytest worker per core (pytest-xdist; each test file stays on one worker, so its module fixtures are
    # built once): every test model is tiny and single-threaded, so a second core about halves the wall time.
    # HF_HETEROFUSION_TEST_WORKERS=0 runs in one process (e.g. for pdb).
    test)     ensure_venv test,bench; exec "$VENV/bin/python" -m pytest -n "${HF_HETEROFUSION_TEST_WORKERS:-auto}" --dist loadfile "$@" ;;
    test-all) ensure_venv test,bench; exec "$VENV/bin/python" -m pytest -n "${HF_HETEROFUSION_TEST_WORKERS:-auto}" --dist loadfile -m "" "$@" ;;
    bench)    ensure_venv test,bench; exec "$VENV/bin/python" -m benchmarks "$@" ;;
    lint)     ensure_venv test,bench; exec "$VENV/bin/ruff" check hf_heterofusion merge_methods tests benchmarks ;;
    shell)    ensure_venv test,bench; exec "$@" ;;
    *) sed -n '2,7p' "$0"; exit 2 ;;
esac
