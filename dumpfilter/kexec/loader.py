"""``pykexec``: load (or unload) a kernel with kexec_file_load(2) through ctypes.

The shape of drgn's vmtest/enter_kdump.py: build the command line (the running one minus
``crashkernel=`` and ``BOOT_IMAGE=``, plus what a capture kernel needs), open the files, one
syscall, errno turned into a sentence. Only kexec_file_load is used (the kernel parses the image and
builds the ELF core header itself), so Secure Boot / lockdown systems work with signed kernels.

SAFETY: a real call needs root *and* ``PYKEXEC_ALLOW_REAL=1`` in the environment *and* the real
/proc and /sys (``DUMPFILTER_SYSROOT`` unset). Tests never set it; they use ``--dry-run`` or inject
a fake ``syscall``.
"""
from __future__ import annotations

import argparse
import ctypes
import errno
import os
import platform
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import DumpfilterError
from . import sysroot
from .bzimage import BzImage, probe
from ..kernel.arch.machines import Machine, host
from ..kernel.arch.machines import machine as machine_facts
from ..sizes import format_size

PROG = "pykexec"
ALLOW_ENV = "PYKEXEC_ALLOW_REAL"

KEXEC_FILE_UNLOAD = 0x1
KEXEC_FILE_ON_CRASH = 0x2
KEXEC_FILE_NO_INITRAMFS = 0x4
_FLAG_NAMES = (
    (KEXEC_FILE_UNLOAD, "KEXEC_FILE_UNLOAD"),
    (KEXEC_FILE_ON_CRASH, "KEXEC_FILE_ON_CRASH"),
    (KEXEC_FILE_NO_INITRAMFS, "KEXEC_FILE_NO_INITRAMFS"),
)

#: Added to a capture kernel's command line (kdump-utils' KDUMP_COMMANDLINE_APPEND for this machine);
#: per machine in kernel/arch/machines.py, with the names removed (KDUMP_COMMANDLINE_REMOVE).
CAPTURE_ARGS = host().capture_add

Syscall = Callable[..., tuple[int, int]]


class KexecError(DumpfilterError):
    """The load or unload cannot be done; the message says why in one sentence."""


# ---------------------------------------------------------------------------------------------
# command line


_WORD = re.compile(r'(?:[^\s"]|"[^"]*"?)+')


def cmdline_words(cmdline: str) -> list[str]:
    """Split like the kernel's next_arg(): on blanks, keeping "double quoted" parts together."""
    return _WORD.findall(cmdline)


def _key(word: str) -> str:
    return word.split("=", 1)[0]


def remove_params(cmdline: str, names: set[str] | frozenset[str]) -> str:
    """Drop every ``name`` and ``name=…`` word (kexec-tools remove_parameter)."""
    return " ".join(w for w in cmdline_words(cmdline) if _key(w) not in names)


def add_params(cmdline: str, extra: list[str]) -> str:
    """Append kernel parameters, but before a lone ``--`` (what follows it belongs to init)."""
    words = cmdline_words(cmdline)
    at = words.index("--") if "--" in words else len(words)
    return " ".join(words[:at] + extra + words[at:])


@dataclass(frozen=True)
class Cmdline:
    """A command line and, for a crash kernel, what was taken from and added to the reused one."""

    line: str
    removed: tuple[str, ...] = ()
    added: tuple[str, ...] = ()

    def report(self) -> list[str]:
        """``removed: …`` and ``added: …`` lines (none when nothing changed)."""
        out = []
        if self.removed:
            out.append(f"removed: {' '.join(self.removed)}")
        if self.added:
            out.append(f"added:   {' '.join(self.added)}")
        return out


def _kernel_part(words: list[str]) -> list[str]:
    return words[: words.index("--")] if "--" in words else words


def make_cmdline(
    *,
    crash: bool,
    reuse: bool,
    append: str | None,
    capture_args: bool = True,
    running: str | None = None,
    machine: Machine | None = None,
    remove: str | None = None,
) -> Cmdline:
    """The command line for the new kernel, with what was removed and added.

    kexec-tools rules: ``--reuse-cmdline`` takes /proc/cmdline minus ``BOOT_IMAGE=`` (and minus
    ``crashkernel=`` for a crash kernel); ``--append``/``--command-line`` is added after it, or is
    the whole line without ``--reuse-cmdline``. For a crash kernel (``-p``) with neither option the
    running command line is reused, and like kdumpctl (KDUMP_COMMANDLINE_REMOVE/APPEND) we then drop
    ``crashkernel=``, the machine's ``capture_remove`` names and the names in ``remove`` from the
    reused words, and add the machine's ``capture_add`` parameters (kernel/arch/machines.py): a reused
    word of the same name is replaced, one the user gave with ``--append`` is kept. ``capture_args``
    False leaves the machine's table out (``crashkernel=`` and ``remove`` still go). Additions go
    before a ``--`` separator, since the words after it are init's arguments.
    """
    m = machine if machine is not None else host()
    base: list[str] = []
    if reuse or (crash and append is None):
        text = sysroot.read_cmdline() if running is None else running
        base = [w for w in cmdline_words(text) if _key(w) != "BOOT_IMAGE"]
    user = cmdline_words(append) if append else []
    if not crash:
        return Cmdline(add_params(" ".join(base), user))
    drop = {"crashkernel"} | set(cmdline_words(remove or ""))
    table_add = list(m.capture_add) if capture_args else []
    if capture_args:
        drop |= set(m.capture_remove)
    replace = {_key(w) for w in table_add}
    at = base.index("--") if "--" in base else len(base)
    kept: list[str] = []
    removed: list[str] = []
    for i, w in enumerate(base):
        if i < at and (_key(w) in drop or _key(w) in replace):
            removed.append(w)
        else:
            kept.append(w)
    user = [w for w in user if _key(w) != "crashkernel"]
    line = add_params(" ".join(kept), user)
    present = {_key(w) for w in _kernel_part(cmdline_words(line))}
    added = [a for a in table_add if _key(a) not in present]
    # a reused word replaced by the same word is no change: report neither
    same = set(removed) & set(added)
    return Cmdline(
        add_params(line, added),
        removed=tuple(w for w in removed if w not in same),
        added=tuple(a for a in added if a not in same),
    )


# ---------------------------------------------------------------------------------------------
# the plan: everything decided before the syscall, printable for --dry-run


def flag_names(flags: int) -> str:
    names = [name for bit, name in _FLAG_NAMES if flags & bit]
    return "|".join(names) if names else "0"


def _c_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class Plan:
    unload: bool
    crash: bool
    kernel: BzImage | None
    initrd: Path | None
    cmdline: str

    @property
    def flags(self) -> int:
        f = KEXEC_FILE_ON_CRASH if self.crash else 0
        if self.unload:
            return f | KEXEC_FILE_UNLOAD
        return f | (0 if self.initrd else KEXEC_FILE_NO_INITRAMFS)

    @property
    def cmdline_bytes(self) -> bytes:
        """NUL-terminated, as the kernel wants it; cmdline_len is its length."""
        return self.cmdline.encode() + b"\0"

    def syscall_text(self) -> str:
        flags = flag_names(self.flags)
        if self.unload:
            return f"kexec_file_load(kernel_fd=-1, initrd_fd=-1, cmdline_len=0, cmdline=NULL, flags={flags})"
        assert self.kernel is not None
        initrd = f"open({_c_string(str(self.initrd))})" if self.initrd else "-1"
        return (
            f"kexec_file_load(kernel_fd=open({_c_string(str(self.kernel.path))}), initrd_fd={initrd}, "
            f"cmdline_len={len(self.cmdline_bytes)}, cmdline={_c_string(self.cmdline)}, flags={flags})"
        )

    def describe(self) -> list[str]:
        what = "crash (panic) kernel" if self.crash else "kernel for kexec reboot"
        if self.unload:
            return [f"unload the {what}", f"would call: {self.syscall_text()}"]
        assert self.kernel is not None
        k = self.kernel
        lines = [
            f"load a {what}",
            f"kernel:  {k.path} (bzImage, boot protocol {k.protocol_str}, needs {format_size(k.init_size)} "
            f"to start, {k.file_size} bytes)",
        ]
        if k.version_string:
            lines.append(f"version: {k.version_string}")
        lines.append(f"initrd:  {self.initrd} ({self.initrd.stat().st_size} bytes)" if self.initrd else "initrd:  none")
        lines.append(f"cmdline: {self.cmdline}")
        lines.append(f"would call: {self.syscall_text()}")
        return lines


def plan_load(kernel: str | Path, initrd: str | Path | None, cmdline: str, *, crash: bool) -> Plan:
    image = probe(kernel)
    initrd_path = None
    if initrd is not None:
        initrd_path = Path(initrd)
        if not initrd_path.is_file():
            raise KexecError(f"{initrd_path}: the initramfs does not exist or is not a regular file")
        if not os.access(initrd_path, os.R_OK):
            raise KexecError(f"{initrd_path}: the initramfs is not readable")
    limit = image.max_cmdline(crash)
    if len(cmdline.encode()) > limit:
        extra = " (the kernel adds elfcorehdr= for a crash kernel)" if crash else ""
        raise KexecError(
            f"the command line is {len(cmdline.encode())} bytes but {image.path} accepts at most {limit}{extra}"
        )
    return Plan(unload=False, crash=crash, kernel=image, initrd=initrd_path, cmdline=cmdline)


def plan_unload(*, crash: bool) -> Plan:
    return Plan(unload=True, crash=crash, kernel=None, initrd=None, cmdline="")


# ---------------------------------------------------------------------------------------------
# the syscall


def explain_errno(err: int, *, crash: bool, unload: bool = False) -> str:
    """One sentence for each errno kexec_file_load(2) documents."""
    name = errno.errorcode.get(err, str(err))
    if err == errno.EPERM:
        why = (
            "permission denied: it needs root (CAP_SYS_BOOT) and kernel.kexec_load_disabled = 0; "
            "under lockdown only a kernel signed with a trusted key is accepted"
        )
    elif err == errno.ENOEXEC:
        why = "the kernel refused the image: it is not a bootable kernel for this machine"
    elif err == errno.EKEYREJECTED:
        why = "the kernel's signature was rejected: Secure Boot / lockdown requires a kernel signed with a trusted key"
    elif err == errno.EBUSY:
        why = "kexec is busy: another load or unload is in progress, or the crash kernel is in use"
    elif err == errno.EADDRNOTAVAIL:
        why = "no memory is reserved for a crash kernel: boot with crashkernel=SIZE (see pykdumpctl estimate)"
    elif err == errno.ENOMEM:
        why = (
            "the crashkernel= reservation is too small for this kernel and initramfs"
            if crash
            else "not enough memory to stage the new kernel"
        )
    elif err == errno.EINVAL:
        why = (
            "invalid argument: the flags are not supported by this kernel"
            if unload
            else "invalid argument: the command line may be too long for this kernel, or a flag is not supported"
        )
    elif err == errno.EBADF:
        why = "a bad file descriptor for the kernel or the initramfs"
    elif err in (errno.ENOSYS, errno.EOPNOTSUPP):
        why = "this kernel has no kexec_file_load (CONFIG_KEXEC_FILE is off, or the arch lacks it)"
    elif err == errno.ENOENT and unload:
        why = "nothing is loaded"
    else:
        why = os.strerror(err)
    return f"kexec_file_load failed: {why} ({name})"


def _libc_syscall(nr: int, *args: object) -> tuple[int, int]:
    libc = ctypes.CDLL(None, use_errno=True)
    fn = libc.syscall
    fn.restype = ctypes.c_long
    ret = fn(ctypes.c_long(nr), *args)
    return int(ret), ctypes.get_errno()


def require_real_allowed() -> None:
    """Refuse a real syscall unless root, PYKEXEC_ALLOW_REAL=1 and the real /proc and /sys."""
    if os.environ.get(ALLOW_ENV) != "1":
        raise KexecError(
            f"refusing to call kexec_file_load: set {ALLOW_ENV}=1 to allow a real load/unload (or use --dry-run)"
        )
    if os.geteuid() != 0:
        raise KexecError("refusing to call kexec_file_load: it must run as root")
    if not sysroot.is_real_root():
        raise KexecError(f"refusing to call kexec_file_load while {sysroot.ENV} points at a fake /proc and /sys")


def execute(plan: Plan, *, syscall: Syscall | None = None, machine: str | None = None) -> None:
    """Make the call. Without an injected ``syscall`` the safety gate must pass first."""
    if syscall is None:
        require_real_allowed()
        syscall = _libc_syscall
    machine = machine or platform.machine()
    nr = machine_facts(machine).kexec_file_load
    if nr is None:
        raise KexecError(f"kexec_file_load is not available on {machine}")
    fds: list[int] = []
    try:
        if plan.unload:
            args: tuple[object, ...] = (ctypes.c_int(-1), ctypes.c_int(-1), ctypes.c_ulong(0), None)
        else:
            assert plan.kernel is not None
            kernel_fd = _open(plan.kernel.path, fds)
            initrd_fd = _open(plan.initrd, fds) if plan.initrd else -1
            cmd = plan.cmdline_bytes
            args = (ctypes.c_int(kernel_fd), ctypes.c_int(initrd_fd), ctypes.c_ulong(len(cmd)), ctypes.c_char_p(cmd))
        ret, err = syscall(nr, *args, ctypes.c_ulong(plan.flags))
    finally:
        for fd in fds:
            os.close(fd)
    if ret != 0:
        raise KexecError(explain_errno(err, crash=plan.crash, unload=plan.unload))


def _open(path: Path, fds: list[int]) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise KexecError(f"{path}: cannot open: {e.strerror}") from None
    fds.append(fd)
    return fd


# ---------------------------------------------------------------------------------------------
# command line interface


def status_lines() -> tuple[list[str], bool]:
    """The three sysfs values and whether a crash kernel is loaded."""
    st = sysroot.kexec_status()

    def flag(v: bool | None, f: str) -> str:
        return f"unknown (no {sysroot.path('/sys/kernel/' + f)})" if v is None else str(int(v))

    size = "unknown" if st.crash_size is None else f"{st.crash_size} ({format_size(st.crash_size)})"
    return [
        f"kexec_loaded:       {flag(st.loaded, 'kexec_loaded')}",
        f"kexec_crash_loaded: {flag(st.crash_loaded, 'kexec_crash_loaded')}",
        f"kexec_crash_size:   {size}",
    ], bool(st.crash_loaded)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Load a kernel for kexec or for crash dumps with kexec_file_load(2).",
        epilog=(
            "With -p the running command line is reused minus crashkernel= and the parameters kdump-utils removes "
            "for this machine, plus the ones it adds; pykexec prints what it removed and added. "
            f"A real load or unload needs root and {ALLOW_ENV}=1; --dry-run checks everything and prints the "
            "syscall instead. --status exits 0 when a crash kernel is loaded, 1 when not. "
            f"{sysroot.ENV} redirects /proc and /sys (tests)."
        ),
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("-p", "--load-panic", metavar="KERNEL", nargs="?", const="",
                      help="load KERNEL as the crash (panic) kernel; with -u: unload the crash kernel")
    mode.add_argument("-l", "--load", metavar="KERNEL", help="load KERNEL for a later kexec reboot")
    p.add_argument("kernel", nargs="?", help=argparse.SUPPRESS)  # kexec-tools style: -p [opts] KERNEL
    p.add_argument("--initrd", "--ramdisk", metavar="FILE", help="the initramfs to load with the kernel")
    p.add_argument("--append", "--command-line", dest="append", metavar="STR",
                   help="the command line, or what is added to it with --reuse-cmdline")
    p.add_argument("--reuse-cmdline", action="store_true",
                   help="start from /proc/cmdline without BOOT_IMAGE= (and crashkernel= with -p)")
    p.add_argument("--remove", metavar="NAMES",
                   help="with -p: also drop these parameter names from the reused command line "
                   "(kdumpctl's KDUMP_COMMANDLINE_REMOVE), e.g. --remove 'rd.lvm.lv quiet'")
    p.add_argument("--no-capture-args", action="store_true",
                   help="with -p: keep the reused command line as it is (only crashkernel= and --remove go) and "
                   "add nothing; by default the machine's kdump-utils lists apply, e.g. here drop "
                   f"{' '.join(host().capture_remove) or 'nothing'}, add {' '.join(CAPTURE_ARGS) or 'nothing'}")
    p.add_argument("-u", "--unload", action="store_true", help="unload instead of load")
    p.add_argument("-S", "--status", action="store_true",
                   help="print /sys/kernel/kexec_loaded, kexec_crash_loaded and kexec_crash_size")
    p.add_argument("--dry-run", action="store_true", help="check the files and print the syscall, change nothing")
    p.add_argument("--arch", help="with --dry-run: plan for this machine (uname -m), e.g. aarch64")
    return p


def run(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.status:
        lines, crash_loaded = status_lines()
        print("\n".join(lines))
        return 0 if crash_loaded else 1
    crash = args.load_panic is not None
    if machine_facts(args.arch or platform.machine()).kernel_format == "Image":
        from .kexec_load import run_image  # Image kernels; kexec_load where there is no kexec_file_load

        return run_image(args, machine_facts(args.arch or platform.machine()))
    changes: list[str] = []
    if args.unload:
        plan = plan_unload(crash=crash)
    else:
        kernel = args.load_panic or args.load or args.kernel
        if not kernel:
            raise KexecError("no kernel given: use -p KERNEL (crash kernel), -l KERNEL, -u or --status")
        if args.kernel and (args.load_panic or args.load):
            raise KexecError(f"two kernels given: {kernel} and {args.kernel}")
        if not (crash or args.load):
            raise KexecError("say what to do with the kernel: -p (crash kernel) or -l (kexec reboot)")
        cmd = make_cmdline(crash=crash, reuse=args.reuse_cmdline, append=args.append,
                           capture_args=not args.no_capture_args, remove=args.remove,
                           machine=machine_facts(args.arch or platform.machine()))
        changes = cmd.report()
        plan = plan_load(kernel, args.initrd, cmd.line, crash=crash)
    if args.dry_run:
        print("\n".join(plan.describe() + changes))
        return 0
    execute(plan)
    what = "crash kernel" if crash else "kexec kernel"
    if plan.unload:
        print(f"unloaded the {what}")
    else:
        print(f"loaded the {what} {args.load_panic or args.load or args.kernel}; cmdline: {plan.cmdline}")
        for line in changes:
            print(line)
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        return run(sys.argv[1:] if argv is None else argv)
    except DumpfilterError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
