"""``pykdumpctl``: the kdumpctl-like helpers around the collector.

    pykdumpctl crashkernel [--ram SIZE] SPEC   what the kernel reserves for crashkernel=SPEC
    pykdumpctl estimate [--ram SIZE] …         how much to reserve for a collector
    pykdumpctl showmem                         what is reserved now (/proc/iomem, /sys/kernel)
    pykdumpctl check-config [FILE]             parse kdump.conf (default /etc/kdump.conf)
    pykdumpctl capture [--config FILE] …       save the vmcore (run in the kdump kernel; see capture.py)
    pykdumpctl save-raw DEVICE [--path DIR]    save a dump left on a raw target by capture
    pykdumpctl status | start | stop           kdumpctl's: is a crash kernel loaded (exit 0/3), load, unload
    pykdumpctl test [--yes]                    what a crash would do now; --yes crashes (sysrq c)
    pykdumpctl propagate                       create and install the ssh key of kdump.conf's ssh target
    pykdumpctl rebuild [--dry-run]             build the capture initramfs (dracut + 99pydumpfile)
    pykdumpctl unit install|remove             pykdump.service: load the crash kernel at boot
    pykdumpctl initrd-files --stage DIR        the Python files of the capture initramfs (for dracut)
    pykdumpctl debian enable|disable|status    Debian's kdump-config runs pydumpfile as makedumpfile

``DUMPFILTER_SYSROOT`` redirects /proc and /sys (tests). Exit status 0, or 1 with one line on stderr.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys

from ..errors import DumpfilterError
from . import sysroot
from .bzimage import probe
from ..kernel.arch.machines import host
from ..sizes import format_size
from .crashkernel import MiB, estimate_breakdown, parse_size, reservation
from .capture import SSH_RECEIVERS, CaptureOptions, capture, save_raw
from .kdumpconf import DEFAULT_PATH, KdumpConfError, parse_file
from . import debian, initrd, propagate, service

PROG = "pykdumpctl"
DEFAULT_CONFIG = "/etc/kdump.conf"


def human(n: int) -> str:
    """64M, 2G, or 25769405440 bytes (~24575.6M) when it is not a whole number of MiB."""
    return format_size(n) if n % MiB == 0 else f"{n} bytes (~{n / MiB:.1f}M)"


def _ram(args: argparse.Namespace) -> tuple[int, str]:
    if args.ram is not None:
        return parse_size(args.ram), "--ram"
    return sysroot.system_ram_bytes()


def cmd_crashkernel(args: argparse.Namespace) -> int:
    ram, source = _ram(args)
    res = reservation(args.spec, ram, arch=args.arch)
    print(f"spec:      {args.spec if 'crashkernel=' in args.spec else 'crashkernel=' + args.spec}")
    print(f"ram:       {human(ram)} ({source})")
    print(f"reserved:  {format_size(res.size)}" + (f" ({res.size} bytes)" if res.size else ""))
    for line in res.describe():
        print(f"placement: {line}")
    if res.offset:
        print(f"offset:    {res.offset:#x}")
    if res.high:
        print(f"low:       {format_size(res.low_size)}")
    if res.cma_size:
        print(f"cma:       {format_size(res.cma_size)}")
    for note in res.notes:
        print(f"note:      {note}")
    return 0


def cmd_estimate(args: argparse.Namespace) -> int:
    ram, source = _ram(args)
    kernel_size = probe(args.kernel).init_size if args.kernel else None
    initrd_size = None
    if args.initrd:
        try:
            with open(args.initrd, "rb") as f:
                initrd_size = f.seek(0, 2)
        except OSError as e:
            raise DumpfilterError(f"{args.initrd}: cannot read: {e.strerror}") from None
    est = estimate_breakdown(ram, args.collector, kernel_size=kernel_size, initrd_size=initrd_size, arch=args.arch)
    reserved = sysroot.kexec_status().crash_size
    guess = " (kdumpctl's allowance; see README: Smallest crashkernel= (measured))"
    if reserved is not None:
        print(f"Reserved crashkernel:    {format_size(reserved)}")
    print(f"Recommended crashkernel: {format_size(est.recommended)}")
    print(f"  for {human(ram)} of RAM ({source}) and the {est.collector} collector")
    print()
    print(f"Kernel image size:     {human(est.kernel)}" + (" (bzImage init_size)" if args.kernel else guess))
    print(f"Kernel modules size:   {human(est.modules)}{guess}")
    print(f"Initramfs size:        {human(est.initramfs)} x 3" + ("" if args.initrd else guess))
    print(f"Runtime reservation:   {human(est.runtime)}")
    print(f"Collector working set: {human(est.collector_ws)}{guess}")
    print(f"Distribution default:  {format_size(est.baseline)}")
    if est.recommended >= ram // 2:
        print(f"WARNING: the recommendation is half or more of the RAM ({human(ram)}).")
    if reserved is not None and reserved < est.recommended:
        print(f"WARNING: the current reservation is lower than the recommended {format_size(est.recommended)}.")
    return 0


def cmd_showmem(args: argparse.Namespace) -> int:
    ranges = sysroot.crash_kernel_ranges()
    size = sysroot.kexec_status().crash_size
    if ranges is None and size is None:
        raise DumpfilterError(
            f"cannot read {sysroot.path('/proc/iomem')} or {sysroot.path('/sys/kernel/kexec_crash_size')}"
        )
    hidden = False
    for start, end in ranges or []:
        if start == end == 0:
            hidden = True
            print("Crash kernel: present (addresses hidden; run as root to see them)")
        else:
            where = "below 4G" if end < (1 << 32) else "above 4G"
            print(f"Crash kernel: {start:#x}-{end:#x} ({format_size(end - start + 1)}, {where})")
    if size is not None:
        print(f"kexec_crash_size: {size} bytes")
    total = size
    if ranges and not hidden:
        total = sum(end - start + 1 for start, end in ranges)
    if not total:
        print("No memory is reserved for a crash kernel (boot with crashkernel=SIZE).")
    else:
        print(f"Reserved {total // MiB}MB memory for crash kernel")
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    conf = parse_file(args.file)
    for warning in conf.warnings:
        print(f"{PROG}: warning: {warning}", file=sys.stderr)
    print(f"{args.file}: OK")
    for line in conf.summary():
        print(f"  {line}")
    return 0


def cmd_capture(args: argparse.Namespace) -> int:
    opts = CaptureOptions.from_env(
        vmcore=args.vmcore,
        target_root=args.target_root,
        rootfs=args.rootfs,
        hooks_dir=args.hooks_dir,
        ssh_options=args.ssh_option,
        ssh_receiver=args.ssh_receiver,
        action_cmd=shlex.split(args.action_cmd) if args.action_cmd else None,
    )
    return capture(args.config, opts)


def cmd_save_raw(args: argparse.Namespace) -> int:
    path = args.path
    if path is None:
        config = args.config or (DEFAULT_CONFIG if os.path.exists(DEFAULT_CONFIG) else None)
        try:
            path = parse_file(config).path if config else DEFAULT_PATH
        except KdumpConfError as e:
            raise DumpfilterError(f"{e} (or give --path)") from None
    return save_raw(args.device, path, keep=args.keep)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="kdump helpers for pydumpfile.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    arch = host().uname

    c = sub.add_parser("crashkernel", help="show what the kernel reserves for a crashkernel= value")
    c.add_argument("--ram", metavar="SIZE", help="system RAM (default: read from /proc or /sys)")
    c.add_argument("--arch", default=arch, help=f"architecture rules to apply (default {arch})")
    c.add_argument("spec", metavar="SPEC", help="e.g. 512M-2G:64M,2G-:128M, or 'crashkernel=1G,high crashkernel=256M,low'")
    c.set_defaults(func=cmd_crashkernel)

    e = sub.add_parser("estimate", help="recommend a crashkernel size")
    e.add_argument("--ram", metavar="SIZE", help="system RAM (default: read from /proc or /sys)")
    e.add_argument("--collector", default="pydumpfile", help="pydumpfile (default), makedumpfile, cp, …")
    e.add_argument("--kernel", metavar="BZIMAGE", help="the capture kernel (its init_size is used)")
    e.add_argument("--initrd", metavar="FILE", help="the kdump initramfs (its size is used)")
    e.add_argument("--arch", default=arch, help=f"architecture for the distribution default (default {arch})")
    e.set_defaults(func=cmd_estimate)

    s = sub.add_parser("showmem", help="show the memory reserved for the crash kernel")
    s.set_defaults(func=cmd_showmem)

    k = sub.add_parser("check-config", help="check kdump.conf")
    k.add_argument("file", nargs="?", default=DEFAULT_CONFIG, metavar="FILE", help=f"default {DEFAULT_CONFIG}")
    k.set_defaults(func=cmd_check_config)

    cap = sub.add_parser(
        "capture",
        help="save the vmcore to the kdump.conf target (run in the kdump kernel)",
        description="Save vmcore-dmesg.txt and the vmcore to the kdump.conf target as kdump-utils' kdump.sh "
        "does, then run final_action (or failure_action). Exit 0 when a vmcore was saved.",
    )
    cap.add_argument("--config", metavar="FILE", help=f"kdump.conf (default {DEFAULT_CONFIG}; missing: defaults)")
    cap.add_argument("--vmcore", default="/proc/vmcore", metavar="FILE", help="default /proc/vmcore")
    cap.add_argument("--target-root", metavar="DIR",
                     help="the target filesystem is mounted at DIR already (env PYKDUMPCTL_MOUNT_ROOT)")
    cap.add_argument("--rootfs", metavar="DIR",
                     help="the root filesystem, for the local target and dump_to_rootfs (default /; env PYKDUMPCTL_ROOTFS)")
    cap.add_argument("--hooks-dir", default="/etc/kdump", metavar="DIR",
                     help="where pre.d, post.d and emergency.d are (default /etc/kdump)")
    cap.add_argument("--ssh-option", action="append", default=[], metavar="OPT",
                     help="extra ssh/scp argument, before ours (repeat; env PYKDUMPCTL_SSH_OPTS)")
    cap.add_argument("--ssh-receiver", choices=SSH_RECEIVERS, default="auto",
                     help="ssh target: rearrange on the remote with its pydumpfile, or store vmcore.flat "
                     "(default auto: pydumpfile if the remote has it)")
    cap.add_argument("--action-cmd", metavar="CMD",
                     help="run 'CMD ACTION' instead of reboot/halt/poweroff/shell (env PYKDUMPCTL_ACTION_CMD)")
    cap.set_defaults(func=cmd_capture)

    sr = sub.add_parser(
        "save-raw",
        help="save the dump a raw target holds (pydumpfile -R) into PATH/$HOST_IP-$DATE/vmcore",
        description="Read the flattened stream capture wrote to DEVICE and rearrange it into "
        "PATH/$HOST_IP-$DATE/vmcore; then zero the stream's first 512 bytes so it is saved only once. "
        "No dump on DEVICE is not an error.",
    )
    sr.add_argument("device", metavar="DEVICE", help="the raw target (block device or file)")
    sr.add_argument("--path", metavar="DIR", help=f"where to save (default: kdump.conf's path, else {DEFAULT_PATH})")
    sr.add_argument("--config", metavar="FILE", help=f"kdump.conf to take path from (default {DEFAULT_CONFIG} if present)")
    sr.add_argument("--keep", action="store_true", help="do not wipe the stream header after saving")
    sr.set_defaults(func=cmd_save_raw)

    service.add_parsers(sub)
    propagate.add_parser(sub, DEFAULT_CONFIG)
    initrd.add_parser(sub)
    debian.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return int(args.func(args))
    except DumpfilterError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
