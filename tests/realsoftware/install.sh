#!/usr/bin/env bash
# Installs what tests/realsoftware needs; idempotent, as root.
#  - Debian: postgresql (the server binaries, used from /usr/lib/postgresql/*/bin;
#    no cluster of Debian's is started by the tests), util-linux (unshare, nsenter),
#    iproute2 (ip), curl.
#  - GPUStack from PyPI in a venv of its own (not the project's environment):
#    $GPUSTACK_VENV, default /tmp/gpustack-venv; version $GPUSTACK_VERSION
#    (default 2.3.0, the one the tests were written against); the Python that
#    makes the venv is $GPUSTACK_PYTHON (default python3; GPUStack wants 3.10-3.12).
#  - The real vLLM 0.23.0 wheel and vllm-ascend 0.23.0.post1 sdist, downloaded (never
#    installed, no dependencies) into $ASCEND_INFERENCE_CACHE/vllm-ascend-0.23.0.post1
#    (default ~/.cache/ascend-inference) by fetch_vllm_ascend.py: ~290 MB cold, nothing warm.
set -euo pipefail

venv=${GPUSTACK_VENV:-/tmp/gpustack-venv}
version=${GPUSTACK_VERSION:-2.3.0}
python=${GPUSTACK_PYTHON:-python3}

[ "$(id -u)" = 0 ] || { echo "install.sh: run as root (apt-get)" >&2; exit 1; }

missing=$(for p in postgresql util-linux iproute2 curl; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
if [ -n "$missing" ]; then
  echo "== apt-get install" $missing
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

installed=$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("gpustack"))' 2>/dev/null || true)
if [ "$installed" != "$version" ]; then
  "$python" -c 'import sys; sys.exit(not (3, 10) <= sys.version_info[:2] <= (3, 12))' \
    || { echo "install.sh: GPUStack $version needs Python 3.10-3.12; set GPUSTACK_PYTHON" >&2; exit 1; }
  echo "== GPUStack $version into $venv"
  [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
  log=$(mktemp)
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "gpustack==$version" >"$log" 2>&1 \
    || { cat "$log" >&2; rm -f "$log"; echo "install.sh: pip install gpustack==$version failed" >&2; exit 1; }
  rm -f "$log"
fi
python3 "$(dirname "$0")/fetch_vllm_ascend.py"

echo "== GPUStack $("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("gpustack"))') in $venv;" \
     "PostgreSQL $(ls /usr/lib/postgresql | sort -n | tail -n 1)"
