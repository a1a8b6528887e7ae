#!/usr/bin/env bash
# CI check for "a room without internet" (README): the main environment installs from a wheelhouse alone.
#
#   sudo scripts/offline_install_check.sh     # root: `unshare -n` cuts the network
#
# 1. With the network: `make wheelhouse` into a temporary folder (or use WHEELHOUSE=path if it exists).
# 2. Without it: in a network namespace that has no interfaces, and with pip's configuration switched off (this
#    CI machine's pip config points at local package folders, which would let pip install without the
#    wheelhouse and prove nothing), `make setup` builds a fresh venv from the wheelhouse, then `gigagpt doctor`
#    runs in it and a tiny model trains for 2 steps.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
WHEELHOUSE="${WHEELHOUSE:-$WORK/wheelhouse}"

if ! unshare -n true 2>/dev/null; then
    echo "offline_install_check: cannot cut the network (\`unshare -n\` needs root)" >&2
    exit 2
fi

start=$SECONDS
make --no-print-directory wheelhouse WHEELHOUSE="$WHEELHOUSE"
download_s=$((SECONDS - start))

start=$SECONDS
unshare -n bash -euo pipefail -s "$ROOT" "$WHEELHOUSE" "$WORK" <<'EOF'
ROOT="$1" WHEELHOUSE="$2" WORK="$3"
for name in $(compgen -e | grep '^PIP_'); do unset "$name"; done
export PIP_CONFIG_FILE=/dev/null PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
if python3 -c 'import socket; socket.create_connection(("pypi.org", 443), timeout=5)' 2>/dev/null; then
    echo "offline_install_check: the network is not cut" >&2
    exit 1
fi
make --no-print-directory setup VENV="$WORK/venv" WHEELHOUSE="$WHEELHOUSE"
cd "$WORK"  # the venv's gigagpt, not the checkout's folder on the path
"$WORK/venv/bin/gigagpt" doctor
"$WORK/venv/bin/gigagpt" prepare "$ROOT/data/tinyshakespeare.txt" --tokenizer char --out "$WORK/data"
"$WORK/venv/bin/gigagpt" train "$ROOT/configs/shakespeare_char.yaml" --dataset "$WORK/data" --out_dir "$WORK/out" \
    --num_steps 2 --width 32 --depth 1 --heads 2 --batch_size 4 --sequence_length 32 --eval_steps 1 \
    --checkpoint_steps 0 --log_interval 1
EOF
install_s=$((SECONDS - start))
echo "offline_install_check: ok: wheelhouse $(du -sh "$WHEELHOUSE" | cut -f1)" \
     "($(ls "$WHEELHOUSE"/*.whl | wc -l) wheels) built in ${download_s} s;" \
     "offline venv + doctor + 2 training steps in ${install_s} s"
