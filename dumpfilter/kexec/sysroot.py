"""Read-only access to the /proc and /sys files the kdump tools look at.

Every path goes through :func:`path`, so tests point ``DUMPFILTER_SYSROOT`` at a fake tree
(``$DUMPFILTER_SYSROOT/proc/iomem``, ``$DUMPFILTER_SYSROOT/sys/kernel/kexec_crash_size`` …).
Nothing in this module writes.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import DumpfilterError

ENV = "DUMPFILTER_SYSROOT"


def root() -> Path:
    return Path(os.environ.get(ENV) or "/")


def is_real_root() -> bool:
    """False when a test (or a user) has redirected /proc and /sys elsewhere."""
    return root().resolve() == Path("/")


def path(absolute: str) -> Path:
    """``/proc/cmdline`` → ``$DUMPFILTER_SYSROOT/proc/cmdline``."""
    return root() / absolute.lstrip("/")


def _read_text(absolute: str) -> str | None:
    try:
        return path(absolute).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _read_int(absolute: str) -> int | None:
    text = _read_text(absolute)
    if text is None:
        return None
    try:
        return int(text.strip(), 0)
    except ValueError:
        return None


@dataclass(frozen=True)
class KexecStatus:
    """/sys/kernel/kexec_loaded, kexec_crash_loaded and kexec_crash_size (None: file missing)."""

    loaded: bool | None
    crash_loaded: bool | None
    crash_size: int | None


def kexec_status() -> KexecStatus:
    loaded = _read_int("/sys/kernel/kexec_loaded")
    crash_loaded = _read_int("/sys/kernel/kexec_crash_loaded")
    return KexecStatus(
        loaded=None if loaded is None else loaded != 0,
        crash_loaded=None if crash_loaded is None else crash_loaded != 0,
        crash_size=_read_int("/sys/kernel/kexec_crash_size"),
    )


def read_cmdline() -> str:
    """The running kernel's command line, without the trailing newline."""
    text = _read_text("/proc/cmdline")
    if text is None:
        raise DumpfilterError(f"cannot read {path('/proc/cmdline')}")
    return text.splitlines()[0].strip() if text.strip() else ""


_IOMEM_LINE = re.compile(r"^(\s*)([0-9a-fA-F]+)-([0-9a-fA-F]+) : (.*)$")


def iomem_ranges(name: str, *, top_level: bool = False) -> list[tuple[int, int]] | None:
    """``[(start, end_inclusive), …]`` of /proc/iomem entries called ``name``; None if unreadable.

    Without CAP_SYS_ADMIN the kernel prints every address as 0, so callers must treat
    ``(0, 0)`` ranges as "present, address hidden".
    """
    text = _read_text("/proc/iomem")
    if text is None:
        return None
    out: list[tuple[int, int]] = []
    for line in text.splitlines():
        m = _IOMEM_LINE.match(line)
        if not m or m.group(4).strip() != name:
            continue
        if top_level and m.group(1):
            continue
        out.append((int(m.group(2), 16), int(m.group(3), 16)))
    return out


def crash_kernel_ranges() -> list[tuple[int, int]] | None:
    """The "Crash kernel" regions (the main one and, with ``,high``/fallback, the low one)."""
    return iomem_ranges("Crash kernel")


def system_ram_bytes() -> tuple[int, str]:
    """Best estimate of what the kernel's crashkernel= code compares ranges against.

    The kernel uses memblock_phys_mem_size(), all RAM it was given. In order of preference:
    the "System RAM" ranges of /proc/iomem (root only: others see zero addresses), the online
    memory blocks of /sys/devices/system/memory (rounded to the block size, usually 128 MiB,
    like the kernel's own 128 MiB round-up), and last MemTotal of /proc/meminfo, which is
    smaller than the installed RAM by the kernel's own reservations.
    Returns ``(bytes, source)``.
    """
    ranges = iomem_ranges("System RAM", top_level=True)
    if ranges and any(end for _, end in ranges):
        return sum(end - start + 1 for start, end in ranges), "/proc/iomem"
    block = _read_text("/sys/devices/system/memory/block_size_bytes")
    mem_dir = path("/sys/devices/system/memory")
    if block is not None:
        try:
            block_size = int(block.strip(), 16)
            online = 0
            for entry in mem_dir.glob("memory[0-9]*"):
                state = (entry / "state").read_text().strip() if (entry / "state").exists() else ""
                if state == "online":
                    online += 1
            if online and block_size:
                return online * block_size, "/sys/devices/system/memory"
        except (OSError, ValueError):
            pass
    meminfo = _read_text("/proc/meminfo") or ""
    m = re.search(r"^MemTotal:\s+(\d+)\s*kB", meminfo, re.MULTILINE)
    if m:
        return int(m.group(1)) * 1024, "/proc/meminfo MemTotal"
    raise DumpfilterError("cannot tell the system RAM size; pass --ram SIZE")
