#!/bin/bash
# Install everything pydumpfile and its tests need on a fresh Debian 12 machine (run as root),
# then create .venv with the package installed in editable mode (builds the Cython kernels).
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends \
    python3 python3-venv python3-dev gcc libdeflate-dev liblzo2-dev libsnappy-dev libzstd-dev zlib1g-dev makedumpfile \
    qemu-system-x86 busybox-static cpio e2fsprogs kmod xz-utils zstd ca-certificates openssh-server openssh-client \
    binutils libdw1 >/dev/null  # binutils, libdw1: -dbg vmlinux handling (fixtures/dbgsym.py) and -g's SRCFILE
apt-get install -y -q --no-install-recommends crash >/dev/null  # tests/real/test_split_real.py: crash opens a --split set
apt-get install -y -q --no-install-recommends man-db groff-base >/dev/null  # tests/unit/test_packaging.py renders the man pages
if [ -x .ci/install-realcore.sh ]; then
    bash .ci/install-realcore.sh
fi
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip setuptools wheel
.venv/bin/pip install -q -e '.[test]'
