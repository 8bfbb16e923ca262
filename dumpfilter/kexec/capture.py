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

Collectors: how each ``core_collector`` is called is in collector.py; the destinations in targets.py;
host IP, mounts and fsync in system.py; options, log and session in session.py; save-raw in saveraw.py.

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

import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from .collector import file_command, stream_command
from .kdumpconf import KdumpConfError, KdumpConfig, parse_file
from .saveraw import save_raw
from .session import (ACTION_ENV, DEFAULT_CONFIG, MOUNT_ROOT_ENV, PROC_VMCORE, ROOTFS_ENV, SSH_OPTS_ENV, SSH_RECEIVERS,
                      CaptureOptions, Failed, Log, Session)
from .system import Mounts, dump_dir_name, host_ip
from .targets import Dest, FsDest, RawDest, SshDest

REAL_ACTIONS = {"reboot": ["reboot", "-f"], "halt": ["halt", "-f"], "poweroff": ["poweroff", "-f"]}


class Capture:
    def __init__(self, conf: KdumpConfig, opts: CaptureOptions, log: Log | None = None) -> None:
        self.conf = conf
        self.opts = opts
        self.log = log or Log()
        self.dirname = dump_dir_name(opts.ip, opts.now)
        self.session = Session(conf, opts, self.log, self.dirname)
        self.mounts = Mounts(self.log)  # what we mount is unmounted at the end
        self.dest: Dest | None = None

    @property
    def saved_to(self) -> str | None:
        """Where the vmcore was saved (a path, ``user@host:path`` or the raw device), once saved."""
        return self.session.saved_to

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
        self.mounts.unmount_all()
        if status == 0:
            self.final_action()
            return 0
        return 0 if self.failure() else 1

    def dump(self) -> int:
        """Save to the configured target; the dump status (0 saved)."""
        if not os.access(self.opts.vmcore, os.R_OK):
            self.log(f"cannot read {self.opts.vmcore}: not a kdump kernel, or no permission")
            return 1
        return self.save(self.open_dest)

    def open_dest(self) -> Dest:
        kind = self.conf.target_kind
        if kind == "raw":
            return RawDest(self.session, self.conf.target_spec or "")
        if kind == "ssh":
            return SshDest(self.session)
        return FsDest(self.session, self.mount_target())

    def save(self, make: Callable[[], Dest]) -> int:
        """Make the destination, then prepare, dmesg, vmcore: the dump status (0 saved)."""
        self.dest = None
        try:
            self.dest = make()
            self.dest.prepare()
            self.dest.save_dmesg()
            return self.dest.save_vmcore()
        except Failed as e:
            return e.status or 1
        except (OSError, subprocess.SubprocessError) as e:
            self.log(f"saving vmcore failed: {e}")
            return 1

    def mount_target(self) -> str:
        """The root of the target filesystem (mounting it if needed)."""
        t = self.conf.target
        if self.opts.target_root:
            self.log(f"target filesystem already mounted at {self.opts.target_root}")
            return self.opts.target_root
        if t is None:
            return self.opts.rootfs
        return self.mounts.mount(t.fstype, t.spec)

    def save_log(self) -> None:
        dest = self.dest
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
        status = self.save(lambda: FsDest(self.session, root))
        self.save_log()
        return status == 0


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


__all__ = [
    "CaptureOptions", "Capture", "Log", "capture", "save_raw", "host_ip", "dump_dir_name",
    "file_command", "stream_command", "ACTION_ENV", "MOUNT_ROOT_ENV", "ROOTFS_ENV", "SSH_OPTS_ENV", "SSH_RECEIVERS",
    "DEFAULT_CONFIG",
]
