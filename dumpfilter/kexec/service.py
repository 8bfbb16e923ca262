"""The kdumpctl-like service commands: ``start``/``stop`` (what the systemd unit runs), ``status``, ``test``,
``rebuild`` and ``unit install|remove``.

``start`` loads the capture kernel from the sysconfig-style file (:data:`SYSCONFIG`, ``NAME="value"``
lines as /etc/sysconfig/kdump: KDUMP_KERNEL, KDUMP_INITRD, KDUMP_COMMANDLINE_APPEND,
KDUMP_COMMANDLINE_REMOVE, KDUMP_CONFIG) through ``pykexec -p --reuse-cmdline``; it rebuilds the capture
initramfs first when it is missing or older than kdump.conf (kdumpctl's rule; kdump.conf's
``force_rebuild``/``force_no_rebuild`` apply). ``status`` exits as kdumpctl's: 0 operational, 3 not.

/proc and /sys go through :mod:`sysroot` (``DUMPFILTER_SYSROOT``); /etc, /boot and the unit directory through
``--root`` (unit install) or the paths in the sysconfig file, so tests run against a fake tree.
"""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..errors import DumpfilterError
from . import sysroot
from .kdumpconf import KdumpConfig, parse_file

SYSCONFIG = "/etc/default/pykdump"
DEFAULT_CONFIG = "/etc/kdump.conf"
INITRD_DIR = "/var/lib/pydumpfile"
UNIT_NAME = "pykdump.service"
UNIT_DIR = "/etc/systemd/system"
#: kdumpctl status: 0 operational, 3 not (LSB "program is not running")
EXIT_NOT_OPERATIONAL = 3


class ServiceError(DumpfilterError):
    """A service command cannot do what was asked; one sentence why."""


# ---------------------------------------------------------------------------------------------
# the sysconfig-style file


@dataclass(frozen=True)
class SysConfig:
    kernel: str = ""  # default /boot/vmlinuz-$(uname -r)
    initrd: str = ""  # default INITRD_DIR/initrd-$(uname -r).img, built by pykdumpctl rebuild
    append: str = ""  # KDUMP_COMMANDLINE_APPEND
    remove: str = ""  # KDUMP_COMMANDLINE_REMOVE
    config: str = DEFAULT_CONFIG

    def kernel_path(self, release: str) -> Path:
        return Path(self.kernel or f"/boot/vmlinuz-{release}")

    def initrd_path(self, release: str) -> Path:
        return Path(self.initrd or f"{INITRD_DIR}/initrd-{release}.img")


_KEYS = {"KDUMP_KERNEL": "kernel", "KDUMP_INITRD": "initrd", "KDUMP_COMMANDLINE_APPEND": "append",
         "KDUMP_COMMANDLINE_REMOVE": "remove", "KDUMP_CONFIG": "config"}


def parse_sysconfig(text: str, name: str = SYSCONFIG) -> SysConfig:
    """``NAME="value"`` lines (shell quoting, no expansion, nothing executed); ``#`` comments."""
    values: dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        key, eq, rest = line.partition("=")
        if not eq or not key.isidentifier():
            raise ServiceError(f"{name}:{n}: expected NAME=\"value\", got {raw.strip()!r}")
        try:
            words = shlex.split(rest, comments=True)
        except ValueError as e:
            raise ServiceError(f"{name}:{n}: {e}") from None
        if key in _KEYS:
            values[_KEYS[key]] = " ".join(words)
    return SysConfig(**values)


def read_sysconfig(path: str | None) -> SysConfig:
    """The file, or the defaults when it does not exist and was not named explicitly."""
    name = path or SYSCONFIG
    try:
        text = Path(name).read_text(encoding="utf-8")
    except FileNotFoundError:
        if path is not None:
            raise ServiceError(f"{name}: no such file") from None
        return SysConfig()
    except OSError as e:
        raise ServiceError(f"{name}: cannot read: {e.strerror}") from None
    return parse_sysconfig(text, name)


def sysconfig_template() -> str:
    return resources.files("dumpfilter.kexec").joinpath("data/pykdump.sysconfig").read_text(encoding="utf-8")


def _load_conf(path: str) -> KdumpConfig:
    return parse_file(path) if os.path.exists(path) else KdumpConfig()


# ---------------------------------------------------------------------------------------------
# status, start, stop


def crash_loaded() -> bool | None:
    return sysroot.kexec_status().crash_loaded


def cmd_status(args: argparse.Namespace) -> int:
    loaded = crash_loaded()
    node = sysroot.path("/sys/kernel/kexec_crash_loaded")
    if loaded is None:
        print(f"Kdump is not operational ({node} is missing: the kernel has no kexec)")
        return EXIT_NOT_OPERATIONAL
    if not loaded:
        size = sysroot.kexec_status().crash_size
        why = "no memory is reserved (boot with crashkernel=)" if size == 0 else "no crash kernel is loaded"
        print(f"Kdump is not operational: {why}")
        return EXIT_NOT_OPERATIONAL
    print("Kdump is operational")
    return 0


def _release() -> str:
    return os.uname().release


def needs_rebuild(initrd: Path, conf_path: str, conf: KdumpConfig) -> str | None:
    """Why the capture initramfs must be built again (None: it need not)."""
    if conf.force_no_rebuild:
        return None
    if conf.force_rebuild:
        return "kdump.conf says force_rebuild 1"
    if not initrd.exists():
        return f"{initrd} does not exist"
    try:
        if os.path.getmtime(conf_path) > initrd.stat().st_mtime:
            return f"{conf_path} is newer than {initrd}"
    except OSError:
        pass
    return None


def pykexec_argv(sc: SysConfig, release: str) -> list[str]:
    """The ``pykexec`` arguments ``start`` uses (the running command line, adjusted)."""
    argv = ["-p", str(sc.kernel_path(release)), "--reuse-cmdline"]
    initrd = sc.initrd_path(release)
    if str(initrd) != "none":
        argv += ["--initrd", str(initrd)]
    if sc.append:
        argv += ["--append", sc.append]
    if sc.remove:
        argv += ["--remove", sc.remove]
    return argv


def cmd_start(args: argparse.Namespace) -> int:
    from . import loader

    sc = read_sysconfig(args.sysconfig)
    release = _release()
    conf = _load_conf(sc.config)
    initrd = sc.initrd_path(release)
    why = None if str(initrd) == "none" else needs_rebuild(initrd, sc.config, conf)
    if why:
        print(f"rebuilding the capture initramfs: {why}")
        from .initrd import rebuild

        rebuild(initrd, config=sc.config, kernel_release=release, dry_run=args.dry_run)
    argv = pykexec_argv(sc, release) + (["--dry-run"] if args.dry_run else [])
    print(f"pykexec {shlex.join(argv)}")
    rc = loader.main(argv)
    if rc == 0 and not args.dry_run:
        print("kexec: loaded kdump kernel")
    return rc


def cmd_stop(args: argparse.Namespace) -> int:
    from . import loader

    return loader.main(["-u", "-p"] + (["--dry-run"] if args.dry_run else []))


# ---------------------------------------------------------------------------------------------
# test


def cmd_test(args: argparse.Namespace) -> int:
    """Say what a crash would do now; with --yes, do it (sysrq c)."""
    loaded = crash_loaded()
    conf = _load_conf(args.config)
    if not loaded:
        print("Kdump is not operational: no crash kernel is loaded, a crash now would save nothing "
              "(pykdumpctl start, or systemctl start pykdump)")
        if not args.force:
            return EXIT_NOT_OPERATIONAL
    else:
        print("Kdump is operational: the crash kernel is loaded")
    print(f"kdump.conf ({args.config if os.path.exists(args.config) else 'missing: defaults'}):")
    for line in conf.summary():
        print(f"  {line}")
    sysrq = sysroot.path("/proc/sys/kernel/sysrq")
    trigger = sysroot.path("/proc/sysrq-trigger")
    print(f"a crash: write 1 to {sysrq} and c to {trigger}; the kernel panics at once, the capture kernel "
          f"boots and saves vmcore-dmesg.txt and the vmcore as above, then final_action {conf.final_action}")
    if not args.yes:
        print("nothing done: add --yes to crash this machine now")
        return 0
    if sysroot.is_real_root() and os.geteuid() != 0:
        raise ServiceError("crashing the machine needs root")
    print("crashing now (sysrq c)", flush=True)
    os.sync()
    try:
        sysrq.write_text("1\n")
        with open(trigger, "w") as f:
            f.write("c")
    except OSError as e:
        raise ServiceError(f"cannot trigger the crash: {e.strerror}") from None
    return 0  # reached only where the write did not crash (a fake root)


# ---------------------------------------------------------------------------------------------
# the systemd unit


def unit_text(command: list[str] | None = None) -> str:
    """The unit with ``@PYKDUMPCTL@`` replaced by how to run this pykdumpctl."""
    cmd = command or [sys.executable, "-m", "dumpfilter.kexec.pykdumpctl"]
    text = resources.files("dumpfilter.kexec").joinpath(f"data/{UNIT_NAME}").read_text(encoding="utf-8")
    return text.replace("@PYKDUMPCTL@", shlex.join(cmd)).replace("@SYSCONFIG@", SYSCONFIG)


def cmd_unit(args: argparse.Namespace) -> int:
    root = Path(args.root or "/")
    unit = root / UNIT_DIR.lstrip("/") / UNIT_NAME
    sysconfig = root / SYSCONFIG.lstrip("/")
    systemctl = args.root is None and not args.no_enable and shutil.which("systemctl")
    if args.action == "install":
        unit.parent.mkdir(parents=True, exist_ok=True)
        unit.write_text(unit_text())
        print(f"installed {unit}")
        if not sysconfig.exists():
            sysconfig.parent.mkdir(parents=True, exist_ok=True)
            sysconfig.write_text(sysconfig_template())
            print(f"installed {sysconfig}")
        else:
            print(f"kept {sysconfig}")
        if systemctl:
            for argv in (["systemctl", "daemon-reload"], ["systemctl", "enable", UNIT_NAME]):
                print(shlex.join(argv))
                subprocess.run(argv, check=False)
        else:
            print(f"enable it with: systemctl daemon-reload && systemctl enable --now {UNIT_NAME}")
        return 0
    if systemctl:
        subprocess.run(["systemctl", "disable", UNIT_NAME], check=False)
    if unit.exists():
        unit.unlink()
        print(f"removed {unit}")
    else:
        print(f"{unit} was not installed")
    print(f"kept {sysconfig}" if sysconfig.exists() else f"{sysconfig} was not there")
    return 0


def cmd_rebuild(args: argparse.Namespace) -> int:
    from .initrd import rebuild

    sc = read_sysconfig(args.sysconfig)
    release = args.kernel_release or _release()
    out = Path(args.output) if args.output else sc.initrd_path(release)
    rebuild(out, config=sc.config, kernel_release=release, dry_run=args.dry_run)
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    st = sub.add_parser("status", help="is kdump operational? (exit 0 yes, 3 no; reads kexec_crash_loaded)")
    st.set_defaults(func=cmd_status)

    for name, func, what in (("start", cmd_start, "load the capture kernel (what pykdump.service runs)"),
                             ("stop", cmd_stop, "unload the capture kernel")):
        p = sub.add_parser(name, help=what, description=(
            f"{what[0].upper()}{what[1:]}. start reads {SYSCONFIG} (KDUMP_KERNEL, KDUMP_INITRD, "
            "KDUMP_COMMANDLINE_APPEND, KDUMP_COMMANDLINE_REMOVE, KDUMP_CONFIG), rebuilds the capture initramfs "
            "when it is missing or older than kdump.conf, and runs pykexec -p --reuse-cmdline. A real load needs "
            "root and PYKEXEC_ALLOW_REAL=1 (the unit sets it)."))
        if name == "start":
            p.add_argument("--sysconfig", metavar="FILE", help=f"default {SYSCONFIG} (missing: defaults)")
        p.add_argument("--dry-run", action="store_true", help="print what would be loaded, change nothing")
        p.set_defaults(func=func)

    t = sub.add_parser("test", help="say what a crash would do now; with --yes crash the machine (sysrq c)",
                       description="Check that a crash kernel is loaded, print the kdump.conf target and what a "
                       "crash would do. Nothing happens without --yes; with --yes the kernel is crashed at once "
                       "through /proc/sysrq-trigger. Exit 3 when kdump is not operational.")
    t.add_argument("--config", default=DEFAULT_CONFIG, metavar="FILE", help=f"default {DEFAULT_CONFIG}")
    t.add_argument("--yes", action="store_true", help="really crash the machine now")
    t.add_argument("--force", action="store_true", help="crash even when no crash kernel is loaded")
    t.set_defaults(func=cmd_test)

    r = sub.add_parser("rebuild", help="build the capture initramfs with dracut and our 99pydumpfile module",
                       description="Build the capture initramfs (dracut --no-hostonly with the 99pydumpfile module, "
                       "which carries the interpreter, the standard-library modules the capture path imports and "
                       "this package) and print its size and the file list's size.")
    r.add_argument("--sysconfig", metavar="FILE", help=f"default {SYSCONFIG}")
    r.add_argument("--kernel-release", metavar="R", help="kernel modules of R (default: uname -r)")
    r.add_argument("-o", "--output", metavar="FILE", help=f"default KDUMP_INITRD, else {INITRD_DIR}/initrd-R.img")
    r.add_argument("--dry-run", action="store_true", help="print the dracut command and the file list size only")
    r.set_defaults(func=cmd_rebuild)

    u = sub.add_parser("unit", help=f"install or remove {UNIT_NAME} (loads the capture kernel at boot)",
                       description=f"install: write {UNIT_DIR}/{UNIT_NAME} (ExecStart: pykdumpctl start) and, if "
                       f"missing, {SYSCONFIG}, then systemctl daemon-reload and enable. remove: disable and delete "
                       f"the unit (the sysconfig file is kept).")
    u.add_argument("action", choices=("install", "remove"))
    u.add_argument("--root", metavar="DIR", help="install under DIR (an image being built); no systemctl")
    u.add_argument("--no-enable", action="store_true", help="do not run systemctl")
    u.set_defaults(func=cmd_unit)
