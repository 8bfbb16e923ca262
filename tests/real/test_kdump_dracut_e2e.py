"""The capture initramfs built by Debian's dracut with our 99pydumpfile module, in a VM (issue 12;
fixtures/kdumpvm --driver dracut).

The guest image has Debian bookworm's dracut (059) and our wheel; `pykdumpctl rebuild` ran in its chroot
against the guest kernel's modules, with kdump.conf ``ext4 LABEL=kdumpout``, ``path /var/crash``,
``core_collector pydumpfile -l -d 31`` and ``final_action poweroff``; then `pykdumpctl unit install` installed
and enabled pykdump.service, and /etc/default/pykdump names that initramfs (KDUMP_INITRD). The first kernel
boots systemd with crashkernel=, and pykdump.service loads the capture kernel at boot (``pykdumpctl start``:
``pykexec -p --reuse-cmdline --initrd``, the command line keeps ``root=``); the fixture's e2e-crash.service
(ordered after it) records the unit's state and journal and crashes through sysrq; in the capture kernel
dracut's own init runs our hooks: the cmdline hook claims ``root=`` without mounting it, the pre-mount hook
runs ``pykdumpctl capture``, which saves vmcore-dmesg.txt and the vmcore to the ext4 disk and powers off
through sysrq. Here the host checks the status e2e-crash recorded, the console, the dump directory and the
vmcore (tests.helpers.KdumpFile and drgn).

The same with an ssh target (--driver dracut-ssh): kdump.conf ``ssh root@10.0.2.100`` with the image's key
and known_hosts; dracut's network-legacy module brings the interface up by DHCP (QEMU user networking), and QEMU's
guestfwd joins 10.0.2.100:22 to a loopback sshd here (tests.capture_lib.Sshd), which has pydumpfile on its
PATH, so the flattened stream (``pydumpfile -F``) is rearranged into ``vmcore`` on arrival.

Nothing here runs kexec or dracut on this machine: both happen in the guest image only.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from fixtures.kdumpvm_lib import (CRASH_LINE, DRACUT_INITRD, DUMP_PATH, SSH_ADDR, SSH_PATH, BuildError,
                                   CaptureResult, run_capture, ssh_keys)
from tests.helpers import KdumpFile, drgn_program, scratch_dir

CRASHKERNEL = "256M"
COLLECTOR = "pydumpfile -l -d 31"
HOOK_LINE = "pydumpfile: pykdumpctl capture --config /etc/kdump.conf"  # the pre-mount hook, to /dev/kmsg
CRASHING = "KDUMPVM: capture kernel loaded; crashing"  # e2e-crash's last line before the sysrq crash


def _needs_vm() -> None:
    if os.geteuid() != 0:
        pytest.skip("the kdump VM test needs root (debootstrap, chroot)")
    missing = [t for t in ("debootstrap", "debugfs", "mke2fs", "qemu-system-x86_64") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"missing {', '.join(missing)} (run .ci/install-realcore.sh)")


def _run(d: Path, **kw) -> CaptureResult:
    try:
        r = run_capture(crashkernel=CRASHKERNEL, out_dir=d, **kw)
    except BuildError as e:
        pytest.fail(f"cannot prepare the dracut kdump VM: {e}")
    if not r.ok:
        console = r.console.read_text(errors="replace").splitlines()[-60:] if r.console else []
        pytest.fail(f"{r.summary()}\n--- pykdumpctl rebuild ---\n{r.initrd_log[-2000:]}\n"
                    f"--- capture log ---\n{r.capture_log[-3000:]}\n--- console ---\n" + "\n".join(console))
    return r


@pytest.fixture(scope="module")
def dracut_vm(tmp_path_factory):
    _needs_vm()
    with scratch_dir(tmp_path_factory, "kdumpvm-dracut") as d:
        yield _run(d, collector=COLLECTOR, driver="dracut")


@pytest.fixture(scope="module")
def dracut_ssh_vm(tmp_path_factory):
    from tests.capture_lib import Sshd, _ensure_openssh

    _needs_vm()
    why = _ensure_openssh()
    if why:
        pytest.skip(why)
    with scratch_dir(tmp_path_factory, "kdumpvm-dracut-ssh") as d:
        (d / "sshd").mkdir()
        (d / "home").mkdir()
        server = Sshd(d / "sshd", keys=ssh_keys(), cwd=d / "home")
        server.remote_pydumpfile(True)
        try:
            yield _run(d / "vm", collector="pydumpfile -F -l -d 31", driver="dracut-ssh", ssh_port=server.port,
                       ssh_dir=d / "home")
        finally:
            server.stop()


def _capture_console(r: CaptureResult) -> str:
    """The console from the crash on: the capture kernel's boot, dracut's init and our hooks."""
    text = r.console.read_text(errors="replace")
    assert CRASHING in text
    return text.split(CRASHING, 1)[1]


def _loaded_at_boot_by_pykdump_service(r: CaptureResult) -> None:
    f = r.first
    assert f["state"] == "crashing" and "pykexec" not in f  # first-init's pykexec did not run
    assert f["loader"] == "pykdump.service" and f["loader_active"] == "active"
    log = f["loader_log"]
    assert f"pykexec -p /boot/vmlinuz --reuse-cmdline --initrd {DRACUT_INITRD}" in log, log
    assert "kexec: loaded kdump kernel" in log and "rebuilding" not in log, log
    assert int(f["kexec_crash_size"]) > 0
    print(f"\nfirst kernel (systemd) reached the crash at {f['uptime']} s uptime; failed units: "
          f"{f.get('failed_units') or 'none'}")


def test_pykdump_service_loaded_the_capture_kernel_at_boot(dracut_vm):
    _loaded_at_boot_by_pykdump_service(dracut_vm)


def test_dracut_built_the_initramfs_with_our_module(dracut_vm):
    log = dracut_vm.initrd_log
    assert "dracut --force --no-hostonly --no-hostonly-cmdline" in log
    assert "*** Including module: pydumpfile ***" in log
    assert f"built {DRACUT_INITRD}:" in log
    size = dracut_vm.initrd_bytes
    print(f"\ndracut capture initramfs: {size} bytes ({size / (1 << 20):.1f} MiB); "
          f"{' '.join(l.strip() for l in log.splitlines() if 'total in the initramfs' in l)}")
    assert 4 << 20 < size < 64 << 20


def test_capture_kernel_ran_our_dracut_hooks(dracut_vm):
    cap = _capture_console(dracut_vm)
    cmdline = re.search(r"Kernel command line: (.*)", cap)
    assert cmdline and "init=" not in cmdline.group(1) and "root=LABEL=e2eroot" in cmdline.group(1)
    # pykdumpctl start --reuse-cmdline: the first kernel's, minus crashkernel= and KDUMP_COMMANDLINE_REMOVE,
    # plus KDUMP_COMMANDLINE_APPEND
    assert "crashkernel=" not in cmdline.group(1) and "kdumpvm.crash" not in cmdline.group(1)
    assert "rd.shell=0" in cmdline.group(1)
    assert "dracut: Debian GNU/Linux-12" in cap  # dracut's init, not our busybox initramfs
    assert HOOK_LINE in cap
    for line in ("kdump: mounting ext4 LABEL=kdumpout", "kdump: saving vmcore-dmesg.txt complete",
                 f"kdump: running {COLLECTOR} /proc/vmcore", "kdump: saving vmcore complete",
                 "kdump: Executing final action poweroff", "sysrq: Power Off", "reboot: Power down"):
        assert line in cap, line
    assert "command not found" not in cap  # every tool our hooks and pykdumpctl capture call is there
    log = (dracut_vm.vmcore.parent / "kexec-dmesg.log").read_text()
    assert "kdump: saving vmcore complete" in log


def test_no_root_file_system_was_mounted(dracut_vm):
    cap = _capture_console(dracut_vm)
    assert "Mounted root filesystem" not in cap and "/sysroot" not in cap
    mounts = re.findall(r"EXT4-fs \((\w+)\): mounted filesystem", cap)
    assert len(mounts) == 1  # the dump target only
    assert dracut_vm.first["state"] == "crashing" and not dracut_vm.capture  # capture-init never ran


def test_dump_directory(dracut_vm):
    d = dracut_vm.vmcore.parent
    assert sorted(p.name for p in d.iterdir()) == ["kexec-dmesg.log", "vmcore", "vmcore-dmesg.txt"]
    assert re.fullmatch(r"[0-9a-f.:]+-\d{4}-\d\d-\d\d-\d\d:\d\d:\d\d", d.name)
    assert d.parent.name == Path(DUMP_PATH).name


def test_dmesg_has_the_crash_line(dracut_vm):
    text = dracut_vm.dmesg.read_text(errors="replace")
    assert CRASH_LINE in text and "Kernel panic - not syncing: sysrq triggered crash" in text


def test_vmcore_is_level_31_and_opens_with_our_reader_and_drgn(dracut_vm):
    drgn = pytest.importorskip("drgn")
    k = KdumpFile.load(str(dracut_vm.vmcore))
    assert k.dump_level == 31
    assert k.status & 0x2  # lzo (-l)
    assert b"6.1." in k.utsname
    prog = drgn_program(str(dracut_vm.vmcore))
    assert prog.flags & drgn.ProgramFlags.IS_LINUX_KERNEL
    assert prog.platform.arch == drgn.Architecture.X86_64
    pfns = k.dumped_pfns()
    assert len(pfns) > 1000
    for pfn in [int(pfns[i]) for i in range(0, len(pfns), max(1, len(pfns) // 16))]:
        assert prog.read(pfn * k.block_size, k.block_size, True) == k.page(pfn), f"pfn {pfn:#x}"


def test_ssh_target(dracut_ssh_vm):
    r = dracut_ssh_vm
    _loaded_at_boot_by_pykdump_service(r)
    assert "*** Including module: network ***" in r.initrd_log
    cap = _capture_console(r)
    assert HOOK_LINE in cap and "Mounted root filesystem" not in cap
    assert f"kdump: saving to root@{SSH_ADDR}:{SSH_PATH}/10.0.2.15-" in cap
    assert "has pydumpfile: the stream is rearranged there into vmcore" in cap
    for line in ("kdump: saving vmcore-dmesg.txt complete", "kdump: saving vmcore complete",
                 "kdump: Executing final action poweroff", "reboot: Power down"):
        assert line in cap, line
    d = r.vmcore.parent
    assert d.parent.name == SSH_PATH and d.name.startswith("10.0.2.15-")
    assert CRASH_LINE in r.dmesg.read_text(errors="replace")
    k = KdumpFile.load(str(r.vmcore))
    assert k.dump_level == 31 and k.status & 0x2
    pfns = k.dumped_pfns()
    assert len(pfns) > 1000
    drgn = pytest.importorskip("drgn")
    prog = drgn_program(str(r.vmcore))
    assert prog.flags & drgn.ProgramFlags.IS_LINUX_KERNEL
    for pfn in [int(pfns[i]) for i in range(0, len(pfns), max(1, len(pfns) // 16))]:
        assert prog.read(pfn * k.block_size, k.block_size, True) == k.page(pfn), f"pfn {pfn:#x}"
