"""The three kinds of dump target, each a ``Dest``: ``prepare()`` (the dump directory), ``save_dmesg()``,
``save_vmcore()`` (the dump status, 0 saved), ``save_log()`` (kexec-dmesg.log).

* ``FsDest``: a directory on a mounted file system (local, ``ext4|xfs|… DEVICE``, ``virtiofs``, ``nfs``):
  ``<root>/<path>/$HOST_IP-$DATE``; ``vmcore-dmesg.txt`` first (``pydumpfile --dump-dmesg`` into
  ``vmcore-dmesg-incomplete.txt``, renamed on success, mode 0600; a failure is logged and the vmcore is
  saved anyway), then the collector writes ``vmcore-incomplete``, fsynced and renamed ``vmcore`` only if
  the collector exited 0.
* ``SshDest``: ``ssh -i SSHKEY -o BatchMode=yes -o StrictHostKeyChecking=yes user@host``; dmesg through a
  local temporary file; the collector's ``-F`` stream is rearranged by the remote ``pydumpfile -R`` if it
  has one, else stored as ``vmcore.flat`` (``--ssh-receiver`` forces either); ``core_collector scp``
  copies /proc/vmcore. Both ends of the pipe must exit 0.
* ``RawDest``: ``COLLECTOR -F … | dd of=DEVICE obs=1M conv=notrunc,fsync``; no dmesg.
"""
from __future__ import annotations

import os
import posixpath
import shlex
import subprocess
import tempfile
from pathlib import Path

from .collector import child_env, collector_name, env_for, exec_argv, file_command, pipe, stream_command
from .kdumpconf import FLATTENING_COLLECTORS
from .session import Failed, Session
from .system import fsync_dir, fsync_path


class Dest:
    ready = False

    def __init__(self, session: Session) -> None:
        self.session = session
        self.log = session.log

    def prepare(self) -> None:
        self.ready = True

    def save_dmesg(self) -> None:
        pass

    def save_vmcore(self) -> int:  # pragma: no cover
        raise NotImplementedError

    def save_log(self, text: str) -> None:
        pass

    def dmesg_to(self, out: str) -> bool:
        argv = ["pydumpfile", "--dump-dmesg", self.session.opts.vmcore, out]
        try:
            rc = subprocess.run(exec_argv(argv), stdin=subprocess.DEVNULL, env=child_env()).returncode
        except OSError as e:
            self.log(f"{shlex.join(argv)}: {e}")
            return False
        return rc == 0


class FsDest(Dest):
    def __init__(self, session: Session, root: str) -> None:
        super().__init__(session)
        self.dir = Path(os.path.abspath(os.path.join(root, session.conf.path.lstrip("/"), session.dirname)))

    def prepare(self) -> None:
        self.log(f"saving to {self.dir}/")
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            self.log(f"mkdir -p {self.dir} failed: {e.strerror or e}")
            raise Failed() from None
        self.ready = True

    def save_dmesg(self) -> None:
        part = self.dir / "vmcore-dmesg-incomplete.txt"
        final = self.dir / "vmcore-dmesg.txt"
        self.log(f"saving vmcore-dmesg.txt to {self.dir}")
        if self.dmesg_to(str(part)) and part.exists():
            os.chmod(part, 0o600)
            fsync_path(part)
            os.replace(part, final)
            fsync_dir(self.dir)
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
        argv, stdout_file = file_command(self.session.collector, self.session.opts.vmcore, str(part))
        self.log("saving vmcore")
        self.log(f"running {shlex.join(argv)}")
        env = env_for(argv)
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
            fsync_path(part)
        except OSError as e:
            self.log(f"sync vmcore failed: {e.strerror or e}")
            return 1
        os.replace(part, final)
        fsync_dir(self.dir)
        self.session.saved_to = str(final)
        self.log("saving vmcore complete")
        return 0

    def save_log(self, text: str) -> None:
        p = self.dir / "kexec-dmesg.log"
        p.write_text(text, encoding="utf-8")
        os.chmod(p, 0o600)
        fsync_path(p)


class RawDest(Dest):
    def __init__(self, session: Session, device: str) -> None:
        super().__init__(session)
        self.device = device

    def prepare(self) -> None:
        if not os.path.exists(self.device):
            self.log(f"raw target {self.device} does not exist")
            raise Failed()
        self.log(f"saving to raw disk {self.device}")

    def save_vmcore(self) -> int:
        argv = stream_command(self.session.collector, self.session.opts.vmcore)
        dd = ["dd", f"of={self.device}", "obs=1M", "conv=notrunc,fsync"]
        self.log("saving vmcore")
        self.log(f"running {shlex.join(argv)} | {shlex.join(dd)}")
        env = env_for(argv)
        with tempfile.TemporaryFile("w+b") as dd_err:
            prc, crc = pipe(exec_argv(argv), dd, producer_env=env, consumer_stderr=dd_err)
            if crc != 0:
                dd_err.seek(0)
                for line in dd_err.read().decode(errors="replace").splitlines():
                    self.log(f"dd: {line}")
        if prc != 0 or crc != 0:
            self.log(f"saving vmcore failed, exitcode:{prc or crc} (collector {prc}, dd {crc})")
            return prc or crc
        self.session.saved_to = self.device
        self.log("saving vmcore complete")
        return 0


class SshDest(Dest):
    def __init__(self, session: Session) -> None:
        super().__init__(session)
        conf = session.conf
        self.target = conf.target_spec or ""
        user, _, host = self.target.rpartition("@")
        # scp needs brackets around an IPv6 address
        self.scp_target = f"{user}@[{host}]" if ":" in host and not host.startswith("[") else self.target
        self.dir = posixpath.join(conf.path, session.dirname)
        self.opts = [
            *session.opts.ssh_options,
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
            raise Failed()
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
        mode = self.session.opts.ssh_receiver
        if mode != "auto":
            return mode
        rc = self.remote("command -v pydumpfile >/dev/null 2>&1")
        return "pydumpfile" if rc == 0 else "flat"

    def save_vmcore(self) -> int:
        collector = self.session.collector
        name = collector_name(collector)
        vmcore = self.session.opts.vmcore
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
        env = env_for(argv)
        prc, crc = pipe(exec_argv(argv), ssh, producer_env=env)
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
        self.session.saved_to = f"{self.target}:{posixpath.join(self.dir, final)}"
        self.log("saving vmcore complete")
        return 0

    def save_log(self, text: str) -> None:
        with tempfile.TemporaryFile("w+b") as f:
            f.write(text.encode())
            f.seek(0)
            rc = self.remote(f"umask 0077 && cat > {self.q('kexec-dmesg.log')}", stdin=f)
        if rc != 0:
            self.log(f"saving kexec-dmesg.log failed, exitcode:{rc}")
