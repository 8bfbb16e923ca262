"""The host as the capture flow sees it: its IP address and the dump directory's name
(``$HOST_IP-$DATE``), the mount table and the mounts we make, and fsync helpers.

``$HOST_IP`` (a deviation from kdump-utils, which uses ``kdumpnic=``'s address for nfs/ssh targets and
127.0.0.1 otherwise): the ``kdumpnic=`` interface if given, else the default-route interface (IPv4, then
IPv6), else 127.0.0.1, for every target. ``DUMPFILTER_SYSROOT`` redirects /proc/cmdline, /proc/net/*
and /proc/self/mounts (see sysroot.py).
"""
from __future__ import annotations

import fcntl
import ipaddress
import os
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path

from . import sysroot
from .session import Failed, Log

DATE_FORMAT = "%Y-%m-%d-%H:%M:%S"  # kdump.sh: date +%Y-%m-%d-%T
FALLBACK_IP = "127.0.0.1"
SIOCGIFADDR = 0x8915


def read_proc(absolute: str) -> str:
    """A /proc file's text (under DUMPFILTER_SYSROOT if set); "" when it cannot be read."""
    try:
        return sysroot.path(absolute).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


# --------------------------------------------------------------------------------------- host IP


def _iface_ipv4(iface: str) -> str | None:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            res = fcntl.ioctl(s.fileno(), SIOCGIFADDR, struct.pack("256s", iface.encode()[:15]))
    except OSError:
        return None
    return socket.inet_ntoa(res[20:24])


def _iface_ipv6(iface: str) -> str | None:
    """A global-scope address of ``iface`` from /proc/net/if_inet6."""
    for line in read_proc("/proc/net/if_inet6").splitlines():
        f = line.split()
        if len(f) >= 6 and f[5] == iface and f[3] == "00":
            try:
                return str(ipaddress.IPv6Address(bytes.fromhex(f[0])))
            except ValueError:
                continue
    return None


def _default_route_iface() -> str | None:
    best: tuple[int, str] | None = None
    for line in read_proc("/proc/net/route").splitlines()[1:]:
        f = line.split()
        if len(f) < 8:
            continue
        try:
            up = int(f[3], 16) & 1
            metric = int(f[6])
        except ValueError:
            continue
        if f[1] == "00000000" and f[7] == "00000000" and up and (best is None or metric < best[0]):
            best = (metric, f[0])
    if best:
        return best[1]
    for line in read_proc("/proc/net/ipv6_route").splitlines():
        f = line.split()
        if len(f) >= 10 and f[0] == "0" * 32 and f[1] == "00" and f[9] != "lo":
            return f[9]
    return None


def _kdumpnic() -> str | None:
    for word in read_proc("/proc/cmdline").split():
        if word.startswith("kdumpnic="):
            return word.split("=", 1)[1].split(":", 1)[0] or None
    return None


def host_ip() -> str:
    """``kdumpnic=``'s address, else the default-route interface's, else 127.0.0.1."""
    iface = _kdumpnic() or _default_route_iface()
    if iface:
        addr = _iface_ipv4(iface) or _iface_ipv6(iface)
        if addr:
            return addr
    return FALLBACK_IP


def dump_dir_name(ip: str | None = None, now: float | None = None) -> str:
    return f"{ip or host_ip()}-{time.strftime(DATE_FORMAT, time.localtime(now))}"


# --------------------------------------------------------------------------------------- fsync


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    try:
        fsync_path(path)
    except OSError:
        pass


# --------------------------------------------------------------------------------------- mounts


def _unescape(field_: str) -> str:
    return field_.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def _mounts() -> list[tuple[str, str, str, str]]:
    """(source, mountpoint, fstype, options) from /proc/self/mounts."""
    out = []
    for line in read_proc("/proc/self/mounts").splitlines():
        f = line.split()
        if len(f) >= 4:
            out.append((_unescape(f[0]), _unescape(f[1]), f[2], f[3]))
    return out


_BY = {"UUID=": "by-uuid", "LABEL=": "by-label", "PARTUUID=": "by-partuuid", "PARTLABEL=": "by-partlabel"}


def _device_node(spec: str) -> str | None:
    for prefix, d in _BY.items():
        if spec.startswith(prefix):
            link = Path("/dev/disk") / d / spec[len(prefix):]
            return os.path.realpath(link) if link.exists() else None
    return os.path.realpath(spec) if spec.startswith("/") else None


def find_mount(spec: str) -> tuple[str, str] | None:
    """(mountpoint, options) of the filesystem SPEC is mounted from, if it is mounted."""
    node = _device_node(spec)
    for source, mnt, _fstype, opts in _mounts():
        if source == spec or (node and source.startswith("/") and os.path.realpath(source) == node):
            return mnt, opts
    return None


class Mounts:
    """Reuses or makes the target's mount; what we mounted is unmounted by ``unmount_all``."""

    def __init__(self, log: Log) -> None:
        self.log = log
        self.mounted: list[str] = []  # mount points we made

    def mount(self, fstype: str, spec: str) -> str:
        """The mount point of SPEC: the existing one (remounted rw if read-only), else a fresh one."""
        found = find_mount(spec)
        if found:
            mnt, mopts = found
            self.log(f"{spec} is mounted on {mnt}")
            if mopts.split(",")[0] == "ro":
                self.log("Remounting the dump target in rw mode.")
                self.run_checked(["mount", "-o", "remount,rw", mnt], "remounting the dump target")
            return mnt
        mnt = tempfile.mkdtemp(prefix="pykdumpctl-mnt-")
        self.log(f"mounting {fstype} {spec} on {mnt}")
        self.run_checked(["mount", "-t", fstype, spec, mnt], f"mounting {spec}")
        self.mounted.append(mnt)
        return mnt

    def run_checked(self, argv: list[str], what: str) -> None:
        try:
            rc = subprocess.run(argv, stdin=subprocess.DEVNULL).returncode
        except OSError as e:
            self.log(f"{what} failed: {e}")
            raise Failed() from None
        if rc != 0:
            self.log(f"{what} failed, exitcode:{rc}")
            raise Failed()

    def unmount_all(self) -> None:
        for mnt in reversed(self.mounted):
            try:
                rc = subprocess.run(["umount", mnt], stdin=subprocess.DEVNULL).returncode
            except OSError as e:
                self.log(f"umount {mnt} failed: {e}")
                continue
            if rc == 0:
                try:
                    os.rmdir(mnt)
                except OSError:
                    pass
            else:
                self.log(f"umount {mnt} failed, exitcode:{rc}")
        self.mounted.clear()
