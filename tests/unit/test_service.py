"""pykdumpctl status/start/stop/test/unit/propagate/rebuild on a fake root: /proc and /sys through
DUMPFILTER_SYSROOT, /etc through --root or explicit paths, ssh tools replaced by recorders on PATH.
Nothing here loads a kernel or crashes the machine: test --yes writes into the fake /proc."""
from __future__ import annotations

import os
import platform
import stat
from pathlib import Path

import pytest

from dumpfilter.kexec import service, sysroot
from dumpfilter.kexec.pykdumpctl import main
from dumpfilter.kexec.service import SysConfig, parse_sysconfig, pykexec_argv

from test_pykexec import RUNNING, fake_bzimage


@pytest.fixture
def fakeroot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "root"
    (root / "proc/sys/kernel").mkdir(parents=True)
    (root / "sys/kernel").mkdir(parents=True)
    (root / "proc/cmdline").write_text(RUNNING + "\n")
    monkeypatch.setenv(sysroot.ENV, str(root))
    return root


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


# --- status ----------------------------------------------------------------------------------------------


def test_status_exit_codes(fakeroot: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "status")
    assert rc == 3 and "not operational" in out and "missing" in out
    (fakeroot / "sys/kernel/kexec_crash_loaded").write_text("0\n")
    (fakeroot / "sys/kernel/kexec_crash_size").write_text("0\n")
    rc, out, _ = run(capsys, "status")
    assert rc == 3 and "no memory is reserved" in out
    (fakeroot / "sys/kernel/kexec_crash_size").write_text("268435456\n")
    rc, out, _ = run(capsys, "status")
    assert rc == 3 and "no crash kernel is loaded" in out
    (fakeroot / "sys/kernel/kexec_crash_loaded").write_text("1\n")
    rc, out, _ = run(capsys, "status")
    assert rc == 0 and out == "Kdump is operational\n"


# --- the sysconfig file and start/stop ----------------------------------------------------------------------


def test_sysconfig_parsing() -> None:
    sc = parse_sysconfig('# c\nKDUMP_COMMANDLINE_APPEND="nr_cpus=2  irqpoll" # x\nexport KDUMP_KERNEL=/k\n'
                         "KDUMP_COMMANDLINE_REMOVE='rd.lvm.lv quiet'\nOTHER=1\n\n")
    assert sc == SysConfig(kernel="/k", append="nr_cpus=2  irqpoll", remove="rd.lvm.lv quiet")
    with pytest.raises(service.ServiceError, match=":2: expected NAME"):
        parse_sysconfig("A=1\nthis is not it\n", "f")
    with pytest.raises(service.ServiceError, match="No closing quotation"):
        parse_sysconfig('A="x\n', "f")
    # the template we install parses, with every value at its default
    assert parse_sysconfig(service.sysconfig_template()) == SysConfig()


def test_pykexec_arguments() -> None:
    sc = SysConfig(append="nr_cpus=2", remove="quiet")
    assert pykexec_argv(sc, "6.1.0") == ["-p", "/boot/vmlinuz-6.1.0", "--reuse-cmdline", "--initrd",
                                         "/var/lib/pydumpfile/initrd-6.1.0.img", "--append", "nr_cpus=2",
                                         "--remove", "quiet"]
    assert "--initrd" not in pykexec_argv(SysConfig(initrd="none"), "6.1.0")


@pytest.mark.skipif(platform.machine() != "x86_64", reason="loads a bzImage through the host's pykexec")
def test_start_dry_run_uses_the_sysconfig(fakeroot: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(fake_bzimage())
    initrd = tmp_path / "initrd.img"
    initrd.write_bytes(b"x" * 100)
    conf = tmp_path / "kdump.conf"
    conf.write_text("path /var/crash\n")
    os.utime(conf, (1, 1))  # older than the initramfs: no rebuild
    sc = tmp_path / "pykdump"
    sc.write_text(f'KDUMP_KERNEL="{kernel}"\nKDUMP_INITRD="{initrd}"\nKDUMP_CONFIG="{conf}"\n'
                  'KDUMP_COMMANDLINE_APPEND="nr_cpus=2 rd.debug"\nKDUMP_COMMANDLINE_REMOVE="console"\n')
    rc, out, err = run(capsys, "start", "--sysconfig", str(sc), "--dry-run")
    assert rc == 0, err
    assert "rebuilding" not in out and f"pykexec -p {kernel} --reuse-cmdline --initrd {initrd}" in out
    line = next(x for x in out.splitlines() if x.startswith("cmdline: "))
    words = line.split()[1:]
    assert words[:3] == ["root=UUID=abcd", "ro", "nr_cpus=2"] and "rd.debug" in words
    assert "console=ttyS0" not in words and "nr_cpus=1" not in words and "quiet" not in words
    assert "removed: quiet crashkernel=512M-2G:64M,2G-:128M console=ttyS0" in out
    rc, out, _ = run(capsys, "stop", "--dry-run")
    assert rc == 0 and "KEXEC_FILE_UNLOAD|KEXEC_FILE_ON_CRASH" in out


def test_needs_rebuild(tmp_path: Path) -> None:
    from dumpfilter.kexec.kdumpconf import parse_text

    conf = tmp_path / "kdump.conf"
    conf.write_text("path /var/crash\n")
    img = tmp_path / "initrd.img"
    assert "does not exist" in (service.needs_rebuild(img, str(conf), parse_text("")) or "")
    img.write_bytes(b"x")
    os.utime(conf, (img.stat().st_mtime + 10,) * 2)
    assert "is newer than" in (service.needs_rebuild(img, str(conf), parse_text("")) or "")
    assert service.needs_rebuild(img, str(conf), parse_text("force_no_rebuild 1\n")) is None
    os.utime(conf, (1, 1))
    assert service.needs_rebuild(img, str(conf), parse_text("")) is None
    assert "force_rebuild" in (service.needs_rebuild(img, str(conf), parse_text("force_rebuild 1\n")) or "")


# --- test ----------------------------------------------------------------------------------------------------


def test_test_without_yes_changes_nothing(fakeroot: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "kdump.conf"
    conf.write_text("ext4 LABEL=dumps\npath /crash\ncore_collector pydumpfile -l -d 31\n")
    rc, out, _ = run(capsys, "test", "--config", str(conf))
    assert rc == 3 and "not operational" in out
    (fakeroot / "sys/kernel/kexec_crash_loaded").write_text("1\n")
    rc, out, _ = run(capsys, "test", "--config", str(conf))
    assert rc == 0 and "ext4 LABEL=dumps" in out and "pydumpfile -l -d 31" in out
    assert "nothing done: add --yes" in out and "sysrq-trigger" in out
    assert not (fakeroot / "proc/sysrq-trigger").exists()


def test_test_yes_writes_sysrq_c(fakeroot: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, _ = run(capsys, "test", "--config", str(tmp_path / "none.conf"), "--yes")
    assert rc == 3 and not (fakeroot / "proc/sysrq-trigger").exists()  # not loaded: refused
    (fakeroot / "sys/kernel/kexec_crash_loaded").write_text("1\n")
    rc, out, _ = run(capsys, "test", "--config", str(tmp_path / "none.conf"), "--yes")
    assert rc == 0 and "crashing now" in out and "missing: defaults" in out
    assert (fakeroot / "proc/sysrq-trigger").read_text() == "c"
    assert (fakeroot / "proc/sys/kernel/sysrq").read_text() == "1\n"


# --- the unit ------------------------------------------------------------------------------------------------


def test_unit_install_and_remove(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "image"
    rc, out, _ = run(capsys, "unit", "install", "--root", str(root))
    assert rc == 0 and "systemctl daemon-reload && systemctl enable --now pykdump.service" in out
    unit = (root / "etc/systemd/system/pykdump.service").read_text()
    assert "@" not in unit.replace("WantedBy", "")
    assert "ExecStart=" in unit and "-m dumpfilter.kexec.pykdumpctl start" in unit
    assert "Environment=PYKEXEC_ALLOW_REAL=1" in unit and "ConditionKernelCommandLine=crashkernel" in unit
    sysconf = root / "etc/default/pykdump"
    assert parse_sysconfig(sysconf.read_text()) == SysConfig()
    sysconf.write_text('KDUMP_COMMANDLINE_APPEND="mine"\n')
    rc, out, _ = run(capsys, "unit", "install", "--root", str(root))
    assert "kept" in out and sysconf.read_text() == 'KDUMP_COMMANDLINE_APPEND="mine"\n'
    rc, out, _ = run(capsys, "unit", "remove", "--root", str(root))
    assert rc == 0 and not (root / "etc/systemd/system/pykdump.service").exists() and sysconf.exists()


# --- propagate -----------------------------------------------------------------------------------------------


@pytest.fixture
def sshtools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """ssh-keygen, ssh-copy-id and ssh that record their arguments (ssh-keygen makes the two files)."""
    bin_ = tmp_path / "bin"
    log = tmp_path / "ssh.log"
    script(bin_ / "ssh-keygen", f'echo "ssh-keygen $*" >> {log}\n'
           'while [ $# -gt 1 ]; do [ "$1" = -f ] && f=$2; shift; done\n'
           'echo PRIVATE > "$f"; echo "ssh-ed25519 AAAA kdump" > "$f.pub"\n')
    script(bin_ / "ssh-copy-id", f'echo "ssh-copy-id $*" >> {log}\nexit ${{COPY_RC:-0}}\n')
    script(bin_ / "ssh", f'echo "ssh $*" >> {log}\n')
    monkeypatch.setenv("PATH", f"{bin_}{os.pathsep}{os.environ['PATH']}")
    return log


def test_propagate_creates_and_installs_the_key(sshtools: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "keys/kdump_id"
    conf = tmp_path / "kdump.conf"
    conf.write_text(f"ssh kdump@backup.example\nsshkey {key}\npath /srv/crash\n")
    rc, out, err = run(capsys, "propagate", "--config", str(conf), "--ssh-option=-p2222")
    assert rc == 0, err
    log = sshtools.read_text().splitlines()
    assert log[0].startswith("ssh-keygen -q -t ed25519 -N  -C kdump@") and log[0].endswith(f"-f {key}")
    assert log[1] == f"ssh-copy-id -i {key}.pub -p2222 kdump@backup.example"
    assert log[2] == f"ssh -p2222 -i {key} -o BatchMode=yes kdump@backup.example mkdir -p /srv/crash"
    assert f"created the key {key}" in out and "has been installed on kdump@backup.example" in out
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    # a second run keeps the key
    rc, out, _ = run(capsys, "propagate", "--config", str(conf))
    assert rc == 0 and "using the existing key" in out
    assert sum("ssh-keygen" in x for x in sshtools.read_text().splitlines()) == 1


def test_propagate_errors(sshtools: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                          capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "kdump.conf"
    conf.write_text("path /var/crash\n")
    rc, _, err = run(capsys, "propagate", "--config", str(conf))
    assert rc == 1 and "has no ssh target" in err
    conf.write_text(f"ssh root@h\nsshkey {tmp_path / 'k'}\n")
    monkeypatch.setenv("COPY_RC", "1")
    rc, _, err = run(capsys, "propagate", "--config", str(conf))
    assert rc == 1 and "ssh-copy-id could not install" in err
