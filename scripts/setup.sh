#!/usr/bin/env bash
# Creates .venv and installs the whole stack, idempotently: a second run with unchanged
# requirements does nothing but verify the Lava compatibility patch.
#   bash scripts/setup.sh            # everything
# Environment: VENV (default .venv), PYTHON (default python3.11 or python3).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV with $PYTHON"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
# pip, quietly; this machine's pip.conf names local mirrors that may be absent, and pip warns
# about each of them for every package: drop those lines, keep everything else.
pip_q() {
  "$PY" -m pip --disable-pip-version-check -q "$@" 2>&1 \
    | { grep -v "is ignored: it is neither a file nor a directory" || true; }
  return "${PIPESTATUS[0]}"
}

stamp="$VENV/.dpap-setup-stamp"
# the stamp covers this script too: a package added below reaches venvs made before it
want=$(cat scripts/requirements.txt scripts/constraints.txt pyproject.toml scripts/setup.sh \
  | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "[setup] $VENV is up to date"
else
  echo "[setup] installing torch 2.13.0 (local CPU wheel) and the runtime stack"
  pip_q install -c scripts/constraints.txt -r scripts/requirements.txt
  # tonic (GPL-3.0) is the optional 'events' extra; it is installed here so the event-data
  # paths can be tested, but the core package never imports it unconditionally.
  pip_q install -c scripts/constraints.txt "tonic==1.7.0"
  # lava-nc 0.10.0 and lava-dl 0.6.0 declare Requires-Python <3.11 and lava-dl pins torch 2.3:
  # install them past those declarations (see docs/platform notes in docs/install.md).
  pip_q install -c scripts/constraints.txt --ignore-requires-python "lava-nc==0.10.0"
  pip_q install --no-deps --ignore-requires-python "lava-dl==0.6.0"
  # NeuroBench's own metrics, which tests/test_neurobench_defs.py compares ours with; they need
  # none of its declared dependencies (torchaudio...), so they come without them.
  pip_q install --no-deps "neurobench==2.3.0"
  # The peers benchmarks/bench_peers.py times (pyproject's 'peers' extra), without their
  # declared dependencies: those would replace the pinned torch; loguru is SpikingJelly's import.
  pip_q install --no-deps "norse==1.1.0" "spikingjelly==2.0.0" "loguru==0.7.3"
  pip_q install --no-deps -e .
  echo "$want" > "$stamp"
fi
# Real 28x28 data offline: Fashion-MNIST from Debian (/usr/share/datasets/fashion-mnist).
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "[setup] installing Fashion-MNIST (Debian package dataset-fashion-mnist)"
    { apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 ||
      { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; }; } ||
      echo "[setup] warning: could not install dataset-fashion-mnist; --dataset fashion-mnist will need --data-root"
  else
    echo "[setup] note: run 'apt-get install dataset-fashion-mnist' as root for --dataset fashion-mnist"
  fi
fi
# Python 3.11 fixes for lava-nc / lava-dl; idempotent, verifies itself.
"$PY" -m dpap_deploy.lava_compat
