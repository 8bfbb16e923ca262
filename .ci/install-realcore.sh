#!/bin/sh
# Install what fixtures/realcore and fixtures/kdumpvm need on a fresh Debian 12 (bookworm) machine. Idempotent.
# The trixie / trixie-backports apt suites (for 6.12 and 7.x kernels) are added by
# fixtures/realcore itself when first needed, pinned at priority 1.
set -eu
if [ "$(id -u)" -ne 0 ]; then
    echo "install-realcore.sh: must run as root" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends \
    qemu-system-x86 busybox-static cpio e2fsprogs gcc libc6-dev kmod \
    makedumpfile file python3 ca-certificates \
    debootstrap debian-archive-keyring  # fixtures/kdumpvm: the end-to-end guest's rootfs
