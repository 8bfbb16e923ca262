"""``crashkernel=`` read exactly as the kernel reads it, and a reservation estimate.

Source of every rule: Linux ``kernel/crash_reserve.c`` (``parse_crashkernel`` and helpers, formerly in
``kernel/crash_core.c``), ``lib/cmdline.c`` (``memparse``), ``include/linux/crash_reserve.h`` and
``arch/x86/include/asm/crash_reserve.h`` (default sizes and limits), and
Documentation/admin-guide/kdump/kdump.rst + kernel-parameters.txt for the documented forms:

* ``crashkernel=size[KMG][@offset[KMG]]``                        (``parse_crashkernel_simple``)
* ``crashkernel=start-[end]:size[,start-[end]:size...][@offset]`` (``parse_crashkernel_mem``):
  the system RAM is first rounded **up** to 128 MiB (firmware keeps some RAM for itself), then the
  first range with ``start <= ram < end`` wins; every size read before the match must be smaller
  than the rounded RAM; ranges after the match are not even parsed.
* ``crashkernel=size,high`` [+ ``crashkernel=size,low``] [+ ``crashkernel=size,cma``]: only when no
  plain ``crashkernel=`` is present (a plain one makes the kernel ignore ``,high``/``,low``); a
  missing ``,low`` means the arch default low size (x86: ``max(swiotlb + 8 MiB, 256 MiB)``;
  arm64/riscv/loongarch: 128 MiB; kernel/arch/machines.py); ``0,low`` disables it. ``,cma`` is Linux 6.17+.
* The last ``crashkernel=`` of each kind on the command line wins.
* Numbers are ``simple_strtoull(…, 0)`` (``0x`` hex, leading ``0`` octal) with an optional
  K/M/G/T/P/E suffix (either case).
* A size of 0 (no range matched) reserves nothing; a size >= the (unrounded) system RAM is rejected.

Deliberate differences, all in the direction of telling the user more: numbers that overflow 64 bits
raise (the kernel silently wraps) and text the kernel silently skips is reported in ``notes``.
Kernels before the 128 MiB round-up (added in the 6.x series) compared the raw RAM size.
"""
from __future__ import annotations

from typing import Any

import re
from dataclasses import dataclass, field

from ..errors import DumpfilterError
from ..kernel.arch.machines import Machine, host, machine
from ..sizes import ULLONG_MAX as _ULLONG_MAX, SizeError, format_size
from ..sizes import char_at as _ch, strtoull as _strtoull, memparse_at as _memparse_at, parse_size as _parse_size

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
_SZ_128M = 128 * MiB
_SZ_4G = 4 * GiB

#: swiotlb default (IO_TLB_DEFAULT_SIZE) and its slab geometry, for x86's default low size.
_SWIOTLB_DEFAULT = 64 * MiB
_IO_TLB_SHIFT = 11
_IO_TLB_SEGSIZE = 128

_NAME = "crashkernel="
_SUFFIXES = (",high", ",low", ",cma")


def _machine(arch: str | None) -> Machine:
    return host() if arch is None else machine(arch)


class CrashkernelError(DumpfilterError):
    """A crashkernel= value the kernel would reject (it then reserves nothing)."""


# ---------------------------------------------------------------------------------------------
# numbers: lib/cmdline.c memparse(), shared with the rest of the package (dumpfilter/sizes.py)


def memparse_at(s: str, i: int) -> tuple[int, int]:
    """``memparse(s + i, &end)``: the value and the index just past it (== i: nothing read)."""
    value, j = _memparse_at(s, i)
    if value > _ULLONG_MAX:
        raise CrashkernelError(f"crashkernel: {s[i:j]!r} does not fit in 64 bits")
    return value, j


def parse_size(text: str) -> int:
    """A whole string like ``4G``, ``512M``, ``0x1000`` or ``1073741824`` (user input, strict)."""
    try:
        return _parse_size(text)
    except SizeError as e:
        raise CrashkernelError(str(e)) from None


# ---------------------------------------------------------------------------------------------
# the three syntaxes; `s` is the command line from just after "crashkernel=" to its end


def _parse_mem(s: str, system_ram: int, notes: list[str]) -> tuple[int, int]:
    total = -(-system_ram // _SZ_128M) * _SZ_128M  # roundup(system_ram, SZ_128M)
    cur, crash_size, crash_base = 0, 0, 0
    while True:
        start, tmp = memparse_at(s, cur)
        if tmp == cur:
            raise CrashkernelError(f"crashkernel: memory value expected at {s[cur:].split(' ')[0]!r}")
        cur = tmp
        if _ch(s, cur) != "-":
            raise CrashkernelError(f"crashkernel: '-' expected after the range start {format_size(start)}")
        cur += 1
        end = _ULLONG_MAX + 1
        if _ch(s, cur) != ":":
            end, tmp = memparse_at(s, cur)
            if tmp == cur:
                raise CrashkernelError("crashkernel: memory value expected for the range end")
            cur = tmp
            if end <= start:
                raise CrashkernelError(
                    f"crashkernel: range end {format_size(end)} is not above its start {format_size(start)}"
                )
        if _ch(s, cur) != ":":
            raise CrashkernelError("crashkernel: ':' expected after a range")
        cur += 1
        size, tmp = memparse_at(s, cur)
        if tmp == cur:
            raise CrashkernelError("crashkernel: memory value expected for the size of a range")
        cur = tmp
        if size >= total:
            raise CrashkernelError(
                f"crashkernel: size {format_size(size)} is not smaller than the system RAM "
                f"{format_size(total)} (rounded up to 128M)"
            )
        if start <= total < end:
            crash_size = size
            break
        sep = _ch(s, cur)
        cur += 1
        if sep != ",":
            break
    if crash_size > 0:
        skipped_from = cur
        while _ch(s, cur) not in "\0 @":
            cur += 1
        skipped = s[skipped_from:cur]
        if skipped and not skipped.startswith(","):
            notes.append(f"the kernel ignores {skipped!r} after the selected size")
        if _ch(s, cur) == "@":
            cur += 1
            crash_base, tmp = memparse_at(s, cur)
            if tmp == cur:
                raise CrashkernelError("crashkernel: memory value expected after '@'")
    else:
        notes.append(
            f"the system RAM {format_size(system_ram)} (rounded up to {format_size(total)}) "
            "is in none of the ranges, so nothing is reserved"
        )
    return crash_size, crash_base


def _parse_simple(s: str, notes: list[str]) -> tuple[int, int]:
    crash_size, cur = memparse_at(s, 0)
    if cur == 0:
        raise CrashkernelError(f"crashkernel: memory value expected, got {s.split(' ')[0]!r}")
    crash_base = 0
    c = _ch(s, cur)
    if c == "@":
        crash_base, after = memparse_at(s, cur + 1)
        if after == cur + 1:
            notes.append("'@' without an offset: the kernel reads it as @0, i.e. placed automatically")
        if _ch(s, after) not in "\0 ":
            notes.append(f"the kernel ignores {s[after:].split(' ')[0]!r} after the offset")
    elif c not in "\0 ":
        raise CrashkernelError(f"crashkernel: unrecognized character {c!r} in {s.split(' ')[0]!r}")
    return crash_size, crash_base


def _parse_suffix(s: str, suffix: str) -> int:
    crash_size, cur = memparse_at(s, 0)
    word = s.split(" ")[0]
    if cur == 0:
        raise CrashkernelError(f"crashkernel: memory value expected, got {word!r}")
    if not s.startswith(suffix, cur) or _ch(s, cur + len(suffix)) not in "\0 ":
        raise CrashkernelError(f"crashkernel: unrecognized character {_ch(s, cur)!r} in {word!r}")
    return crash_size


def _last(cmdline: str, suffix: str | None) -> int | None:
    """get_last_crashkernel(): index of the value of the last matching crashkernel=."""
    found = None
    p = cmdline.find(_NAME)
    while p != -1:
        end = cmdline.find(" ", p)
        end = len(cmdline) if end == -1 else end
        word = cmdline[p:end]
        if suffix is None:
            if not any(word.endswith(sfx) for sfx in _SUFFIXES):
                found = p
        elif word.endswith(suffix):
            found = p
        p = cmdline.find(_NAME, p + 1)
    return None if found is None else found + len(_NAME)


def _parse_one(cmdline: str, system_ram: int, suffix: str | None, notes: list[str]) -> tuple[int, int] | None:
    """__parse_crashkernel(): None for -ENOENT, (size, base) on success, raises for -EINVAL."""
    at = _last(cmdline, suffix)
    if at is None:
        return None
    s = cmdline[at:]
    if suffix is not None:
        return _parse_suffix(s, suffix), 0
    colon, space = s.find(":"), s.find(" ")
    if colon != -1 and (space == -1 or colon < space):
        return _parse_mem(s, system_ram, notes)
    return _parse_simple(s, notes)


# ---------------------------------------------------------------------------------------------


def default_low_size(arch: str | None = None, cmdline: str = "") -> int:
    """DEFAULT_CRASH_KERNEL_LOW_SIZE of ``arch`` (``uname -m``; default: this machine): on x86
    max(swiotlb + 8M, 256M) (swiotlb=N slabs of 2 KiB from the command line, else 64M); other
    generic arches 128M; 0 where ,low does not exist."""
    rule = _machine(arch).low_default
    if rule == "swiotlb":
        swiotlb = _SWIOTLB_DEFAULT
        for m in re.finditer(r"(?:^|\s)swiotlb=(\d\S*)", cmdline):
            slabs, _ = _strtoull(m.group(1), 0)
            slabs = -(-slabs // _IO_TLB_SEGSIZE) * _IO_TLB_SEGSIZE
            swiotlb = slabs << _IO_TLB_SHIFT
        return max(swiotlb + 8 * MiB, 256 * MiB)
    return int(rule)


@dataclass(frozen=True)
class Reservation:
    """What the kernel reserves. ``size == 0``: nothing (see ``notes`` for why)."""

    size: int
    offset: int = 0  # 0: the kernel picks the address
    high: bool = False  # crashkernel=X,high: the main block may be anywhere, above 4 GiB first
    low_size: int = 0  # the block below 4 GiB that goes with ,high
    cma_size: int = 0  # crashkernel=X,cma (Linux 6.17+)
    fallback_low_size: int = 0  # plain auto-placed X that only fits above 4 GiB also gets this low block
    arch: str = ""  # uname -m of the machine whose rules were applied
    notes: tuple[str, ...] = field(default=())

    @property
    def total(self) -> int:
        """Bytes taken from the running system (main + low + CMA), assuming no fallback."""
        return self.size + self.low_size + self.cma_size

    def describe(self) -> list[str]:
        if not self.size:
            return ["nothing is reserved"]
        lim = machine(self.arch).crash_low_limit if self.arch else "4G"  # CRASH_ADDR_LOW_MAX
        if self.offset:
            lines = [f"{format_size(self.size)} at the fixed physical address {self.offset:#x}"]
        elif self.high:
            low = (f"plus {format_size(self.low_size)} below {lim}" if self.low_size
                   else f"and no block below {lim} (0,low)")
            lines = [f"{format_size(self.size)} anywhere, above {lim} first, {low}"]
        elif self.fallback_low_size:
            lines = [
                f"{format_size(self.size)} below {lim} if it fits there, otherwise above {lim} "
                f"plus {format_size(self.fallback_low_size)} below {lim}"
            ]
        else:
            lines = [f"{format_size(self.size)}, placed by the kernel"]
        if self.cma_size:
            lines.append(f"plus {format_size(self.cma_size)} of CMA memory the running kernel may still use")
        return lines


def parse_cmdline(cmdline: str, ram_bytes: int, *, arch: str | None = None) -> Reservation:
    """parse_crashkernel() on a whole kernel command line, for a machine with ``ram_bytes`` of RAM
    and the rules of ``arch`` (``uname -m``; default: this machine)."""
    if ram_bytes <= 0:
        raise CrashkernelError(f"the system RAM size must be positive, not {ram_bytes}")
    mach = _machine(arch)
    arch = mach.uname
    generic = mach.generic_crashkernel
    notes: list[str] = []
    high, low, cma, fallback_low = False, 0, 0, 0
    plain = _parse_one(cmdline, ram_bytes, None, notes)
    if plain is None:
        has = {sfx: _last(cmdline, sfx) is not None for sfx in _SUFFIXES}
        if not generic and any(has.values()):
            raise CrashkernelError(f"crashkernel=SIZE,high/,low/,cma are not supported on {arch}")
        hi = _parse_one(cmdline, 0, ",high", notes) if generic else None
        if hi is None:
            if has[",low"] or has[",cma"]:
                raise CrashkernelError(
                    "crashkernel=SIZE,low and ,cma only add to crashkernel=SIZE,high or crashkernel=SIZE"
                )
            raise CrashkernelError("no crashkernel= parameter")
        size, base = hi[0], 0
        if size == 0:
            raise CrashkernelError("crashkernel=0,high reserves nothing")
        lo = _parse_one(cmdline, 0, ",low", notes)
        low = default_low_size(arch, cmdline) if lo is None else lo[0]
        high = True
    else:
        size, base = plain
        if generic and size and not base:
            fallback_low = default_low_size(arch, cmdline)
        if _last(cmdline, ",high") is not None or _last(cmdline, ",low") is not None:
            notes.append("crashkernel=SIZE,high/,low are ignored because a plain crashkernel= is present")
    if generic:
        try:
            got = _parse_one(cmdline, 0, ",cma", notes)
            cma = got[0] if got else 0
        except CrashkernelError as e:
            notes.append(f"the kernel ignores the bad crashkernel=…,cma: {e}")
    if mach.crash_note:
        notes.append(mach.crash_note)
    if size == 0:
        return Reservation(size=0, arch=arch, notes=tuple(notes))
    if size >= ram_bytes:
        raise CrashkernelError(
            f"crashkernel asks for {format_size(size)} but the system has only {format_size(ram_bytes)} "
            "of RAM; nothing is reserved"
        )
    align = mach.crash_align
    if base % align:
        notes.append(
            f"offset {base:#x} is not {format_size(align)}-aligned: the kernel's reservation will fail"
        )
    return Reservation(
        size=size,
        offset=base,
        high=high,
        low_size=low,
        cma_size=cma,
        fallback_low_size=fallback_low,
        arch=arch,
        notes=tuple(notes),
    )


def reservation(spec: str, ram_bytes: int, *, arch: str | None = None) -> Reservation:
    """``spec`` is a crashkernel= value (``512M-2G:64M,2G-:128M``, ``256M@16M``, ``1G,high``) or a
    command line holding one or more ``crashkernel=`` words (needed for ``,high`` + ``,low``)."""
    spec = spec.strip()
    if _NAME not in spec:
        spec = _NAME + spec
    return parse_cmdline(spec, ram_bytes, arch=arch)


# ---------------------------------------------------------------------------------------------
# estimate: how much to reserve for a given collector
#
# Formula (kdump-utils `kdumpctl estimate`, extended by the collector's own working set):
#   estimated = kernel + modules + 3 × initramfs + runtime + collector working set + LUKS
#   recommended = max(distribution default for this arch and RAM, estimated), rounded up to 16 MiB
# The initramfs counts three times: the compressed image, its unpacked copy in a tmpfs that may only
# grow to half of the capture kernel's memory, and headroom (kdumpctl's reasoning).
#
# Measured (fixtures/kdumpvm, README "Smallest crashkernel= (measured)"; Debian 6.1 cloud kernel, 1 GiB
# guest, 2 MB initramfs + root fs on disk): the capture kernel stops booting below ~76M; a capture
# under `pykdumpctl capture` needs 88M with makedumpfile and 92M with pydumpfile as the collector
# (since the capture path no longer imports numpy; 100M and 108M before). So pydumpfile's own working
# set (CPython, per-cycle bitmaps, one window per worker) is about 4 MiB above makedumpfile's and the
# Python capture step about 12 MiB. The kernel, module and
# initramfs sizes below stay kdumpctl's conservative allowances for a dracut-built initramfs, which is
# far larger than the measured one; give --kernel/--initrd to use the real files.

#: In-memory kernel size (bzImage init_size) when no kernel is given: distribution x86 kernels ~40-70 MiB.
DEFAULT_KERNEL_SIZE = 64 * MiB
#: Modules loaded in the capture kernel (storage, network, filesystem).
DEFAULT_MODULES_SIZE = 16 * MiB
#: A dracut kdump initramfs with makedumpfile; pydumpfile adds python3 and its codec libraries
#: (numpy is installed as a dependency but never loaded while capturing).
DEFAULT_INITRD_SIZE = 32 * MiB
PYTHON_INITRD_EXTRA = 48 * MiB
#: kdumpctl's allowance for user space and kernel runtime allocations.
RUNTIME_SIZE = 16 * MiB
#: Resident size of the collector before it touches the dump.
COLLECTOR_BASE = {
    "pydumpfile": 32 * MiB,  # measured: ~12 MiB capture step + makedumpfile's 16 MiB + 4 MiB
    "makedumpfile": 16 * MiB,
    "cp": 8 * MiB,
    "cat": 8 * MiB,
    "dd": 8 * MiB,
    "scp": 16 * MiB,
}
#: Per byte of RAM: both bitmaps at full size (2 bits per 4 KiB page = RAM / 16384); the collectors
#: build them one cycle (at most 4 MiB each) at a time, so this is a margin that grows with the machine.
_BITMAP_DIVISOR = 16384
_ROUND = 16 * MiB

@dataclass(frozen=True)
class Estimate:
    ram_bytes: int
    collector: str
    kernel: int
    modules: int
    initramfs: int
    runtime: int
    collector_ws: int
    luks: int
    estimated: int
    baseline: int
    recommended: int


def estimate_breakdown(
    ram_bytes: int,
    collector: str = "pydumpfile",
    *,
    kernel_size: int | None = None,
    initrd_size: int | None = None,
    modules_size: int | None = None,
    luks_bytes: int = 0,
    arch: str | None = None,
) -> Estimate:
    if ram_bytes <= 0:
        raise CrashkernelError(f"the system RAM size must be positive, not {ram_bytes}")
    name = collector.split()[0].rsplit("/", 1)[-1] if collector.strip() else "pydumpfile"
    if name not in COLLECTOR_BASE:
        raise CrashkernelError(f"unknown collector {name!r}; known: {', '.join(sorted(COLLECTOR_BASE))}")
    kernel = DEFAULT_KERNEL_SIZE if kernel_size is None else kernel_size
    modules = DEFAULT_MODULES_SIZE if modules_size is None else modules_size
    if initrd_size is None:
        initrd_size = DEFAULT_INITRD_SIZE + (PYTHON_INITRD_EXTRA if name == "pydumpfile" else 0)
    working = COLLECTOR_BASE[name] + ram_bytes // _BITMAP_DIVISOR
    estimated = kernel + modules + 3 * initrd_size + RUNTIME_SIZE + working + luks_bytes
    default = _machine(arch).distro_crashkernel  # Fedora/RHEL: kdump_get_arch_recommend_crashkernel
    baseline = 0
    if default:
        try:
            baseline = reservation(default, ram_bytes, arch=arch).size
        except CrashkernelError:
            baseline = 0  # e.g. a machine so small that the default range size exceeds its RAM
    recommended = -(-max(baseline, estimated) // _ROUND) * _ROUND
    return Estimate(
        ram_bytes=ram_bytes,
        collector=name,
        kernel=kernel,
        modules=modules,
        initramfs=initrd_size,
        runtime=RUNTIME_SIZE,
        collector_ws=working,
        luks=luks_bytes,
        estimated=estimated,
        baseline=baseline,
        recommended=recommended,
    )


def estimate(ram_bytes: int, collector: str = "pydumpfile", **sizes: Any) -> int:
    """Recommended crashkernel size in bytes; keyword arguments (kernel_size, initrd_size,
    modules_size, luks_bytes, arch) as :func:`estimate_breakdown`."""
    return estimate_breakdown(ram_bytes, collector, **sizes).recommended
