#!/usr/bin/env bash
# Build the Cerebras environment: .venv-cerebras with cerebras-pytorch 2.10.0 and gigagpt.
#
#   scripts/cerebras_env.sh            # create or update ./.venv-cerebras (idempotent)
#   CEREBRAS_VENV=/path scripts/cerebras_env.sh
#   scripts/cerebras_env.sh --download DIR   # only download every wheel it needs into DIR (a wheelhouse)
#
# cerebras-pytorch 2.10.0 ships only a CPython 3.11 wheel for Linux x86_64 and pins torch==2.4.0 and
# numpy==1.25.0, so it gets its own virtual environment. gigagpt is installed with --no-deps plus an
# explicit list of its light dependencies, so pip never moves torch/numpy away from cstorch's pins.
# First run: ~3 GB download, ~6 GB on disk, a few minutes. A second run with the env present is fast.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CEREBRAS_VENV:-$ROOT/.venv-cerebras}"
CSTORCH_VERSION="2.10.0"
# gigagpt's runtime deps and what notebook 04 needs (torch and numpy come from cerebras-pytorch).
EXTRA_DEPS=(pyyaml tiktoken tqdm pytest papermill ipykernel matplotlib ipywidgets nbconvert)
# A room without internet (README): `--download DIR` (what `WHEELHOUSE_CEREBRAS=1 make wheelhouse` runs) saves
# the wheels; where $WHEELHOUSE/cerebras holds them (default ./wheelhouse), installs come from there alone.
DOWNLOAD=""
if [[ "${1:-}" == "--download" ]]; then
    DOWNLOAD="${2:?usage: scripts/cerebras_env.sh --download DIR}"
    CEREBRAS_ENV_REQUIRED=1  # asked for explicitly: where it cannot be done, fail
fi
WHEELS="${WHEELHOUSE:-$ROOT/wheelhouse}/cerebras"
FROM_WHEELHOUSE=()
if [[ -z "$DOWNLOAD" ]] && compgen -G "$WHEELS/cerebras_pytorch-$CSTORCH_VERSION-*.whl" > /dev/null; then
    FROM_WHEELHOUSE=(--no-index --find-links "$WHEELS")
fi

# Where the environment cannot exist, say why and stop without failing `make course` / `make test` (notebook 04
# and tests/test_cerebras.py then skip with the reason); CEREBRAS_ENV_REQUIRED=1 makes it an error instead.
cannot() {
    echo "cerebras_env: skipped: $1" >&2
    [[ "${CEREBRAS_ENV_REQUIRED:-0}" == 1 ]] && exit 2
    exit 0
}
if [[ "$(uname -s)/$(uname -m)" != "Linux/x86_64" ]]; then
    cannot "cerebras-pytorch $CSTORCH_VERSION has wheels for Linux x86_64 only (this is $(uname -s)/$(uname -m))"
fi
PY="${CEREBRAS_PYTHON:-$(command -v python3.11 || true)}"
if [[ -z "$PY" ]] || ! "$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null; then
    cannot "needs Python 3.11 (python3.11 on PATH, or CEREBRAS_PYTHON=/path/to/python3.11)"
fi

# Fast path: the env has the pinned versions, the extras, and gigagpt installed (editable) from this
# checkout -> skip the installs. Checked from / so the checkout's own gigagpt/ folder cannot stand in for it.
ready() {
    [[ -x "$VENV/bin/python" ]] && (cd / && "$VENV/bin/python" - "$CSTORCH_VERSION" "$ROOT" "${EXTRA_DEPS[@]}" <<'EOF' 2>/dev/null
import sys
from importlib.metadata import version
from pathlib import Path
assert version("cerebras-pytorch") == sys.argv[1] and version("torch").startswith("2.4.0")
for name in sys.argv[3:]:
    version(name)
import gigagpt
assert Path(gigagpt.__file__).resolve().parent == Path(sys.argv[2]).resolve() / "gigagpt"
EOF
)
}

if [[ -n "$DOWNLOAD" ]]; then
    # The same two steps as the install below, so the offline install finds every version it picks; plus
    # pip/setuptools/wheel for the venv's pip upgrade and gigagpt's editable build.
    mkdir -p "$DOWNLOAD"
    "$PY" -m pip download --quiet --dest "$DOWNLOAD" pip setuptools wheel "cerebras-pytorch==$CSTORCH_VERSION"
    CONSTRAINTS="$(mktemp)"
    trap 'rm -f "$CONSTRAINTS"' EXIT
    ls "$DOWNLOAD" | sed -nE 's/^(torch|numpy)-([^-]+)-.*\.whl$/\1==\2/p' > "$CONSTRAINTS"  # cstorch's pins
    "$PY" -m pip download --quiet --dest "$DOWNLOAD" -c "$CONSTRAINTS" "${EXTRA_DEPS[@]}"
    echo "cerebras_env: wheels for $VENV in $DOWNLOAD ($(du -sh "$DOWNLOAD" | cut -f1))"
    exit 0
fi

if ready; then
    echo "cerebras_env: $VENV is ready (cerebras-pytorch $CSTORCH_VERSION, gigagpt from $ROOT)"
else
    [[ ${#FROM_WHEELHOUSE[@]} -gt 0 ]] && echo "cerebras_env: installing from $WHEELS (no network)"
    [[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet "${FROM_WHEELHOUSE[@]}" --upgrade pip
    "$VENV/bin/python" -m pip install "${FROM_WHEELHOUSE[@]}" "cerebras-pytorch==$CSTORCH_VERSION"
    # Constrain the extras to what cstorch installed, so nothing upgrades torch or numpy.
    CONSTRAINTS="$(mktemp)"
    trap 'rm -f "$CONSTRAINTS"' EXIT
    "$VENV/bin/python" -m pip freeze | grep -Ei '^(torch|numpy)==' > "$CONSTRAINTS"
    "$VENV/bin/python" -m pip install "${FROM_WHEELHOUSE[@]}" -c "$CONSTRAINTS" "${EXTRA_DEPS[@]}"
    # The venv's own setuptools first (no download); where it is too old for pyproject.toml's PEP 639 license
    # string, pip's isolated build brings a current one (from the wheelhouse offline).
    if ! "$VENV/bin/python" -m pip install --quiet "${FROM_WHEELHOUSE[@]}" --no-deps --no-build-isolation -e "$ROOT" \
            2>/dev/null; then
        echo "cerebras_env: this venv's setuptools cannot build gigagpt (PEP 639 license); building it isolated"
        "$VENV/bin/python" -m pip install "${FROM_WHEELHOUSE[@]}" --no-deps -e "$ROOT"
    fi
    "$VENV/bin/python" - <<'EOF'
import torch, numpy, cerebras.pytorch as cstorch, gigagpt
print(f"cerebras_env: ok: cerebras-pytorch {cstorch.__version__}, torch {torch.__version__}, numpy {numpy.__version__}")
EOF
fi

# The Jupyter kernel notebook 04 asks for ("gigagpt-cerebras"), registered in this env and, when it exists,
# in the main .venv too, so `make lab` and the course runner find it.
for prefix in "$VENV" "$ROOT/.venv"; do
    if [[ -d "$prefix" ]]; then
        # (its warning that another env's prefix "may not be found" is expected: that env's Jupyter finds it)
        out="$("$VENV/bin/python" -m ipykernel install --prefix "$prefix" --name gigagpt-cerebras \
            --display-name "Python 3.11 (cerebras-pytorch $CSTORCH_VERSION)" 2>&1)" || { echo "$out" >&2; exit 1; }
    fi
done
echo "cerebras_env: done. Use $VENV/bin/gigagpt, or activate with: . $VENV/bin/activate"
