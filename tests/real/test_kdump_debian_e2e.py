"""Debian's kdump-tools flow with pydumpfile, in a VM (fixtures/kdumpvm --driver debian).

The guest image has systemd, Debian's kdump-tools and kexec-tools packages and our wheel, and was switched with
the documented `pykdumpctl debian enable` (run in the image's chroot). The first kernel boots systemd with
crashkernel=, and kdump-tools.service loads the capture kernel at boot (`kdump-config load`, kexec-tools'
`kexec -p`; /etc/default/kdump-tools names the fixture's kernel, busybox initramfs and capture command line,
so no initramfs-tools initrd is built); then the fixture's e2e-crash.service (ordered after it) records the
unit's state and journal and crashes through sysrq; the capture kernel runs Debian's own
`kdump-config savecore`, which calls `makedumpfile --dump-dmesg` and `makedumpfile -F -c -d 31 /proc/vmcore |
cat > dump-incomplete` by name, i.e. our wrapper. Here the host checks dump.STAMP (a complete flattened
stream that our reader and drgn open after `pydumpfile -R`) and dmesg.STAMP (the crash line). Then the same
with the switch undone (`pykdumpctl debian enable` then `disable` in the image): Debian's makedumpfile again.

Not covered here: kdump-tools' own capture initramfs (initramfs-tools, kdump-tools-dump.service in the capture
kernel): the capture kernel boots the fixture's busybox initramfs and capture-init.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures.kdumpvm_lib import CRASH_LINE, BuildError, run_capture
from tests.helpers import scratch_dir


def _run(out: Path, driver: str):
    if os.geteuid() != 0:
        pytest.skip("the kdump VM test needs root (debootstrap, chroot)")
    missing = [t for t in ("debootstrap", "debugfs", "mke2fs", "qemu-system-x86_64") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"missing {', '.join(missing)} (run .ci/install-realcore.sh)")
    try:
        r = run_capture(crashkernel="256M", collector="pydumpfile -l -d 31", out_dir=out, driver=driver)
    except BuildError as e:
        pytest.fail(f"cannot prepare the kdump VM: {e}")
    if not r.ok:
        console = r.console.read_text(errors="replace").splitlines()[-40:] if r.console else []
        pytest.fail(f"{r.summary()}\n--- savecore log ---\n{r.capture_log[-3000:]}\n"
                    "--- console ---\n" + "\n".join(console))
    return r


@pytest.fixture(scope="module")
def deb(tmp_path_factory):
    with scratch_dir(tmp_path_factory, "kdumpvm-debian") as d:
        yield _run(d, "debian")


@pytest.fixture(scope="module")
def deb_makedumpfile(tmp_path_factory):
    with scratch_dir(tmp_path_factory, "kdumpvm-debian-makedumpfile") as d:
        yield _run(d, "debian-makedumpfile")


def _rearrange(flat: Path, out: Path) -> Path:
    with open(flat, "rb") as f:
        r = subprocess.run([sys.executable, "-m", "dumpfilter", "-R", str(out)], stdin=f, capture_output=True,
                           text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return out


def _loaded_at_boot_by_kdump_tools(r) -> None:
    f = r.first
    assert f["state"] == "crashing" and "pykexec" not in f  # first-init's pykexec did not run
    assert f["loader"] == "kdump-tools.service" and f["loader_active"] == "active"
    assert "loaded kdump kernel" in f["loader_log"], f["loader_log"]
    cmd = f["kdump_tools_kexec_cmd"]  # what kdump-config load ran (it writes it to /var/crash/kexec_cmd)
    assert cmd.startswith("/sbin/kexec -p ") and "--initrd=/boot/initrd.img" in cmd, cmd
    assert "init=/sbin/kdump-e2e-capture" in cmd and "systemd.unit=kdump-tools-dump.service" in cmd, cmd
    assert int(f["kexec_crash_size"]) > 0
    console = r.console.read_text(errors="replace")
    boot = console.split("KDUMPVM: capture kernel loaded; crashing", 1)[0]
    assert "loaded kdump kernel" in boot  # kdump-tools.service's StandardOutput=journal+console
    print(f"\nfirst kernel (systemd) reached the crash at {f['uptime']} s uptime; failed units: "
          f"{f.get('failed_units') or 'none'}")


def test_kdump_tools_loaded_the_capture_kernel_at_boot(deb):
    _loaded_at_boot_by_kdump_tools(deb)


def test_savecore_ran_our_wrapper(deb):
    log = deb.capture_log
    assert "running makedumpfile --dump-dmesg /proc/vmcore" in log
    assert "saved dmesg content in" in log and "saved vmcore in" in log
    assert "falling back to 'cp'" not in log and "pydumpfile wrapper" not in log  # no fallback taken
    d = deb.vmcore.parent
    assert sorted(p.name for p in d.iterdir()) == sorted([deb.vmcore.name, deb.dmesg.name])
    assert deb.vmcore.name == f"dump.{d.name}" and deb.dmesg.name == f"dmesg.{d.name}"


def test_dmesg_has_the_crash_line(deb):
    text = deb.dmesg.read_text(errors="replace")
    assert CRASH_LINE in text and "Kernel panic - not syncing: sysrq triggered crash" in text


def test_dump_opens_with_our_reader_and_drgn(deb, tmp_path):
    import numpy as np

    from dumpfilter.source.kdump import KdumpSource
    from tests.helpers import bits

    dump = _rearrange(deb.vmcore, tmp_path / "vmcore")
    drgn = pytest.importorskip("drgn")
    prog = drgn.Program()
    prog.set_core_dump(str(dump))
    assert prog.flags & drgn.ProgramFlags.IS_LINUX_KERNEL
    src = KdumpSource(str(dump))
    try:
        assert src.info.dump_level == 31 and not src.incomplete
        assert b"OSRELEASE=6.1." in (src.vmcoreinfo_raw or b"")
        pfns = np.flatnonzero(bits(src.dumpable_bitmap(), 0, src.max_mapnr))
        assert len(pfns) > 1000
        for pfn in [int(pfns[i]) for i in range(0, len(pfns), max(1, len(pfns) // 16))]:
            assert prog.read(pfn * 4096, 4096, True) == src.read_page(pfn), f"pfn {pfn:#x}"
    finally:
        src.close()


def test_switch_undone_is_makedumpfile_again(deb_makedumpfile, tmp_path):
    r = deb_makedumpfile
    _loaded_at_boot_by_kdump_tools(r)
    assert "saved vmcore in" in r.capture_log
    assert CRASH_LINE in r.dmesg.read_text(errors="replace")
    dump = _rearrange(r.vmcore, tmp_path / "vmcore")
    with open(dump, "rb") as f:
        assert f.read(8) == b"KDUMP   "
