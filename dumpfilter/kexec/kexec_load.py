"""Loading a kernel ``Image`` (the format of kexec/image.py): with kexec_file_load(2) where the running
kernel has it, else with kexec_load(2) and the segments a user-space loader must make itself.

Debian's kernels for this machine are built without CONFIG_KEXEC_FILE, so for them everything that
kexec_file_load would do in the kernel is done here, for a crash (capture) kernel (``-p``):

==========  =====================================================================================
segment     what, and where in the ``Crash kernel`` region of /proc/iomem (64 KiB aligned: a multiple
            of every page size)
==========  =====================================================================================
kernel      the Image at the first 2 MiB boundary + ``text_offset``; memsz = the header's image_size
initrd      the initramfs as is
dtb         the running device tree (/sys/firmware/fdt) with ``/chosen`` rewritten: ``bootargs``,
            ``linux,initrd-start``/``-end``, ``linux,elfcorehdr`` and ``linux,usable-memory-range``
            (all crash regions) in the root's cell sizes; ``kaslr-seed``/``rng-seed`` refilled from
            os.urandom when present; old ``linux,elfcorehdr``/``usable-memory-range`` dropped
elfcorehdr  the ELF core header the capture kernel builds /proc/vmcore from: a PT_NOTE per CPU
            (/sys/devices/system/cpu/cpuN/crash_notes, crash_notes_size), one for VMCOREINFO
            (/sys/kernel/vmcoreinfo), a PT_LOAD for the kernel image (``Kernel code`` start to
            ``Kernel data`` end, vaddr = paddr + kimage_voffset) and one per ``System RAM`` range
            minus the crash regions at its linear-map address; p_offset = physical address
purgatory   40 bytes: ``x0 = DTB; x1 = x2 = x3 = 0; br kernel``
==========  =====================================================================================

Why a purgatory: after kexec_load the kernel jumps to the entry with the MMU off and x0 = 0 (it
passes a DTB only for images it loaded itself with kexec_file_load), but the boot protocol wants x0
= the DTB's physical address, so the entry is six instructions that set the registers and branch to
the Image. kexec-tools' purgatory also checks a SHA-256 of the segments before jumping; ours does
not (the segments sit in memory the running kernel never hands out, and a failed check could only
stop the capture).

The linear-map and kernel-image addresses of the PT_LOADs come from the running kernel's own
VMCOREINFO (the ``VMCOREINFO`` note of /proc/kcore: PHYS_OFFSET, VA_BITS, kimage_voffset), not from
``_text`` in /proc/kallsyms, which Debian's 6.1 kernels do not list: kexec-tools 2.0.25 then writes
page_offset 0 and the capture kernel's /proc/vmcore claims about 2^64 bytes.

A kernel for ``kexec -l`` (a reboot, not a crash kernel) needs kexec_file_load here.
"""
from __future__ import annotations

import ctypes
import errno
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from ..errors import DumpfilterError
from ..kernel.arch import for_machine
from ..kernel.arch.machines import Machine
from ..kernel.vmcoreinfo import VmcoreInfo
from ..layouts import ElfStructs
from ..sizes import format_size
from ..source.base import parse_notes
from . import sysroot
from .fdt import Fdt, FdtError, cells
from .image import KernelImage

KEXEC_ON_CRASH = 0x1
SEG_ALIGN = 0x10000  # 64 KiB
KERNEL_ALIGN = 0x200000  # the Image's base must be 2 MiB aligned
PT_LOAD, PT_NOTE = 1, 4
ET_CORE = 4
#: fallback size of a CPU's crash note buffer (kexec-tools' MAX_NOTE_BYTES) when crash_notes_size is missing
MAX_NOTE_BYTES = 4096


class LoadError(DumpfilterError):
    """The segments can't be made or loaded (pykexec reports it as a KexecError)."""


def _align(v: int, a: int) -> int:
    return (v + a - 1) // a * a


# ---------------------------------------------------------------------------------------------
# what the running system says


@dataclass(frozen=True)
class SystemFacts:
    """Everything the loader reads from /proc and /sys (tests build these by hand). Ranges are
    [start, end) physical addresses."""

    ram: tuple[tuple[int, int], ...]
    crash: tuple[tuple[int, int], ...]
    kernel_image: tuple[int, int] | None  # "Kernel code" start .. "Kernel data" end
    cpu_notes: tuple[tuple[int, int], ...]  # (address, size) per possible CPU
    vmcoreinfo_note: tuple[int, int] | None  # /sys/kernel/vmcoreinfo
    vmcoreinfo: VmcoreInfo | None  # the running kernel's VMCOREINFO text
    fdt: bytes | None


def _iomem() -> list[tuple[int, int, int, str]]:
    """(depth, start, end_exclusive, name) of every /proc/iomem line."""
    p = sysroot.path("/proc/iomem")
    try:
        text = p.read_text()
    except OSError as e:
        raise LoadError(f"cannot read {p}: {e.strerror}") from None
    out = []
    for line in text.splitlines():
        m = re.match(r"^(\s*)([0-9a-fA-F]+)-([0-9a-fA-F]+) : (.*)$", line)
        if m:
            out.append((len(m.group(1)) // 2, int(m.group(2), 16), int(m.group(3), 16) + 1, m.group(4).strip()))
    return out


def kcore_vmcoreinfo(path: Path) -> VmcoreInfo | None:
    """The VMCOREINFO note of /proc/kcore (the kernel adds it since 4.19), or None."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
                return None
            es = ElfStructs(64, False)
            fields = es.ehdr.unpack_from(head, 16)
            phoff, phentsize, phnum = fields[4], fields[8], fields[9]
            f.seek(phoff)
            phdrs = f.read(phentsize * phnum)
            for i in range(phnum):
                p_type, _fl, off, _va, _pa, filesz, _ms, _al = es.unpack_phdr(phdrs, i * phentsize)
                if p_type == PT_NOTE and 0 < filesz < 1 << 20:
                    f.seek(off)
                    for n in parse_notes(f.read(filesz)):
                        if n.name == b"VMCOREINFO":
                            return VmcoreInfo.parse(n.desc)
    except OSError:
        return None
    return None


def read_system() -> SystemFacts:
    """The facts of the running system (through sysroot: tests point it at a fake tree)."""
    lines = _iomem()
    ram = tuple((s, e) for d, s, e, n in lines if d == 0 and n == "System RAM")
    crash = tuple((s, e) for _d, s, e, n in lines if n == "Crash kernel")
    code = [(s, e) for _d, s, e, n in lines if n == "Kernel code"]
    data = [(s, e) for _d, s, e, n in lines if n == "Kernel data"]
    image = (code[0][0], data[0][1]) if code and data else None
    notes = []
    cpu_dir = sysroot.path("/sys/devices/system/cpu")
    cpus = sorted((p for p in cpu_dir.glob("cpu[0-9]*") if (p / "crash_notes").exists()),
                  key=lambda p: int(p.name[3:]))
    for c in cpus:
        addr = int((c / "crash_notes").read_text().strip(), 16)
        size_f = c / "crash_notes_size"
        size = int(size_f.read_text().strip()) if size_f.exists() else MAX_NOTE_BYTES
        notes.append((addr, size))
    vmci = None
    try:
        a, s = sysroot.path("/sys/kernel/vmcoreinfo").read_text().split()[:2]
        vmci = (int(a, 16), int(s, 16))
    except (OSError, ValueError):
        pass
    try:
        fdt = sysroot.path("/sys/firmware/fdt").read_bytes()
    except OSError:
        fdt = None
    return SystemFacts(ram, crash, image, tuple(notes), vmci, kcore_vmcoreinfo(sysroot.path("/proc/kcore")), fdt)


# ---------------------------------------------------------------------------------------------
# the segments


def _subtract(ranges: tuple[tuple[int, int], ...], holes: tuple[tuple[int, int], ...]) -> list[tuple[int, int]]:
    out = list(ranges)
    for hs, he in holes:
        nxt = []
        for s, e in out:
            if he <= s or hs >= e:
                nxt.append((s, e))
                continue
            if s < hs:
                nxt.append((s, hs))
            if he < e:
                nxt.append((he, e))
        out = nxt
    return out


def elf_core_header(facts: SystemFacts, machine: Machine) -> bytes:
    """The ELF64 core header for the capture kernel (see the module docstring)."""
    vi = facts.vmcoreinfo
    if vi is None:
        raise LoadError("the running kernel's VMCOREINFO is not readable (no VMCOREINFO note in /proc/kcore; "
                        "it needs root and CONFIG_PROC_KCORE)")
    arch = for_machine(machine.e_machine)
    voff = arch.image_voffset(vi)
    if facts.kernel_image is None or voff is None:
        raise LoadError("can't place the kernel image: /proc/iomem has no Kernel code/data or VMCOREINFO no kimage_voffset")
    if facts.vmcoreinfo_note is None:
        raise LoadError(f"cannot read {sysroot.path('/sys/kernel/vmcoreinfo')}")
    if not facts.cpu_notes:
        raise LoadError(f"no CPU has a crash_notes file under {sysroot.path('/sys/devices/system/cpu')}")
    es = ElfStructs(64, False)
    ph: list[bytes] = []
    for addr, size in (*facts.cpu_notes, facts.vmcoreinfo_note):
        ph.append(es.pack_phdr(PT_NOTE, 0, addr, 0, addr, size, size, 0))
    ks, ke = facts.kernel_image
    ph.append(es.pack_phdr(PT_LOAD, 7, ks, (ks + voff) % (1 << 64), ks, ke - ks, ke - ks, 0))
    for s, e in _subtract(facts.ram, facts.crash):
        va = arch.linear_vaddr(vi, s)
        assert va is not None
        ph.append(es.pack_phdr(PT_LOAD, 7, s, va, s, e - s, e - s, 0))
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + b"\0" * 8
    head = ident + es.ehdr.pack(ET_CORE, machine.e_machine, 1, 0, 64, 0, 0, 64, es.phdr.size, len(ph), 0, 0, 0)
    return head + b"".join(ph)


def purgatory(dtb: int, entry: int) -> bytes:
    """x0 = dtb; x1 = x2 = x3 = 0; branch to entry (A64, the two addresses as literals after the code)."""
    code = [
        0x58000000 | (6 << 5) | 0,  # ldr x0, .+24  (dtb)
        0xAA1F03E1,  # mov x1, xzr
        0xAA1F03E2,  # mov x2, xzr
        0xAA1F03E3,  # mov x3, xzr
        0x58000000 | (4 << 5) | 4,  # ldr x4, .+16  (entry)
        0xD61F0080,  # br x4
    ]
    return struct.pack("<6I", *code) + struct.pack("<QQ", dtb, entry)


def second_dtb(blob: bytes, cmdline: str, initrd: tuple[int, int] | None, elfcorehdr: tuple[int, int],
               usable: tuple[tuple[int, int], ...]) -> bytes:
    """The running device tree with the capture kernel's /chosen (ranges are [start, end))."""
    try:
        fdt = Fdt.parse(blob)
    except FdtError as e:
        raise LoadError(f"/sys/firmware/fdt: {e}") from None
    ac = fdt.root.u32("#address-cells", 2)
    sc = fdt.root.u32("#size-cells", 1)
    chosen = fdt.node("/chosen", create=True)
    assert chosen is not None
    for k in ("linux,initrd-start", "linux,initrd-end", "linux,elfcorehdr", "linux,usable-memory-range",
              "linux,booted-from-kexec"):
        chosen.props.pop(k, None)
    chosen.props["bootargs"] = cmdline.encode() + b"\0"
    if initrd is not None:
        chosen.props["linux,initrd-start"] = struct.pack(">Q", initrd[0])
        chosen.props["linux,initrd-end"] = struct.pack(">Q", initrd[1])
    chosen.props["linux,elfcorehdr"] = cells([elfcorehdr[0]], ac) + cells([elfcorehdr[1] - elfcorehdr[0]], sc)
    chosen.props["linux,usable-memory-range"] = b"".join(cells([s], ac) + cells([e - s], sc) for s, e in usable)
    for seed in ("kaslr-seed", "rng-seed"):
        if seed in chosen.props:
            chosen.props[seed] = os.urandom(len(chosen.props[seed]))
    out = fdt.to_bytes()
    if len(out) > 2 << 20:
        raise LoadError(f"the device tree grew to {len(out)} bytes; the boot protocol allows 2 MiB")
    return out


@dataclass(frozen=True)
class Segment:
    what: str
    data: bytes
    mem: int
    memsz: int


@dataclass(frozen=True)
class LoadPlan:
    segments: tuple[Segment, ...]
    entry: int
    flags: int
    region: tuple[int, int]

    def syscall_text(self) -> str:
        flags = "KEXEC_ON_CRASH" if self.flags & KEXEC_ON_CRASH else "0"
        segs = ", ".join(f"{{{s.what}: buf, bufsz={len(s.data):#x}, mem={s.mem:#x}, memsz={s.memsz:#x}}}"
                         for s in self.segments)
        return (f"kexec_load(entry={self.entry:#x}, nr_segments={len(self.segments)}, segments=[{segs}], "
                f"flags={flags}|KEXEC_ARCH({self.flags >> 16}))")

    def describe(self) -> list[str]:
        lines = [f"segments in the crash region {self.region[0]:#x}-{self.region[1] - 1:#x} "
                 f"({format_size(self.region[1] - self.region[0])}):"]
        for s in self.segments:
            lines.append(f"  {s.what:<10} {s.mem:#014x}-{s.mem + s.memsz - 1:#014x} memsz {format_size(s.memsz):>6}, "
                         f"{len(s.data)} bytes")
        lines.append(f"entry:   {self.entry:#x} (purgatory)")
        return lines


def plan_crash_load(image: KernelImage, initrd: bytes | None, cmdline: str, facts: SystemFacts,
                    machine: Machine) -> LoadPlan:
    """Place the five segments in the crash region (the highest one: crashk_res with ,high)."""
    if not facts.crash:
        raise LoadError("no memory is reserved for a crash kernel (no \"Crash kernel\" in /proc/iomem): "
                        "boot with crashkernel=SIZE")
    if facts.fdt is None:
        raise LoadError(f"cannot read {sysroot.path('/sys/firmware/fdt')} (the running device tree)")
    region = max(facts.crash)
    start, end = region
    kmem = _align(start, KERNEL_ALIGN) + image.text_offset
    kmemsz = _align(image.image_size, SEG_ALIGN)
    at = _align(kmem + kmemsz, SEG_ALIGN)
    segs: list[Segment] = [Segment("kernel", image.data, kmem, kmemsz)]
    initrd_range = None
    if initrd is not None:
        segs.append(Segment("initrd", initrd, at, _align(len(initrd), SEG_ALIGN)))
        initrd_range = (at, at + len(initrd))
        at += segs[-1].memsz
    hdr = elf_core_header(facts, machine)
    # the DTB's size does not depend on the addresses in it (fixed cell sizes): measure, then place
    dtb_memsz = _align(len(second_dtb(facts.fdt, cmdline, initrd_range, (0, len(hdr)), facts.crash)), SEG_ALIGN)
    hdr_mem = at + dtb_memsz
    dtb = second_dtb(facts.fdt, cmdline, initrd_range, (hdr_mem, hdr_mem + len(hdr)), facts.crash)
    segs.append(Segment("dtb", dtb, at, dtb_memsz))
    segs.append(Segment("elfcorehdr", hdr, hdr_mem, _align(len(hdr), SEG_ALIGN)))
    pmem = hdr_mem + segs[-1].memsz
    segs.append(Segment("purgatory", purgatory(at, kmem), pmem, SEG_ALIGN))
    need = pmem + SEG_ALIGN - start
    if pmem + SEG_ALIGN > end:
        raise LoadError(f"the crash region {start:#x}-{end - 1:#x} ({format_size(end - start)}) is too small: the "
                        f"kernel, initramfs, device tree and core header need {format_size(need)} of it, and the "
                        "capture kernel needs room to run besides")
    return LoadPlan(tuple(segs), pmem, KEXEC_ON_CRASH | machine.e_machine << 16, region)


# ---------------------------------------------------------------------------------------------
# the system call


class _KexecSegment(ctypes.Structure):
    _fields_ = [("buf", ctypes.c_void_p), ("bufsz", ctypes.c_size_t), ("mem", ctypes.c_void_p),
                ("memsz", ctypes.c_size_t)]


def explain_errno(err: int) -> str:
    name = errno.errorcode.get(err, str(err))
    why = {
        errno.EPERM: "permission denied: it needs root (CAP_SYS_BOOT) and kernel.kexec_load_disabled = 0, and "
                     "lockdown (Secure Boot) forbids kexec_load altogether",
        errno.EADDRNOTAVAIL: "a segment lies outside the crash kernel reservation",
        errno.EBUSY: "kexec is busy: another load or unload is in progress",
        errno.EINVAL: "invalid argument: overlapping or unaligned segments, or a flag this kernel lacks",
        errno.ENOMEM: "not enough memory to stage the segments",
        errno.ENOSYS: "this kernel has no kexec_load (CONFIG_KEXEC is off)",
    }.get(err, os.strerror(err))
    return f"kexec_load failed: {why} ({name})"


def execute(plan: LoadPlan | None, machine: Machine, syscall, *, crash: bool = True) -> None:  # noqa: ANN001
    """kexec_load(2) with ``plan``'s segments, or an unload (``plan`` None). ``syscall(nr, *args)`` returns
    (ret, errno)."""
    nr = machine.kexec_load
    if nr is None:
        raise LoadError(f"kexec_load is not available on {machine.uname}")
    flags = (KEXEC_ON_CRASH if crash else 0) | machine.e_machine << 16
    if plan is None:
        ret, err = syscall(nr, ctypes.c_ulong(0), ctypes.c_ulong(0), None, ctypes.c_ulong(flags))
    else:
        bufs = [ctypes.create_string_buffer(s.data, len(s.data)) for s in plan.segments]
        arr = (_KexecSegment * len(plan.segments))(*[
            _KexecSegment(ctypes.cast(b, ctypes.c_void_p), len(s.data), s.mem, s.memsz)
            for b, s in zip(bufs, plan.segments)])
        ret, err = syscall(nr, ctypes.c_ulong(plan.entry), ctypes.c_ulong(len(plan.segments)), arr,
                           ctypes.c_ulong(plan.flags))
    if ret != 0:
        raise LoadError(explain_errno(err))


def has_kexec_file(release: str | None = None) -> bool | None:
    """CONFIG_KEXEC_FILE of the running kernel from /boot/config-R or /proc/config.gz; None if unknown."""
    import gzip

    release = release or os.uname().release
    text = None
    try:
        text = sysroot.path(f"/boot/config-{release}").read_text()
    except OSError:
        try:
            with gzip.open(sysroot.path("/proc/config.gz"), "rt") as f:
                text = f.read()
        except OSError:
            return None
    return re.search(r"^CONFIG_KEXEC_FILE=y$", text, re.M) is not None


# ---------------------------------------------------------------------------------------------
# pykexec for machines whose kernels are Images (loader.run hands over here)


def _file_load(machine: Machine, image: KernelImage | None, initrd: Path | None, cmdline: str, flags: int,
               syscall) -> int:  # noqa: ANN001
    """kexec_file_load with the unpacked Image in a memfd; returns errno (0: done)."""
    nr = machine.kexec_file_load
    if nr is None:
        return errno.ENOSYS
    fds: list[int] = []
    try:
        if image is None:
            args: tuple[object, ...] = (ctypes.c_int(-1), ctypes.c_int(-1), ctypes.c_ulong(0), None)
        else:
            kfd = os.memfd_create("pykexec-Image", os.MFD_CLOEXEC)
            fds.append(kfd)
            os.write(kfd, image.data)
            os.lseek(kfd, 0, os.SEEK_SET)
            ifd = -1
            if initrd is not None:
                ifd = os.open(initrd, os.O_RDONLY | os.O_CLOEXEC)
                fds.append(ifd)
            cmd = cmdline.encode() + b"\0"
            args = (ctypes.c_int(kfd), ctypes.c_int(ifd), ctypes.c_ulong(len(cmd)), ctypes.c_char_p(cmd))
        ret, err = syscall(nr, *args, ctypes.c_ulong(flags))
    finally:
        for fd in fds:
            os.close(fd)
    return 0 if ret == 0 else err


def _file_syscall_text(image: KernelImage | None, initrd: Path | None, cmdline: str, flags: int) -> str:
    from .loader import flag_names

    if image is None:
        return f"kexec_file_load(kernel_fd=-1, initrd_fd=-1, cmdline_len=0, cmdline=NULL, flags={flag_names(flags)})"
    ini = f'open("{initrd}")' if initrd else "-1"
    return (f"kexec_file_load(kernel_fd=memfd(the unpacked Image), initrd_fd={ini}, cmdline_len={len(cmdline) + 1}, "
            f'cmdline="{cmdline}", flags={flag_names(flags)})')


def run_image(args, machine: Machine, syscall=None) -> int:  # noqa: ANN001 - loader's argparse namespace
    """``pykexec`` for an Image kernel: kexec_file_load where the kernel has it, else (crash kernels)
    kexec_load with our segments. Returns the exit code; errors are KexecError."""
    from . import loader
    from .image import ImageError, probe

    crash = args.load_panic is not None
    file_flags = loader.KEXEC_FILE_ON_CRASH if crash else 0
    foreign = bool(args.arch) and args.arch != os.uname().machine and sysroot.is_real_root()
    kexec_file = None if foreign else has_kexec_file()  # planning for another machine: its kernel is unknown
    config_note = {True: "the kernel has kexec_file_load (CONFIG_KEXEC_FILE=y)",
                   False: "the kernel has no kexec_file_load (CONFIG_KEXEC_FILE is not set): kexec_load",
                   None: f"CONFIG_KEXEC_FILE unknown ({'another machine' if foreign else 'no /boot/config-R, no /proc/config.gz'}): "
                         "kexec_file_load first, kexec_load if the kernel has none"}[kexec_file]
    if not args.dry_run:
        if args.arch and args.arch != os.uname().machine:
            raise loader.KexecError(f"--arch {args.arch} is for --dry-run only; this machine is {os.uname().machine}")
        if syscall is None:
            loader.require_real_allowed()
            syscall = loader._libc_syscall
    what = "crash kernel" if crash else "kexec kernel"
    if args.unload:
        flags = file_flags | loader.KEXEC_FILE_UNLOAD
        if args.dry_run:
            print(f"unload the {what}\n{config_note}")
            if kexec_file is not False:
                print(f"would call: {_file_syscall_text(None, None, '', flags)}")
            if kexec_file is not True:
                print(f"would call: kexec_load(entry=0, nr_segments=0, segments=NULL, "
                      f"flags={'KEXEC_ON_CRASH|' if crash else ''}KEXEC_ARCH({machine.e_machine}))")
            return 0
        err = errno.ENOSYS if kexec_file is False else _file_load(machine, None, None, "", flags, syscall)
        if err in (errno.ENOSYS, errno.EOPNOTSUPP):
            try:
                execute(None, machine, syscall, crash=crash)
            except LoadError as e:
                raise loader.KexecError(str(e)) from None
        elif err:
            raise loader.KexecError(loader.explain_errno(err, crash=crash, unload=True))
        print(f"unloaded the {what}")
        return 0
    kernel = args.load_panic or args.load or args.kernel
    if not kernel:
        raise loader.KexecError("no kernel given: use -p KERNEL (crash kernel), -l KERNEL, -u or --status")
    if not (crash or args.load):
        raise loader.KexecError("say what to do with the kernel: -p (crash kernel) or -l (kexec reboot)")
    try:
        image = probe(kernel)
    except ImageError as e:
        raise loader.KexecError(str(e)) from None
    cmd = loader.make_cmdline(crash=crash, reuse=args.reuse_cmdline, append=args.append,
                              capture_args=not args.no_capture_args, remove=args.remove,
                              machine=machine)  # this machine's capture parameters (--arch: not the host's)
    cmdline = cmd.line
    if len(cmdline.encode()) > image.max_cmdline(crash):
        raise loader.KexecError(f"the command line is {len(cmdline.encode())} bytes; the kernel takes at most "
                                f"{image.max_cmdline(crash)}")
    initrd = Path(args.initrd) if args.initrd else None
    initrd_data = None
    if initrd is not None:
        try:
            initrd_data = initrd.read_bytes()
        except OSError as e:
            raise loader.KexecError(f"{initrd}: cannot read the initramfs: {e.strerror}") from None
    if not initrd:
        file_flags |= loader.KEXEC_FILE_NO_INITRAMFS
    plan = None
    plan_error = None
    if crash and kexec_file is not True:
        try:
            plan = plan_crash_load(image, initrd_data, cmdline, read_system(), machine)
        except LoadError as e:
            plan_error = str(e)
    if args.dry_run:
        lines = [f"load a {'crash (panic) kernel' if crash else 'kernel for kexec reboot'}",
                 f"kernel:  {image.describe()}"]
        if image.version_string:
            lines.append(f"version: {image.version_string}")
        lines.append(f"initrd:  {initrd} ({len(initrd_data)} bytes)" if initrd and initrd_data is not None
                     else "initrd:  none")
        lines += [f"cmdline: {cmdline}", *cmd.report(), f"syscall: {config_note}"]
        if kexec_file is not False:
            lines.append(f"would call: {_file_syscall_text(image, initrd, cmdline, file_flags)}")
        if crash and kexec_file is not True:
            if plan is not None:
                lines += plan.describe() + [f"would call: {plan.syscall_text()}"]
            else:
                lines.append(f"kexec_load segments: cannot be made here: {plan_error}")
        elif not crash and kexec_file is False:
            lines.append("a kernel for kexec reboot (-l) needs kexec_file_load, which this kernel lacks")
        print("\n".join(lines))
        return 0
    err = errno.ENOSYS if kexec_file is False else _file_load(machine, image, initrd, cmdline, file_flags, syscall)
    how = "kexec_file_load"
    if err in (errno.ENOSYS, errno.EOPNOTSUPP):
        if not crash:
            raise loader.KexecError("this kernel has no kexec_file_load, and pykexec makes kexec_load segments "
                                    "only for a crash kernel (-p)")
        if plan is None:
            if plan_error is None:
                try:
                    plan = plan_crash_load(image, initrd_data, cmdline, read_system(), machine)
                except LoadError as e:
                    raise loader.KexecError(str(e)) from None
            else:
                raise loader.KexecError(plan_error)
        try:
            execute(plan, machine, syscall, crash=True)
        except LoadError as e:
            raise loader.KexecError(str(e)) from None
        how = f"kexec_load, {len(plan.segments)} segments"
    elif err:
        raise loader.KexecError(loader.explain_errno(err, crash=crash))
    print(f"loaded the {what} {kernel} ({how}); cmdline: {cmdline}")
    for line in cmd.report():
        print(line)
    return 0
