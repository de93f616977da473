#!/usr/bin/env bash
# Installs each peer server of the serving benchmark in a venv of its own (they pin
# conflicting dependencies), outside the repository. Idempotent: a venv whose marker file
# exists is kept. Usage: tests/benchmarks/install_peers.sh [peer...]
# Peers: kserve mlserver triton ray bentoml (default: all).
set -euo pipefail

BENCH=${MSO_BENCH_CACHE:-$HOME/.cache/modelservice-operator/bench}
PYTHON=${PYTHON:-python3.11}
TF=tensorflow-cpu==2.21.0

declare -A PACKAGES=(
  [kserve]="kserve==0.21.0"
  [mlserver]="mlserver==1.7.1"
  [triton]="nvidia-pytriton==0.7.0"
  [ray]="ray[serve]==2.60.0"
  [bentoml]="bentoml==1.4.40"
)

peers=("$@")
[ ${#peers[@]} -eq 0 ] && peers=(kserve mlserver triton ray bentoml)
mkdir -p "$BENCH"
for peer in "${peers[@]}"; do
  venv=$BENCH/$peer
  if [ -f "$venv/.installed" ]; then
    echo "$peer: $venv (already installed)"
    continue
  fi
  echo "$peer: installing ${PACKAGES[$peer]} into $venv"
  rm -rf "$venv"
  "$PYTHON" -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip
  "$venv/bin/pip" install --quiet "${PACKAGES[$peer]}" "$TF"
  touch "$venv/.installed"
done
command -v wrk >/dev/null || echo "wrk is missing: apt-get install wrk" >&2
