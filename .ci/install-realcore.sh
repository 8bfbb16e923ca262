#!/bin/sh
# Install what fixtures/realcore and fixtures/kdumpvm need on a fresh Debian 12 (bookworm) machine. Idempotent.
# The trixie / trixie-backports apt suites (for 6.12 and 7.x kernels) are added by
# fixtures/realcore itself when first needed, pinned at priority 1.
# arm64 (fixtures/realcore --arch arm64, fixtures/arm64-makedumpfile): dpkg learns the
# arm64 architecture (kernel, busybox-static and makedumpfile packages are downloaded and
# unpacked, never installed); QEMU for aarch64 (system and user mode) and a cross gcc
# for the static guest helpers.
set -eu
if [ "$(id -u)" -ne 0 ]; then
    echo "install-realcore.sh: must run as root" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    dpkg --add-architecture arm64
fi
# Others may be running apt on a shared machine: wait for the lock rather than fail.
APT="apt-get -o DPkg::Lock::Timeout=900"
$APT update
$APT install -y --no-install-recommends \
    qemu-system-x86 busybox-static cpio e2fsprogs gcc libc6-dev kmod \
    makedumpfile file python3 ca-certificates \
    qemu-system-arm qemu-user-static gcc-aarch64-linux-gnu libc6-dev-arm64-cross \
    debootstrap debian-archive-keyring  # fixtures/kdumpvm: the end-to-end guest's rootfs
