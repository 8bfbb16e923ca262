"""What the ``pykdumpctl capture`` tests share (tests/unit/test_capture.py on synthetic vmcores,
tests/real/test_capture_real.py on a real one): pykdumpctl in a subprocess with an action recorder
(``Ctl``), the dump-directory checks, and a real sshd on loopback (``Sshd``).

The fixtures ``ctl`` and ``sshd`` are imported by the test modules that use them.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import dumpfilter
from dumpfilter.kexec import capture as cap

REPO = Path(__file__).resolve().parents[1]
CTL = [sys.executable, "-m", "dumpfilter.kexec.pykdumpctl"]
DIR_RE = re.compile(r"^[0-9a-fA-F.:]+-\d{4}-\d\d-\d\d-\d\d:\d\d:\d\d$")
TIMEOUT = 180


def script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


class Ctl:
    """Runs pykdumpctl in a subprocess with the action recorder and a private TMPDIR."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.actions_file = tmp / "actions"
        recorder = script(tmp / "hooks-bin" / "record-action", f'echo "$1" >> {self.actions_file}\n')
        self.fakebin = tmp / "fakebin"
        self.fakebin.mkdir()
        (tmp / "tmp").mkdir()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PYKDUMPCTL_")}
        self.env.update({
            cap.ACTION_ENV: str(recorder),
            "TMPDIR": str(tmp / "tmp"),
            "PATH": f"{self.fakebin}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            "PYTHONPATH": str(REPO) + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else ""),
        })

    def conf(self, text: str) -> Path:
        p = self.tmp / "kdump.conf"
        p.write_text(text)
        return p

    def run(self, *args: str | Path, env: dict | None = None) -> subprocess.CompletedProcess:
        r = subprocess.run(CTL + [str(a) for a in args], capture_output=True, text=True, timeout=TIMEOUT,
                           env={**self.env, **(env or {})}, stdin=subprocess.DEVNULL)
        sys.stderr.write(r.stderr)  # shown by pytest on failure
        return r

    def capture(self, conf: str, vmcore, *args: str | Path, env: dict | None = None) -> subprocess.CompletedProcess:
        return self.run("capture", "--config", self.conf(conf), "--vmcore", vmcore, "--hooks-dir",
                        self.tmp / "no-hooks", *args, env=env)

    @property
    def actions(self) -> list[str]:
        return self.actions_file.read_text().split() if self.actions_file.exists() else []


@pytest.fixture
def ctl(tmp_path: Path) -> Ctl:
    return Ctl(tmp_path)


def dump_dirs(base: Path) -> list[Path]:
    if not base.is_dir():
        return []
    dirs = sorted(p for p in base.iterdir() if p.is_dir())
    for d in dirs:
        assert DIR_RE.match(d.name), d.name
    return dirs


def one_dump_dir(base: Path) -> Path:
    dirs = dump_dirs(base)
    assert len(dirs) == 1, dirs
    return dirs[0]


def check_vmcore(path: Path, synth, direct: bytes) -> None:
    assert path.read_bytes() == direct
    with dumpfilter.open(str(path)) as src:
        for pfn in synth.nonzero_pfns[::997][:20]:
            assert src.read_page(int(pfn)) == synth.page(int(pfn))


def log_order(err: str, *msgs: str) -> None:
    """Each message is logged, in this order."""
    pos = -1
    for m in msgs:
        i = err.find(m, pos + 1)
        assert i > pos, f"{m!r} missing or out of order in:\n{err}"
        pos = i


# --- ssh to a real sshd on loopback ---------------------------------------------------------------------


SSHD = "/usr/sbin/sshd"


def _ensure_openssh() -> str | None:
    """None if sshd, ssh and ssh-keygen are there (installing them if we can), else why not."""
    if all(shutil.which(t) for t in ("ssh", "scp", "ssh-keygen")) and os.path.exists(SSHD):
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "openssh-server/openssh-client are not installed and cannot be installed (not root or no apt-get)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        r = subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "openssh-server",
                            "openssh-client"], capture_output=True, text=True, timeout=600, env=env)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"apt-get install openssh-server openssh-client failed: {e}"
    if r.returncode != 0 or not os.path.exists(SSHD):
        return f"apt-get install openssh-server openssh-client failed: {r.stderr.strip()[-300:]}"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sshd:
    """sshd on 127.0.0.1 (a free port) that logs root in with the key ``id``. keys: a directory with
    ``hostkey`` and ``id`` (and their .pub) to use instead of new ones (an image that carries them stays
    cached); cwd: where remote commands start (relative paths land there)."""

    def __init__(self, d: Path, keys: Path | None = None, cwd: Path | None = None) -> None:
        self.dir = d
        self.remote_bin = d / "remote-bin"  # the remote PATH starts here; tests add/remove pydumpfile
        self.remote_bin.mkdir()
        for name in ("hostkey", "id"):
            if keys is not None:
                for suffix in ("", ".pub"):
                    shutil.copyfile(keys / (name + suffix), d / (name + suffix))
                (d / name).chmod(0o600)
                continue
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "pykdumpctl-test", "-f", str(d / name)],
                           check=True, timeout=60, capture_output=True)
        self.key = d / "id"
        (d / "authorized_keys").write_text((d / "id.pub").read_text())
        # The remote environment must not depend on root's dotfiles (which may put a pydumpfile on PATH):
        # every session goes through this wrapper with a fixed PATH.
        wrapper = script(d / "session", f"""PATH={self.remote_bin}:/usr/sbin:/usr/bin:/sbin:/bin; export PATH
{f"cd {shlex.quote(str(cwd))} || exit 1" if cwd else ""}
case "$SSH_ORIGINAL_COMMAND" in
    internal-sftp|sftp|*sftp-server) exec /usr/lib/openssh/sftp-server ;;
esac
exec /bin/sh -c "$SSH_ORIGINAL_COMMAND"
""")
        self.port = _free_port()
        (d / "sshd_config").write_text(f"""ListenAddress 127.0.0.1
PidFile {d}/sshd.pid
AuthorizedKeysFile {d}/authorized_keys
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
ForceCommand {wrapper}
Subsystem sftp internal-sftp
""")
        self.known_hosts = d / "known_hosts"
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {(d / 'hostkey.pub').read_text()}")
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation directory
        self.log = open(d / "sshd.log", "wb")
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-p", str(self.port), "-f", str(d / "sshd_config"),
                                      "-h", str(d / "hostkey")], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {(d / 'sshd.log').read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("sshd did not start listening")
                time.sleep(0.05)

    def ssh_opts(self, known_hosts: Path | None = None) -> str:
        return f"-F /dev/null -o Port={self.port} -o UserKnownHostsFile={known_hosts or self.known_hosts} " \
               "-o GlobalKnownHostsFile=/dev/null -o LogLevel=ERROR"

    def remote_pydumpfile(self, present: bool) -> None:
        p = self.remote_bin / "pydumpfile"
        if present:
            script(p, f'PYTHONPATH={REPO} exec {sys.executable} -m dumpfilter "$@"\n')
        elif p.exists():
            p.unlink()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.log.close()


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    why = _ensure_openssh()
    if why:
        pytest.skip(why)
    if os.geteuid() != 0:
        pytest.skip("sshd on loopback needs root (it logs in as root)")
    server = Sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


def ssh_capture(ctl: Ctl, sshd: Sshd, vmcore, remote: Path, extra_conf: str = "", *args: str,
                known_hosts: Path | None = None) -> subprocess.CompletedProcess:
    conf = f"ssh root@127.0.0.1\nsshkey {sshd.key}\npath {remote}\n{extra_conf}"
    return ctl.capture(conf, vmcore, *args, env={cap.SSH_OPTS_ENV: sshd.ssh_opts(known_hosts)})
