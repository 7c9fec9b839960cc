#!/usr/bin/env bash
# Installs what GPUStack workers on the emulated nodes need (tests/emulated/test_gpustack_workers.py);
# idempotent, as root.
#  - GPUStack from PyPI in its venv and Debian's PostgreSQL: tests/realsoftware/install.sh
#    ($GPUSTACK_VENV, default /tmp/gpustack-venv; $GPUSTACK_VERSION, default 2.3.0).
#  - gcc and libc6-dev (Debian): the emulator builds its stand-in libdcmi.so at `up`, and a static
#    pause binary for GPUStack's pause image.
#  - The two tools a 2.x worker fetches from GitHub at start (gpustack/worker/tools_manager.py,
#    prepare_tools), put where it looks, <site-packages>/gpustack/third_party/bin/<tool>/<tool>,
#    with the versions it checks in versions.json there, so it fetches nothing (GitHub is not
#    reachable here, and a worker that cannot fetch them does not start):
#      fastfetch: the real binary, from PyPI's fastfetch-bin wheel (2.28.0, the oldest release
#        there; GPUStack 2.3.0 pins 2.25.0.1, which PyPI does not carry). The worker runs it
#        for the node's OS, kernel, CPU, memory and disks.
#      gguf-parser: a stand-in that fails with a message naming itself. The worker runs it only
#        to read a GGUF file's metadata; the emulated nodes' model is safetensors, which GPUStack
#        never passes to it. The real tool (v0.26.4) is the Go module
#        github.com/gpustack/gguf-parser-go/cmd/gguf-parser, which the Go module proxy does not
#        serve (its @v/list is empty; the parent module's zip leaves cmd/ out).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${GPUSTACK_VENV:-/tmp/gpustack-venv}
fastfetch_release=2.28.0
fastfetch_recorded=2.25.0.1   # what tools_manager.py checks (download_fastfetch)
gguf_parser_recorded=v0.26.4  # BUILTIN_GGUF_PARSER_VERSION

[ "$(id -u)" = 0 ] || { echo "install-gpustack.sh: run as root" >&2; exit 1; }
bash tests/realsoftware/install.sh
missing=$(for p in gcc libc6-dev; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
if [ -n "$missing" ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

bin=$("$venv/bin/python" -c 'import gpustack, pathlib; print(pathlib.Path(gpustack.__file__).parent / "third_party" / "bin")')
mkdir -p "$bin/fastfetch" "$bin/gguf-parser"

if ! "$bin/fastfetch/fastfetch" --version 2>/dev/null | grep -q "^fastfetch $fastfetch_release "; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  "$venv/bin/python" -m pip download --quiet --disable-pip-version-check --no-deps \
    --only-binary=:all: --platform manylinux2010_x86_64 "fastfetch-bin==$fastfetch_release" -d "$work"
  "$venv/bin/python" -c 'import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
name = next(n for n in z.namelist() if n.endswith("/scripts/fastfetch"))
open(sys.argv[2], "wb").write(z.read(name))' "$work"/fastfetch_bin-*.whl "$bin/fastfetch/fastfetch"
  chmod 755 "$bin/fastfetch/fastfetch"
fi

cat > "$bin/gguf-parser/gguf-parser" <<'EOF'
#!/bin/sh
# Emulator stand-in (emulator/install-gpustack.sh): GPUStack runs gguf-parser only for GGUF models.
echo "gguf-parser: emulator stand-in; GGUF parsing is not available on the emulated cluster" \
     "(github.com/gpustack/gguf-parser-go/cmd/gguf-parser is not on the Go module proxy)" >&2
exit 1
EOF
chmod 755 "$bin/gguf-parser/gguf-parser"

"$venv/bin/python" - "$bin/versions.json" "$fastfetch_recorded" "$gguf_parser_recorded" <<'EOF'
import json, sys
path, fastfetch, gguf_parser = sys.argv[1:]
try:
    versions = json.load(open(path))
except (OSError, ValueError):
    versions = {}
versions.update({"fastfetch": fastfetch, "gguf-parser": gguf_parser})
json.dump(versions, open(path, "w"), indent=4)
EOF
echo "== GPUStack worker tools in $bin: $("$bin/fastfetch/fastfetch" --version), gguf-parser stand-in"
