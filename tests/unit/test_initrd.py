"""The capture initramfs' Python: the traced file list, a staged tree that runs on its own (the staged
interpreter sees only the staged zip, lib-dynload and site: a missing module fails the dump), the dracut
module's install() under stand-ins for dracut's inst_* functions, and the dracut command line."""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import dumpfilter
from dumpfilter.kexec import initrd
from dumpfilter.kexec.pykdumpctl import main


@pytest.fixture(scope="module")
def direct(synth, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """What `pydumpfile -l -d 31 VMCORE OUT` writes with the installed package."""
    out = tmp_path_factory.mktemp("direct") / "dump"
    r = subprocess.run([sys.executable, "-m", "dumpfilter", "-l", "-d", "31", synth.path, str(out)],
                       capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return out.read_bytes()


@pytest.fixture(scope="module")
def filelist() -> initrd.FileList:
    return initrd.compute()


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory, filelist: initrd.FileList) -> initrd.Staged:
    root = tmp_path_factory.mktemp("stage")
    st = initrd.stage(root, filelist)
    initrd.install_elf_copies(st)
    return st


def test_package_imports_follow_lazy_imports() -> None:
    ours, stdlib = initrd.package_imports()
    assert {"dumpfilter.cli", "dumpfilter.kexec.capture", "dumpfilter.kexec.kdumpconf"} <= ours
    # imported inside functions on the capture path
    assert {"socket", "fcntl", "shlex", "subprocess"} <= {n.split(".")[0] for n in stdlib}
    assert not any(n.split(".")[0] in ("numpy", "elftools", "drgn", "pytest") for n in stdlib)


def test_file_list_is_the_traced_part_only(filelist: initrd.FileList) -> None:
    zipped = set(filelist.stdlib_zip)
    assert {"os.pyc", "encodings/__init__.pyc", "encodings/utf_8.pyc", "argparse.pyc", "subprocess.pyc"} <= zipped
    # not on the capture path: left out
    for absent in ("tkinter/__init__.pyc", "asyncio/__init__.pyc", "unittest/__init__.pyc", "site.pyc",
                   "email/__init__.pyc", "xml/__init__.pyc", "http/__init__.pyc"):
        assert absent not in zipped
    tops = {k.split("/")[1] for k in filelist.site_pyc} | {k.split("/")[1] for k in filelist.site_elf}
    assert tops == {"dumpfilter"}  # no numpy, lzo, zstandard: the collector's .so files link the C libraries
    speedups = {Path(k).name.split(".")[0] for k in filelist.site_elf}
    assert {"reader", "compress", "classify", "window"} <= speedups
    assert "site/dumpfilter/__main__.pyc" in filelist.site_pyc
    assert filelist.elf()["bin/python3"] == Path(os.path.realpath(sys.executable))
    assert len(zipped) < 200


def test_staged_tree_is_small_and_sourceless(staged: initrd.Staged) -> None:
    base = staged.root / initrd.PREFIX.lstrip("/")
    assert not list(base.rglob("*.py"))
    assert staged.pure_bytes < 4 << 20
    launcher = (staged.root / "usr/bin/pykdumpctl").read_text()
    assert f"PYTHONHOME={initrd.PREFIX}" in launcher and "-S -m dumpfilter.kexec.pykdumpctl" in launcher


def _isolated(staged: initrd.Staged, *argv: str, **extra: str) -> subprocess.CompletedProcess[str]:
    base = staged.root / initrd.PREFIX.lstrip("/")
    env = {"PATH": os.environ["PATH"], "PYTHONHOME": str(base), "PYTHONPATH": str(base / "site"),
           "PYTHONDONTWRITEBYTECODE": "1", **extra}
    return subprocess.run([str(base / "bin/python3"), "-S", *argv], env=env, capture_output=True, text=True,
                          timeout=300, cwd=staged.root)


def test_staged_python_sees_only_the_stage(staged: initrd.Staged) -> None:
    r = _isolated(staged, "-c", "import sys, os, json; print(json.dumps(sys.path)); import dumpfilter.cli")
    assert r.returncode == 0, r.stderr
    for entry in eval(r.stdout):  # noqa: S307 - our own json list
        assert entry == "" or entry.startswith(str(staged.root)), entry
    r = _isolated(staged, "-c", "import email")
    assert r.returncode != 0 and "No module named 'email'" in r.stderr


def test_staged_collector_and_capture_run(staged: initrd.Staged, synth, direct, tmp_path: Path) -> None:
    out = tmp_path / "dump"
    r = _isolated(staged, "-m", "dumpfilter", "-l", "-d", "31", str(synth.path), str(out))
    assert r.returncode == 0, r.stderr
    with dumpfilter.open(str(out)) as src:
        for pfn in synth.nonzero_pfns[::997][:10]:
            assert src.read_page(int(pfn)) == synth.page(int(pfn))
    conf = tmp_path / "kdump.conf"
    conf.write_text("path /var/crash\ncore_collector pydumpfile -l -d 31\n")
    actions = tmp_path / "actions"
    recorder = tmp_path / "record"
    recorder.write_text(f"#!/bin/sh\necho \"$1\" >> {actions}\n")
    recorder.chmod(0o755)
    target = tmp_path / "target"
    r = _isolated(staged, "-m", "dumpfilter.kexec.pykdumpctl", "capture", "--config", str(conf), "--vmcore",
                  str(synth.path), "--target-root", str(target), "--hooks-dir", str(tmp_path / "hooks"),
                  "--action-cmd", str(recorder), TMPDIR=str(tmp_path))
    assert r.returncode == 0, r.stderr
    dumps = list((target / "var/crash").glob("*/vmcore"))
    assert len(dumps) == 1 and dumps[0].read_bytes() == direct
    assert actions.read_text().split() == ["reboot"]


STUBS = """
initdir={initdir}
moddir={moddir}
inst_simple() {{ mkdir -p "$initdir$(dirname "${{2:-$1}}")" && cp "$1" "$initdir${{2:-$1}}" && echo "simple ${{2:-$1}}" >> {log}; }}
inst_binary() {{ mkdir -p "$initdir$(dirname "$2")" && cp "$1" "$initdir$2" && echo "binary $2" >> {log}; }}
inst_multiple() {{ echo "multiple $*" >> {log}; }}
inst_dir() {{ echo "dir $*" >> {log}; }}
inst_hook() {{ echo "hook $1 $2 $3" >> {log}; }}
derror() {{ echo "ERROR $*" >> {log}; }}
. $moddir/module-setup.sh
check; echo "check=$?" >> {log}
depends >> {log}
install; echo "install=$?" >> {log}
"""


@pytest.mark.skipif(shutil.which("bash") is None, reason="dracut modules are bash")
def test_dracut_module_install(tmp_path: Path, synth, direct) -> None:
    initdir = tmp_path / "initramfs"
    log = tmp_path / "log"
    conf = tmp_path / "kdump.conf"
    key = tmp_path / "kdump_id"
    key.write_text("KEY")
    conf.write_text(f"ssh root@10.0.2.2\nsshkey {key}\npath /srv\n")
    harness = tmp_path / "harness.sh"
    harness.write_text(STUBS.format(initdir=shlex.quote(str(initdir)), moddir=shlex.quote(str(initrd.module_dir())),
                                    log=shlex.quote(str(log))))
    env = dict(os.environ, PYDUMPFILE_KDUMP_CONF=str(conf),
               PYDUMPFILE_PYKDUMPCTL=shlex.join([sys.executable, "-m", "dumpfilter.kexec.pykdumpctl"]),
               PYTHONPATH=str(Path(dumpfilter.__file__).parents[1]))
    r = subprocess.run(["bash", str(harness)], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = log.read_text().splitlines()
    assert "check=255" in lines and "base fs-lib" in lines and "install=0" in lines
    assert f"binary {initrd.PREFIX}/bin/python3" in lines
    assert any(x.startswith(f"binary {initrd.PREFIX}/site/dumpfilter/_speedups/reader.") for x in lines)
    assert f"simple {initrd.PREFIX}/lib/python{sys.version_info.major}{sys.version_info.minor}.zip" in lines
    assert "simple /usr/bin/pykdumpctl" in lines and "simple /etc/kdump.conf" in lines
    assert f"simple {key}" in lines and "multiple ssh scp" in lines
    assert any(x.startswith("hook pre-mount 90 ") and x.endswith("pydumpfile-capture.sh") for x in lines)
    assert any(x.startswith("hook cmdline 99 ") and x.endswith("pydumpfile-cmdline.sh") for x in lines)
    assert "simple /usr/lib/pydumpfile/action" in lines
    # no init system in the initramfs: reboot/halt/poweroff are optional (the action script uses sysrq)
    assert not any(x.startswith("multiple ") and "poweroff" in x.split() and "-o" not in x.split() for x in lines)
    # the tree dracut would pack runs the collector (ELF files from the stand-in inst_binary)
    assert (initdir / "etc/kdump.conf").read_text() == conf.read_text()
    # an ssh target needs the network up before the pre-mount hook
    assert (initdir / "etc/cmdline.d/99pydumpfile-network.conf").read_text().split() == ["rd.neednet=1", "ip=dhcp"]
    base = initdir / initrd.PREFIX.lstrip("/")
    out = tmp_path / "dump"
    env = {"PATH": os.environ["PATH"], "PYTHONHOME": str(base), "PYTHONPATH": str(base / "site")}
    r = subprocess.run([str(base / "bin/python3"), "-S", "-m", "dumpfilter", "-l", "-d", "31", str(synth.path),
                        str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == direct


@pytest.mark.skipif(shutil.which("bash") is None, reason="dracut modules are bash")
def test_dracut_module_installs_the_collector_extra_bins_and_modules(tmp_path: Path) -> None:
    """A core_collector other than pydumpfile, extra_bins and extra_modules go into the initramfs (the
    capture initramfs has only what the module installs)."""
    log = tmp_path / "log"
    conf = tmp_path / "kdump.conf"
    conf.write_text("ext4 LABEL=dumps\ncore_collector makedumpfile -l -d 31\nextra_bins /usr/bin/a /usr/bin/b\n"
                    "extra_modules virtio_blk nvme  # for the target\n")
    ctl = tmp_path / "ctl"  # stands in for `pykdumpctl initrd-files`: an empty stage
    ctl.write_text('#!/bin/sh\nmkdir -p "$3" && : > "$5"\n')
    ctl.chmod(0o755)
    harness = tmp_path / "harness.sh"
    harness.write_text(STUBS.format(initdir=shlex.quote(str(tmp_path / "initramfs")),
                                    moddir=shlex.quote(str(initrd.module_dir())), log=shlex.quote(str(log)))
                       + f"instmods() {{ echo \"instmods hostonly=$hostonly $*\" >> {shlex.quote(str(log))}; }}\n"
                       + "hostonly=yes; installkernel; echo \"installkernel=$?\" >> " + shlex.quote(str(log)) + "\n")
    env = dict(os.environ, PYDUMPFILE_KDUMP_CONF=str(conf), PYDUMPFILE_PYKDUMPCTL=str(ctl))
    r = subprocess.run(["bash", str(harness)], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = log.read_text().splitlines()
    assert "install=0" in lines and "installkernel=0" in lines
    assert "multiple makedumpfile" in lines
    assert "multiple -o /usr/bin/a /usr/bin/b" in lines
    assert "instmods hostonly= virtio_blk nvme" in lines


def test_dracut_command_and_rebuild_dry_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dracut_059 = tmp_path / "modules.d"
    (dracut_059 / "35network-legacy").mkdir(parents=True)
    cmd = initrd.dracut_command(tmp_path / "i.img", kernel_release="6.1.0-9-amd64", network=True,
                                conf_dracut_args=("--add-drivers", "virtio_blk"), modules_d=dracut_059)
    assert cmd[:4] == ["dracut", "--force", "--no-hostonly", "--no-hostonly-cmdline"]
    mods = cmd[cmd.index("-m") + 1].split()
    assert "pydumpfile" in mods and "network" in mods and "systemd" not in mods
    assert "network-legacy" in mods  # not systemd-networkd, which dracut takes when the host has it
    assert cmd[-3:] == ["--add-drivers", "virtio_blk", str(tmp_path / "i.img")]
    assert cmd[cmd.index("--kver") + 1] == "6.1.0-9-amd64"
    assert "network" not in cmd[cmd.index("--omit") + 1].split()
    ng = initrd.dracut_command(tmp_path / "i.img", kernel_release="6.1.0-9-amd64", network=True,
                               modules_d=tmp_path / "none")  # dracut-ng: no network-legacy, dracut chooses
    assert "network" in ng[ng.index("-m") + 1].split() and "network-legacy" not in ng[ng.index("-m") + 1]
    local = initrd.dracut_command(tmp_path / "i.img", kernel_release="6.1.0-9-amd64")
    assert "network" not in local[local.index("-m") + 1].split()
    assert {"network", "ifcfg"} <= set(local[local.index("--omit") + 1].split())  # Debian's dracut-network adds ifcfg
    conf = tmp_path / "kdump.conf"
    conf.write_text("ext4 LABEL=dumps\n")
    sc = tmp_path / "sysconfig"
    sc.write_text(f'KDUMP_CONFIG="{conf}"\n')
    rc = main(["rebuild", "--sysconfig", str(sc), "--kernel-release", "6.1.0-9-amd64", "-o", str(tmp_path / "o.img"),
               "--dry-run"])
    out = capsys.readouterr().out
    assert rc == 0 and "dracut --force --no-hostonly" in out
    assert "-m 'base kernel-modules udev-rules fs-lib pydumpfile' --omit" in out  # no network module
    assert "bytecode, zip and launchers:" in out and "total in the initramfs:" in out
    assert not (tmp_path / "o.img").exists()


def test_install_module(tmp_path: Path) -> None:
    dest = initrd.install_module(tmp_path / "modules.d")
    assert sorted(p.name for p in dest.iterdir()) == ["module-setup.sh", "pydumpfile-action.sh",
                                                      "pydumpfile-capture.sh", "pydumpfile-cmdline.sh"]
    assert os.access(dest / "module-setup.sh", os.X_OK)


def test_a_missing_entry_module_is_an_error() -> None:
    with pytest.raises(initrd.InitrdError, match="dumpfilter.kexec.nonesuch"):
        initrd.package_imports(("dumpfilter.cli", "dumpfilter.kexec.nonesuch"))
