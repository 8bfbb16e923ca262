"""``pykdumpctl capture``: save the vmcore in the kdump (capture) kernel, the way kdump-utils' dracut
``99kdumpbase/kdump.sh`` does; ``pykdumpctl save-raw``: the next boot's ``kdumpctl`` ``save_raw``.

Flow (kdump.sh's main):

1. Read kdump.conf (``--config``, default /etc/kdump.conf; a missing default file means all defaults).
   The dump directory is named once: ``$HOST_IP-$DATE`` with ``date +%Y-%m-%d-%H:%M:%S``.
2. ``kdump_pre`` (one command; non-zero exit: no dump, the failure path below), then the executables in
   ``/etc/kdump/pre.d`` (``--hooks-dir``), whose failures are only logged.
3. Save to the target:

   * local (no target directive): ``<rootfs>/<path>/$HOST_IP-$DATE`` on the root filesystem;
   * ``ext4|xfs|… DEVICE`` (node, ``UUID=``, ``LABEL=``, ``PARTUUID=``, ``PARTLABEL=``), ``virtiofs TAG``
     and ``nfs host:/export``: reuse the mount if the device is mounted already (remounted rw if it is
     read-only), else ``mount -t FSTYPE SPEC`` on a fresh temporary directory; the dump goes to
     ``<mnt>/<path>/$HOST_IP-$DATE`` (``path`` is relative to the target);
     ``mkdir -p``, then ``vmcore-dmesg.txt`` first (``pydumpfile --dump-dmesg`` into
     ``vmcore-dmesg-incomplete.txt``, renamed on success, mode 0600; a failure is logged and the vmcore
     is saved anyway), then the collector writes ``vmcore-incomplete``, which is fsynced and renamed
     to ``vmcore`` only if the collector exited 0 (a non-zero exit keeps ``vmcore-incomplete``: with
     pydumpfile/makedumpfile it is marked incomplete inside the file);
   * ``ssh user@host``: ``ssh -i SSHKEY -o BatchMode=yes -o StrictHostKeyChecking=yes user@host mkdir -p
     DIR``; dmesg to a local temporary file, then ``cat >`` on the remote side; the collector's ``-F``
     stream is piped into ssh. If the remote has ``pydumpfile`` (``command -v pydumpfile``), it
     rearranges the stream there (``pydumpfile -R DIR/vmcore-incomplete``, then ``mv`` to ``vmcore``);
     otherwise the stream is stored as ``vmcore-incomplete.flat`` and renamed ``vmcore.flat``, as
     kdump-utils stores it (recover with ``pydumpfile -R vmcore < vmcore.flat``). ``--ssh-receiver``
     forces either mode. Both ends of the pipe must exit 0. ``core_collector scp`` copies /proc/vmcore;
   * ``raw DEVICE``: ``COLLECTOR -F … /proc/vmcore | dd of=DEVICE``; no dmesg, ``path`` ignored.
     The next boot recovers it with ``pykdumpctl save-raw DEVICE``.

4. ``/etc/kdump/post.d/*`` then ``kdump_post``, each with the dump status as ``$1`` (the collector's exit
   code when it failed, else 1 when another step failed, else 0); their failures are only logged.
   Our own log lines are saved as ``kexec-dmesg.log`` in the dump directory (fs and ssh targets).
5. Success: ``final_action`` (reboot, halt, poweroff). Failure: ``kdump_emergency`` and
   ``/etc/kdump/emergency.d``, then ``failure_action``: reboot, halt, poweroff; ``shell`` (an interactive
   shell on the console, then ``final_action``); ``dump_to_rootfs`` (save to ``<rootfs>/<path>`` with the
   fs rules, then ``final_action``).

Collectors, as kdump.sh: for file targets a makedumpfile-compatible collector loses ``-F`` and gains
``--num-threads=$(nproc)`` (when nproc > 1 and neither ``-E``, ``-F`` nor ``--num-threads`` is given)
and gets ``VMCORE DEST`` as its last two arguments; ``cp`` gets ``--sparse=always`` unless a
``--sparse`` option is given; ``cat`` writes to DEST through its standard output; ``dd`` gets
``if=VMCORE of=DEST``; any other (absolute-path) collector gets ``VMCORE DEST``. For stream targets
(raw, ssh) the collector gets ``VMCORE`` and writes to standard output (``dd`` gets ``if=VMCORE``,
``cp`` copies to ``/dev/stdout``). ``pydumpfile`` as the first word runs this package's own collector
(``python -m dumpfilter`` under the same interpreter), so capture and collector are one version.

Every step is logged to stderr as ``kdump: …``. Exit status: 0 when a complete vmcore was saved
(including by ``dump_to_rootfs``), 1 otherwise.

Deviations from kdump-utils:

* ``$HOST_IP``: kdump-utils uses the address of ``kdumpnic=`` for nfs/ssh targets and 127.0.0.1
  otherwise; we use the ``kdumpnic=`` interface if given, else the default-route interface (IPv4,
  then IPv6), else 127.0.0.1, for every target.
* A failing ``kdump_pre`` runs the failure action (kdump-utils goes straight to ``final_action``);
  with ``dump_to_rootfs`` nothing is dumped (the hook said no) and ``final_action`` follows.
* ``dump_to_rootfs`` is skipped for the local target (it is the root filesystem already).
* The dmesg collector is ``pydumpfile --dump-dmesg``, not ``vmcore-dmesg``; on ssh targets it is written
  to a local temporary file first. OPAL core (ppc64 fadump), ``fence_kdump`` and the dd progress
  monitor are not implemented.
* A non-flattened stream sent over ssh (``cat``/``dd``/custom collector) is stored as ``vmcore``, not
  ``vmcore.flat``. A raw "device" may be a regular file. ``raw`` streams are written with
  ``dd obs=1M conv=notrunc,fsync`` instead of ``dd bs=512`` + ``sync``
  (notrunc: a regular file behaves like a device, bytes after the stream stay).
* The fs and nfs mounts we make are unmounted after the dump.
* Reboot/halt/poweroff run ``reboot -f``/``halt -f``/``poweroff -f`` (kdump-utils: ``systemctl … -f``),
  and only in a kdump kernel (``--vmcore`` is /proc/vmcore and it exists); elsewhere the action is
  logged and skipped, so a stray ``pykdumpctl capture`` on a running system never reboots it.

Overrides (tests, unusual setups):

* ``PYKDUMPCTL_ACTION_CMD`` / ``--action-cmd CMD``: run ``CMD ACTION`` instead of the real action
  (``ACTION`` is reboot, halt, poweroff or shell).
* ``PYKDUMPCTL_MOUNT_ROOT`` / ``--target-root DIR``: the target filesystem (local, fs or nfs) is
  already mounted at DIR; nothing is mounted.
* ``PYKDUMPCTL_ROOTFS`` / ``--rootfs DIR``: where the root filesystem is (default /; /sysroot in an
  initramfs), for the local target and ``dump_to_rootfs``.
* ``PYKDUMPCTL_SSH_OPTS`` / ``--ssh-option OPT``: extra ssh/scp arguments placed before ours (ssh uses
  the first value it sees for an option, so ``-o StrictHostKeyChecking=…`` or ``-o Port=…`` override);
  use ``-o`` forms, scp gets them too.
* ``DUMPFILTER_SYSROOT`` redirects /proc/cmdline, /proc/net/* and /proc/self/mounts (see sysroot.py).
"""
from __future__ import annotations

import fcntl
import ipaddress
import os
import posixpath
import shlex
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from ..layouts import FLAT_HEADER_SIZE, FLAT_SIGNATURE
from . import sysroot
from .kdumpconf import FLATTENING_COLLECTORS, KdumpConfError, KdumpConfig, _has_flag, parse_file

PROC_VMCORE = "/proc/vmcore"
DEFAULT_CONFIG = "/etc/kdump.conf"
DEFAULT_HOOKS_DIR = "/etc/kdump"
DATE_FORMAT = "%Y-%m-%d-%H:%M:%S"  # kdump.sh: date +%Y-%m-%d-%T
FALLBACK_IP = "127.0.0.1"

ACTION_ENV = "PYKDUMPCTL_ACTION_CMD"
MOUNT_ROOT_ENV = "PYKDUMPCTL_MOUNT_ROOT"
ROOTFS_ENV = "PYKDUMPCTL_ROOTFS"
SSH_OPTS_ENV = "PYKDUMPCTL_SSH_OPTS"

REAL_ACTIONS = {"reboot": ["reboot", "-f"], "halt": ["halt", "-f"], "poweroff": ["poweroff", "-f"]}
SSH_RECEIVERS = ("auto", "pydumpfile", "flat")
#: makedumpfile/pydumpfile short options that take an argument (an F after them is not the flag).
_ARG_LETTERS = set("dLibx")


# --------------------------------------------------------------------------------------- logging


class Log:
    """``kdump: …`` lines on stderr, kept for kexec-dmesg.log."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream
        self.lines: list[str] = []

    def __call__(self, msg: str) -> None:
        line = f"kdump: {msg}"
        self.lines.append(line)
        print(line, file=self.stream or sys.stderr, flush=True)

    def text(self) -> str:
        return "".join(line + "\n" for line in self.lines)


# --------------------------------------------------------------------------------------- host IP

SIOCGIFADDR = 0x8915


def _read(absolute: str) -> str:
    try:
        return sysroot.path(absolute).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _iface_ipv4(iface: str) -> str | None:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            res = fcntl.ioctl(s.fileno(), SIOCGIFADDR, struct.pack("256s", iface.encode()[:15]))
    except OSError:
        return None
    return socket.inet_ntoa(res[20:24])


def _iface_ipv6(iface: str) -> str | None:
    """A global-scope address of ``iface`` from /proc/net/if_inet6."""
    for line in _read("/proc/net/if_inet6").splitlines():
        f = line.split()
        if len(f) >= 6 and f[5] == iface and f[3] == "00":
            try:
                return str(ipaddress.IPv6Address(bytes.fromhex(f[0])))
            except ValueError:
                continue
    return None


def _default_route_iface() -> str | None:
    best: tuple[int, str] | None = None
    for line in _read("/proc/net/route").splitlines()[1:]:
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
    for line in _read("/proc/net/ipv6_route").splitlines():
        f = line.split()
        if len(f) >= 10 and f[0] == "0" * 32 and f[1] == "00" and f[9] != "lo":
            return f[9]
    return None


def _kdumpnic() -> str | None:
    for word in _read("/proc/cmdline").split():
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


# --------------------------------------------------------------------------------------- commands


def collector_name(argv: list[str]) -> str:
    return argv[0].rsplit("/", 1)[-1]


def exec_argv(argv: list[str]) -> list[str]:
    """``pydumpfile …`` → this interpreter's ``python -m dumpfilter …``; anything else as is."""
    if argv and argv[0] == "pydumpfile":
        return [sys.executable, "-m", "dumpfilter", *argv[1:]]
    return list(argv)


def _child_env() -> dict[str, str]:
    """The environment for ``python -m dumpfilter``: this package importable even if not installed."""
    env = dict(os.environ)
    # a dump made at capture time must open in crash and drgn: pages they need come back even when the
    # dump level excluded them (pydumpfile --keep-debuggable; --no-keep-debuggable in the collector line
    # turns it off)
    env.setdefault("PYDUMPFILE_KEEP_DEBUGGABLE", "1")
    pkg_parent = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = pkg_parent + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _strip_flat(args: list[str]) -> list[str]:
    """Remove ``-F`` (alone or inside a cluster such as ``-lF``) from makedumpfile-style options."""
    out = []
    for a in args:
        if a == "-F":
            continue
        body = a[1:]
        if a.startswith("-") and not a.startswith("--") and body.isalpha() and "F" in body:
            head = body.split("F", 1)[0]
            if not (set(head) & _ARG_LETTERS):
                body = body.replace("F", "")
                if not body:
                    continue
                a = "-" + body
        out.append(a)
    return out


def _nproc() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover
        return os.cpu_count() or 1


def file_command(argv: list[str], vmcore: str, dest: str, nproc: int | None = None) -> tuple[list[str], str | None]:
    """The collector for a file target: ``(argv, stdout_file)``; stdout_file is set for ``cat``."""
    name = collector_name(argv)
    args = argv[1:]
    if name in FLATTENING_COLLECTORS:
        args = _strip_flat(args)
        n = _nproc() if nproc is None else nproc
        if n > 1 and not _has_flag(args, "E") and not any(a.startswith("--num-threads") for a in args):
            args.append(f"--num-threads={n}")
        return [argv[0], *args, vmcore, dest], None
    if name == "cp":
        if not any(a.startswith("--sparse") for a in args):
            args = ["--sparse=always", *args]
        return [argv[0], *args, vmcore, dest], None
    if name == "scp":  # an ssh collector redirected to the root fs by dump_to_rootfs
        return ["cp", "--sparse=always", vmcore, dest], None
    if name == "cat":
        return [*argv, vmcore], dest
    if name == "dd":
        extra = [] if any(a.startswith("if=") for a in args) else [f"if={vmcore}"]
        return [*argv, *extra, f"of={dest}"], None
    return [*argv, vmcore, dest], None


def stream_command(argv: list[str], vmcore: str) -> list[str]:
    """The collector for a stream target (raw, ssh): it writes to standard output."""
    name = collector_name(argv)
    args = argv[1:]
    if name in FLATTENING_COLLECTORS:
        if not _has_flag(args, "F"):
            args = ["-F", *args]
        return [argv[0], *args, vmcore]
    if name == "dd":
        return [*argv, *([] if any(a.startswith("if=") for a in args) else [f"if={vmcore}"])]
    if name == "cp":
        return ["cp", *(a for a in args if not a.startswith("--sparse")), vmcore, "/dev/stdout"]
    return [*argv, vmcore]


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        _fsync_path(path)
    except OSError:
        pass


def _pipe(producer: list[str], consumer: list[str], *, producer_env=None, consumer_stderr=None) -> tuple[int, int]:
    """``producer | consumer``; both exit codes."""
    p1 = subprocess.Popen(producer, stdout=subprocess.PIPE, env=producer_env)
    try:
        p2 = subprocess.Popen(consumer, stdin=p1.stdout, stderr=consumer_stderr)
    except BaseException:
        p1.kill()
        p1.wait()
        raise
    finally:
        assert p1.stdout is not None
        p1.stdout.close()  # the consumer holds the only read end: p1 sees EPIPE if it dies
    return p1.wait(), p2.wait()


# --------------------------------------------------------------------------------------- mounts


def _unescape(field_: str) -> str:
    return field_.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def _mounts() -> list[tuple[str, str, str, str]]:
    """(source, mountpoint, fstype, options) from /proc/self/mounts."""
    out = []
    for line in _read("/proc/self/mounts").splitlines():
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


# --------------------------------------------------------------------------------------- capture


@dataclass
class CaptureOptions:
    vmcore: str = PROC_VMCORE
    target_root: str | None = None  # the target fs is mounted here already
    rootfs: str = "/"
    hooks_dir: str = DEFAULT_HOOKS_DIR
    ssh_options: list[str] = field(default_factory=list)
    ssh_receiver: str = "auto"
    action_cmd: list[str] | None = None
    ip: str | None = None
    now: float | None = None

    @classmethod
    def from_env(cls, **kw) -> "CaptureOptions":
        """Fill the unset overrides from the PYKDUMPCTL_* environment variables."""
        if kw.get("target_root") is None and os.environ.get(MOUNT_ROOT_ENV):
            kw["target_root"] = os.environ[MOUNT_ROOT_ENV]
        if kw.get("rootfs") is None:
            kw["rootfs"] = os.environ.get(ROOTFS_ENV) or "/"
        if kw.get("action_cmd") is None and os.environ.get(ACTION_ENV):
            kw["action_cmd"] = shlex.split(os.environ[ACTION_ENV])
        env_ssh = shlex.split(os.environ.get(SSH_OPTS_ENV, ""))
        kw["ssh_options"] = [*env_ssh, *(kw.get("ssh_options") or [])]
        return cls(**{k: v for k, v in kw.items() if v is not None})


class _Failed(Exception):
    """A step failed; the message is already logged. ``status`` is the dump status for kdump_post."""

    def __init__(self, status: int = 1) -> None:
        super().__init__(status)
        self.status = status


class Capture:
    def __init__(self, conf: KdumpConfig, opts: CaptureOptions, log: Log | None = None) -> None:
        self.conf = conf
        self.opts = opts
        self.log = log or Log()
        self.dirname = dump_dir_name(opts.ip, opts.now)
        self.collector = conf.collector_argv
        self.mounted: list[str] = []  # mount points we made, unmounted at the end
        self.saved_to: str | None = None

    # ---- the whole run

    def run(self) -> int:
        for w in self.conf.warnings:
            self.log(f"warning: {w}")
        if self.conf.fence_kdump_nodes:
            self.log("fence_kdump_nodes is not supported by pykdumpctl capture; no fence notification sent")
        if not self.run_pre():
            self.log("kdump_pre script exited with non-zero status!")
            self.failure(pre_failed=True)
            return 1
        status = self.dump()
        self.run_post(status)
        self.save_log()
        self.unmount_all()
        if status == 0:
            self.final_action()
            return 0
        return 0 if self.failure() else 1

    def dump(self) -> int:
        """Save to the configured target; the dump status (0 saved)."""
        if not os.access(self.opts.vmcore, os.R_OK):
            self.log(f"cannot read {self.opts.vmcore}: not a kdump kernel, or no permission")
            return 1
        kind = self.conf.target_kind
        self.dest: _Dest | None = None
        try:
            if kind == "raw":
                self.dest = _RawDest(self, self.conf.target_spec or "")
            elif kind == "ssh":
                self.dest = _SshDest(self)
            else:
                self.dest = _FsDest(self, self.mount_target())
            self.dest.prepare()
            self.dest.save_dmesg()
            status = self.dest.save_vmcore()
        except _Failed as e:
            return e.status or 1
        except (OSError, subprocess.SubprocessError) as e:
            self.log(f"saving vmcore failed: {e}")
            return 1
        return status

    # ---- targets

    def mount_target(self) -> str:
        """The root of the target filesystem (mounting it if needed)."""
        t = self.conf.target
        if self.opts.target_root:
            self.log(f"target filesystem already mounted at {self.opts.target_root}")
            return self.opts.target_root
        if t is None:
            return self.opts.rootfs
        found = find_mount(t.spec)
        if found:
            mnt, mopts = found
            self.log(f"{t.spec} is mounted on {mnt}")
            if mopts.split(",")[0] == "ro":
                self.log("Remounting the dump target in rw mode.")
                self.run_checked(["mount", "-o", "remount,rw", mnt], "remounting the dump target")
            return mnt
        mnt = tempfile.mkdtemp(prefix="pykdumpctl-mnt-")
        self.log(f"mounting {t.fstype} {t.spec} on {mnt}")
        self.run_checked(["mount", "-t", t.fstype, t.spec, mnt], f"mounting {t.spec}")
        self.mounted.append(mnt)
        return mnt

    def run_checked(self, argv: list[str], what: str) -> None:
        try:
            rc = subprocess.run(argv, stdin=subprocess.DEVNULL).returncode
        except OSError as e:
            self.log(f"{what} failed: {e}")
            raise _Failed() from None
        if rc != 0:
            self.log(f"{what} failed, exitcode:{rc}")
            raise _Failed()

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

    def save_log(self) -> None:
        dest = getattr(self, "dest", None)
        if dest is not None and dest.ready:
            try:
                dest.save_log(self.log.text())
            except (OSError, subprocess.SubprocessError) as e:
                self.log(f"saving kexec-dmesg.log failed: {e}")

    # ---- hooks

    def _hook_dir(self, name: str) -> list[Path]:
        d = Path(self.opts.hooks_dir) / name
        try:
            return sorted(p for p in d.iterdir() if p.is_file() and os.access(p, os.X_OK))
        except OSError:
            return []

    def _run_hook(self, argv: list[str]) -> int:
        try:
            return subprocess.run(argv, stdin=subprocess.DEVNULL).returncode
        except OSError as e:
            self.log(f"{argv[0]}: {e.strerror or e}")
            return 127

    def run_pre(self) -> bool:
        if self.conf.kdump_pre:
            argv = shlex.split(self.conf.kdump_pre)
            self.log(f"running kdump_pre {shlex.join(argv)}")
            rc = self._run_hook(argv)
            if rc != 0:
                self.log(f"{self.conf.kdump_pre} exited with {rc} status")
                return False
        for script in self._hook_dir("pre.d"):
            rc = self._run_hook([str(script)])
            if rc != 0:
                self.log(f"{script} exited with {rc} status")
        return True

    def run_post(self, status: int) -> None:
        for script in self._hook_dir("post.d"):
            rc = self._run_hook([str(script), str(status)])
            if rc != 0:
                self.log(f"{script} exited with {rc} status")
        if self.conf.kdump_post:
            argv = [*shlex.split(self.conf.kdump_post), str(status)]
            self.log(f"running kdump_post {shlex.join(argv)}")
            rc = self._run_hook(argv)
            if rc != 0:
                self.log(f"kdump_post script exited with non-zero status! ({self.conf.kdump_post} exited with {rc})")

    def run_emergency(self) -> None:
        if self.conf.kdump_emergency:
            argv = shlex.split(self.conf.kdump_emergency)
            self.log(f"running kdump_emergency {shlex.join(argv)}")
            rc = self._run_hook(argv)
            if rc != 0:
                self.log(f"{self.conf.kdump_emergency} exited with {rc} status")
        for script in self._hook_dir("emergency.d"):
            rc = self._run_hook([str(script)])
            if rc != 0:
                self.log(f"{script} exited with {rc} status")

    # ---- actions

    def in_kdump_kernel(self) -> bool:
        return os.path.realpath(self.opts.vmcore) == PROC_VMCORE and os.path.exists(PROC_VMCORE)

    def action(self, name: str) -> None:
        if self.opts.action_cmd:
            argv = [*self.opts.action_cmd, name]
            try:
                rc = subprocess.run(argv, stdin=subprocess.DEVNULL).returncode
            except OSError as e:
                self.log(f"action command {shlex.join(argv)} failed: {e}")
                return
            if rc != 0:
                self.log(f"action command {shlex.join(argv)} exited with {rc}")
            return
        if name == "shell":
            if sys.stdin is not None and sys.stdin.isatty():
                self.log("Entering the emergency shell; exit it to continue with the final action")
                subprocess.run([os.environ.get("SHELL") or "/bin/sh", "-i", "-l"])
            else:
                self.log("no terminal on standard input: cannot start a shell")
            return
        real = REAL_ACTIONS[name]
        if not self.in_kdump_kernel():
            self.log(f"not in a kdump kernel ({self.opts.vmcore} is not {PROC_VMCORE}): not running '{shlex.join(real)}'")
            return
        try:
            subprocess.run(["sync"], stdin=subprocess.DEVNULL)
            subprocess.run(real, stdin=subprocess.DEVNULL)
        except OSError as e:
            self.log(f"{shlex.join(real)} failed: {e}")

    def final_action(self) -> None:
        self.log(f"Executing final action {self.conf.final_action}")
        self.action(self.conf.final_action)

    def failure(self, pre_failed: bool = False) -> bool:
        """kdump_emergency, then the failure action; True if dump_to_rootfs saved the vmcore."""
        self.run_emergency()
        fa = self.conf.failure_action
        self.log(f"Executing failure action {fa}")
        saved = False
        if fa == "dump_to_rootfs":
            if pre_failed:
                self.log("dump_to_rootfs: not dumping, kdump_pre said no")
            elif self.conf.target is None:
                self.log("dump_to_rootfs: the dump target is the root filesystem already; not retrying")
            else:
                saved = self.dump_to_rootfs()
            self.final_action()
        elif fa == "shell":
            self.action("shell")
            self.final_action()
        else:
            self.action(fa)
        return saved

    def dump_to_rootfs(self) -> bool:
        root = self.opts.rootfs
        self.log(f"dump_to_rootfs: saving to the root filesystem at {root}")
        self.dest = None
        try:
            self.dest = _FsDest(self, root)
            self.dest.prepare()
            self.dest.save_dmesg()
            status = self.dest.save_vmcore()
        except _Failed:
            status = 1
        except (OSError, subprocess.SubprocessError) as e:
            self.log(f"saving vmcore failed: {e}")
            status = 1
        self.save_log()
        return status == 0


# --------------------------------------------------------------------------------------- destinations


class _Dest:
    ready = False

    def __init__(self, cap: Capture) -> None:
        self.cap = cap
        self.log = cap.log

    def prepare(self) -> None:
        self.ready = True

    def save_dmesg(self) -> None:
        pass

    def save_vmcore(self) -> int:  # pragma: no cover
        raise NotImplementedError

    def save_log(self, text: str) -> None:
        pass

    def dmesg_to(self, out: str) -> bool:
        argv = ["pydumpfile", "--dump-dmesg", self.cap.opts.vmcore, out]
        try:
            rc = subprocess.run(exec_argv(argv), stdin=subprocess.DEVNULL, env=_child_env()).returncode
        except OSError as e:
            self.log(f"{shlex.join(argv)}: {e}")
            return False
        return rc == 0


class _FsDest(_Dest):
    def __init__(self, cap: Capture, root: str) -> None:
        super().__init__(cap)
        self.dir = Path(os.path.abspath(os.path.join(root, cap.conf.path.lstrip("/"), cap.dirname)))

    def prepare(self) -> None:
        self.log(f"saving to {self.dir}/")
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            self.log(f"mkdir -p {self.dir} failed: {e.strerror or e}")
            raise _Failed() from None
        self.ready = True

    def save_dmesg(self) -> None:
        part = self.dir / "vmcore-dmesg-incomplete.txt"
        final = self.dir / "vmcore-dmesg.txt"
        self.log(f"saving vmcore-dmesg.txt to {self.dir}")
        if self.dmesg_to(str(part)) and part.exists():
            os.chmod(part, 0o600)
            _fsync_path(part)
            os.replace(part, final)
            _fsync_dir(self.dir)
            self.log("saving vmcore-dmesg.txt complete")
            return
        if part.exists():
            if part.stat().st_size == 0:
                part.unlink()
            else:
                os.chmod(part, 0o600)
        self.log("saving vmcore-dmesg.txt failed")

    def save_vmcore(self) -> int:
        part = self.dir / "vmcore-incomplete"
        final = self.dir / "vmcore"
        if part.exists():
            self.log(f"removing a stale {part}")
            part.unlink()
        argv, stdout_file = file_command(self.cap.collector, self.cap.opts.vmcore, str(part))
        self.log("saving vmcore")
        self.log(f"running {shlex.join(argv)}")
        env = _child_env() if argv[0] == "pydumpfile" else None
        try:
            if stdout_file:
                with open(stdout_file, "wb") as out:
                    rc = subprocess.run(exec_argv(argv), stdin=subprocess.DEVNULL, stdout=out, env=env).returncode
            else:
                rc = subprocess.run(exec_argv(argv), stdin=subprocess.DEVNULL, env=env).returncode
        except OSError as e:
            self.log(f"cannot run {argv[0]}: {e.strerror or e}")
            return 127
        if rc != 0:
            self.log(f"saving vmcore failed, exitcode:{rc}")
            if part.exists():
                self.log(f"the partial dump is kept as {part}")
            return rc
        if not part.exists():
            self.log(f"saving vmcore failed: the collector exited 0 but wrote no {part.name}")
            return 1
        try:
            _fsync_path(part)
        except OSError as e:
            self.log(f"sync vmcore failed: {e.strerror or e}")
            return 1
        os.replace(part, final)
        _fsync_dir(self.dir)
        self.cap.saved_to = str(final)
        self.log("saving vmcore complete")
        return 0

    def save_log(self, text: str) -> None:
        p = self.dir / "kexec-dmesg.log"
        p.write_text(text, encoding="utf-8")
        os.chmod(p, 0o600)
        _fsync_path(p)


class _RawDest(_Dest):
    def __init__(self, cap: Capture, device: str) -> None:
        super().__init__(cap)
        self.device = device

    def prepare(self) -> None:
        if not os.path.exists(self.device):
            self.log(f"raw target {self.device} does not exist")
            raise _Failed()
        self.log(f"saving to raw disk {self.device}")

    def save_vmcore(self) -> int:
        argv = stream_command(self.cap.collector, self.cap.opts.vmcore)
        dd = ["dd", f"of={self.device}", "obs=1M", "conv=notrunc,fsync"]
        self.log("saving vmcore")
        self.log(f"running {shlex.join(argv)} | {shlex.join(dd)}")
        env = _child_env() if argv[0] == "pydumpfile" else None
        with tempfile.TemporaryFile("w+b") as dd_err:
            prc, crc = _pipe(exec_argv(argv), dd, producer_env=env, consumer_stderr=dd_err)
            if crc != 0:
                dd_err.seek(0)
                for line in dd_err.read().decode(errors="replace").splitlines():
                    self.log(f"dd: {line}")
        if prc != 0 or crc != 0:
            self.log(f"saving vmcore failed, exitcode:{prc or crc} (collector {prc}, dd {crc})")
            return prc or crc
        self.cap.saved_to = self.device
        self.log("saving vmcore complete")
        return 0


class _SshDest(_Dest):
    def __init__(self, cap: Capture) -> None:
        super().__init__(cap)
        conf = cap.conf
        self.target = conf.target_spec or ""
        user, _, host = self.target.rpartition("@")
        # scp needs brackets around an IPv6 address
        self.scp_target = f"{user}@[{host}]" if ":" in host and not host.startswith("[") else self.target
        self.dir = posixpath.join(conf.path, cap.dirname)
        self.opts = [
            *cap.opts.ssh_options,
            "-i", conf.sshkey,
            "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=yes",
        ]
        if not os.path.exists(conf.sshkey):
            self.log(f"warning: the ssh key {conf.sshkey} does not exist")

    def ssh(self, command: str) -> list[str]:
        return ["ssh", *self.opts, self.target, command]

    def remote(self, command: str, stdin=subprocess.DEVNULL) -> int:
        return subprocess.run(self.ssh(command), stdin=stdin).returncode

    def q(self, name: str) -> str:
        return shlex.quote(posixpath.join(self.dir, name))

    def prepare(self) -> None:
        self.log(f"saving to {self.target}:{self.dir}")
        rc = self.remote(f"mkdir -p {shlex.quote(self.dir)}")
        if rc != 0:
            self.log(f"ssh {self.target} mkdir -p {self.dir} failed, exitcode:{rc}")
            raise _Failed()
        self.ready = True

    def save_dmesg(self) -> None:
        self.log(f"saving vmcore-dmesg.txt to {self.target}:{self.dir}")
        with tempfile.TemporaryDirectory(prefix="pykdumpctl-") as tmp:
            local = os.path.join(tmp, "vmcore-dmesg.txt")
            if not self.dmesg_to(local) or not os.path.exists(local):
                self.log("saving vmcore-dmesg.txt failed")
                return
            part, final = self.q("vmcore-dmesg-incomplete.txt"), self.q("vmcore-dmesg.txt")
            with open(local, "rb") as f:
                rc = self.remote(f"umask 0077 && cat > {part} && mv {part} {final}", stdin=f)
        if rc != 0:
            self.log(f"saving vmcore-dmesg.txt failed, exitcode:{rc}")
        else:
            self.log("saving vmcore-dmesg.txt complete")

    def receiver(self) -> str:
        mode = self.cap.opts.ssh_receiver
        if mode != "auto":
            return mode
        rc = self.remote("command -v pydumpfile >/dev/null 2>&1")
        return "pydumpfile" if rc == 0 else "flat"

    def save_vmcore(self) -> int:
        collector = self.cap.collector
        name = collector_name(collector)
        vmcore = self.cap.opts.vmcore
        self.log("saving vmcore")
        if name == "scp":
            part = posixpath.join(self.dir, "vmcore-incomplete")
            argv = ["scp", "-q", *self.opts, *collector[1:], vmcore, f"{self.scp_target}:{part}"]
            self.log(f"running {shlex.join(argv)}")
            rc = subprocess.run(argv, stdin=subprocess.DEVNULL).returncode
            if rc != 0:
                self.log(f"saving vmcore failed, exitcode:{rc}")
                return rc
            return self.rename("vmcore-incomplete", "vmcore")
        argv = stream_command(collector, vmcore)
        if name in FLATTENING_COLLECTORS and self.receiver() == "pydumpfile":
            self.log(f"{self.target} has pydumpfile: the stream is rearranged there into vmcore")
            part, final = "vmcore-incomplete", "vmcore"
            consumer = f"umask 0077 && pydumpfile -R {self.q(part)}"
        else:
            flat = name in FLATTENING_COLLECTORS
            part, final = ("vmcore-incomplete.flat", "vmcore.flat") if flat else ("vmcore-incomplete", "vmcore")
            if flat:
                self.log(f"storing the flattened stream as {final} (rearrange it with 'pydumpfile -R vmcore < vmcore.flat')")
            consumer = f"umask 0077 && dd bs=512 of={self.q(part)}"
        ssh = self.ssh(consumer)
        self.log(f"running {shlex.join(argv)} | {shlex.join(ssh)}")
        env = _child_env() if argv[0] == "pydumpfile" else None
        prc, crc = _pipe(exec_argv(argv), ssh, producer_env=env)
        if prc != 0 or crc != 0:
            self.log(f"saving vmcore failed, exitcode:{prc or crc} (collector {prc}, ssh {crc})")
            return prc or crc
        return self.rename(part, final)

    def rename(self, part: str, final: str) -> int:
        p = self.q(part)
        rc = self.remote(f"{{ sync {p} 2>/dev/null || sync; }} && mv {p} {self.q(final)}")
        if rc != 0:
            self.log(f"moving vmcore failed, exitcode:{rc}")
            return 1
        self.cap.saved_to = f"{self.target}:{posixpath.join(self.dir, final)}"
        self.log("saving vmcore complete")
        return 0

    def save_log(self, text: str) -> None:
        with tempfile.TemporaryFile("w+b") as f:
            f.write(text.encode())
            f.seek(0)
            rc = self.remote(f"umask 0077 && cat > {self.q('kexec-dmesg.log')}", stdin=f)
        if rc != 0:
            self.log(f"saving kexec-dmesg.log failed, exitcode:{rc}")


# --------------------------------------------------------------------------------------- entry points


def load_config(path: str | None, log: Log) -> KdumpConfig | None:
    """The parsed kdump.conf; defaults when the default file is missing; None (logged) when broken."""
    if path is None:
        path = DEFAULT_CONFIG
        if not os.path.exists(path):
            log(f"no {path}: using the defaults")
            return KdumpConfig()
    try:
        return parse_file(path)
    except KdumpConfError as e:
        log(f"error: {e}")
        return None


def capture(config: str | None, opts: CaptureOptions, log: Log | None = None) -> int:
    """``pykdumpctl capture``: the exit status (0 a vmcore was saved)."""
    log = log or Log()
    conf = load_config(config, log)
    if conf is None:
        log("cannot dump without a valid configuration; using the default failure action")
        Capture(KdumpConfig(), opts, log).failure()
        return 1
    return Capture(conf, opts, log).run()


def save_raw(device: str, path: str, *, keep: bool = False, log: Log | None = None,
             ip: str | None = None, now: float | None = None) -> int:
    """Rearrange the flattened stream on DEVICE into ``PATH/$HOST_IP-$DATE/vmcore`` (kdumpctl save_raw).

    No stream (wrong signature) is not an error: exit 0, nothing written. After a successful save the
    stream's first 512 bytes are zeroed (as kdumpctl does) so the next boot does not save it again,
    unless ``keep``.
    """
    log = log or Log()
    try:
        with open(device, "rb") as f:
            head = f.read(FLAT_HEADER_SIZE)
    except OSError as e:
        log(f"cannot read {device}: {e.strerror or e}")
        return 1
    if head[: len(FLAT_SIGNATURE)] != FLAT_SIGNATURE:
        log(f"no dump found on {device}")
        return 0
    coredir = Path(path) / dump_dir_name(ip, now)
    try:
        coredir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        log(f"failed to create {coredir}: {e.strerror or e}")
        return 1
    part, final = coredir / "vmcore-incomplete", coredir / "vmcore"
    argv = ["pydumpfile", "-R", str(part)]
    log(f"saving the dump on {device} to {coredir}/")
    log(f"running {shlex.join(argv)} < {device}")
    with open(device, "rb") as f:
        rc = subprocess.run(exec_argv(argv), stdin=f, env=_child_env()).returncode
    if rc != 0 or not part.exists():
        log(f"saving vmcore failed, exitcode:{rc}" + (f"; the partial dump is kept as {part}" if part.exists() else ""))
        return 1
    _fsync_path(part)
    os.replace(part, final)
    _fsync_dir(coredir)
    log(f"Dump saved to {final}")
    if not keep:
        fd = os.open(device, os.O_WRONLY)
        try:
            os.pwrite(fd, bytes(512), 0)  # kdumpctl: dd if=/dev/zero of=DEV bs=1b count=1 (no truncation here)
            os.fsync(fd)
        finally:
            os.close(fd)
        log(f"wiped the dump header on {device}")
    return 0


__all__ = [
    "CaptureOptions", "Capture", "Log", "capture", "save_raw", "host_ip", "dump_dir_name",
    "file_command", "stream_command",
]
