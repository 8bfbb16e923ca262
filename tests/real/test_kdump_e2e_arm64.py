"""End-to-end kdump on arm64 (issue 13), with ``fixtures/kdumpvm --arch arm64``.

A Debian bookworm arm64 guest (qemu-system-aarch64 -M virt under TCG; root file system from
fixtures/kdumpvm_arm64.py: python3 and this project's wheel built for arm64) boots Debian's 6.1
cloud-arm64 kernel with crashkernel=; ``pykexec -p`` loads the capture kernel (that kernel has no
kexec_file_load, so this is our kexec_load path: Image from a gzip vmlinuz, DTB, ELF core header,
purgatory) and the guest crashes through sysrq; in the capture kernel ``pykdumpctl capture`` runs
our collector on arm64 and leaves ``vmcore`` and ``vmcore-dmesg.txt`` on a virtio disk, which the
host opens with drgn.

Also here: the arm64 build of pydumpfile, run under qemu-user on this host, writes the same file as
the host's build for the same arm64 vmcore (an arm64 vmcore is filtered the same on either machine).
"""
from __future__ import annotations

import os
import shutil

import pytest

from fixtures.kdumpvm_lib import CRASH_LINE, BuildError, build_wheel, run_capture
from tests.helpers import KdumpFile, run

CRASHKERNEL = "256M"
COLLECTOR = "pydumpfile -l -d 31"


def _need(*tools: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("the kdump VM needs root (debootstrap)")
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"missing {', '.join(missing)} (run .ci/install-realcore.sh)")


@pytest.fixture(scope="module")
def host_wheel():
    try:
        return build_wheel()
    except BuildError as e:
        pytest.fail(f"cannot build the wheel: {e}")


@pytest.fixture(scope="module")
def e2e(tmp_path_factory, host_wheel):
    _need("debootstrap", "debugfs", "mke2fs", "qemu-system-aarch64", "qemu-aarch64-static", "aarch64-linux-gnu-gcc")
    out = tmp_path_factory.mktemp("kdumpvm-arm64")
    try:
        r = run_capture(crashkernel=CRASHKERNEL, collector=COLLECTOR, out_dir=out, whl=host_wheel, arch="arm64",
                        timeout=1500)
    except BuildError as e:
        pytest.fail(f"cannot prepare the arm64 kdump VM: {e}")
    print(f"\n{r.summary()}")
    if not r.ok:
        console = r.console.read_text(errors="replace").splitlines()[-60:] if r.console else []
        pytest.fail(f"{r.summary()}\n--- capture log ---\n{r.capture_log[-3000:]}\n"
                    f"--- capture kernel dmesg ---\n{r.guest_dmesg[-3000:]}\n--- console ---\n" + "\n".join(console))
    yield r
    shutil.rmtree(out, ignore_errors=True)  # kept only when the fixture failed


def test_pykexec_loaded_the_capture_kernel_with_kexec_load(e2e):
    """The first kernel (no CONFIG_KEXEC_FILE) got its capture kernel from our kexec_load segments."""
    assert e2e.first["state"] == "crashing"
    assert "(kexec_load, 5 segments)" in e2e.first.get("pykexec", ""), e2e.first
    assert int(e2e.first["kexec_crash_size"]) == 256 << 20


def test_capture_ran_on_arm64_and_powered_off(e2e):
    log = (e2e.vmcore.parent / "kexec-dmesg.log").read_text()
    assert "kdump: saving vmcore-dmesg.txt complete" in log
    assert "kdump: running pydumpfile -l -d 31 /proc/vmcore" in log
    assert "kdump: saving vmcore complete" in log
    console = e2e.console.read_text(errors="replace")
    assert "Starting crashdump kernel" in console
    assert "kdump: Executing final action poweroff" in console
    assert "Machine model: linux,dummy-virt" in console
    assert e2e.capture["state"] == "capturing"


def test_vmcore_and_dmesg(e2e):
    from dumpfilter.source.kdump import KdumpSource

    assert CRASH_LINE in e2e.dmesg.read_text(errors="replace")
    kd = KdumpFile.load(str(e2e.vmcore))
    assert kd.dump_level == 31 and b"aarch64" in kd.utsname and b"6.1.0-" in kd.utsname
    assert kd.phys_base == 0x40000000  # PHYS_OFFSET of QEMU virt, as makedumpfile writes it
    src = KdumpSource(str(e2e.vmcore))
    try:
        assert not src.incomplete and src.elf_machine == 183
        assert b"NUMBER(kimage_voffset)=" in (src.vmcoreinfo_raw or b"")
    finally:
        src.close()
    # -d 31 left out most of the guest's 1 GiB
    assert 1000 < kd.bitmap2.sum() < kd.bitmap1.sum() // 2


def test_drgn_reads_the_capture(e2e):
    drgn = pytest.importorskip("drgn")
    from fixtures.dbgsym import vmlinux_of
    from fixtures.realcore_lib import resolve_kernel

    prog = drgn.Program()
    prog.set_core_dump(str(e2e.vmcore))
    assert prog.platform.arch == drgn.Architecture.AARCH64
    kd = KdumpFile.load(str(e2e.vmcore))
    pfns = kd.dumped_pfns()
    for pfn in pfns[:: max(1, pfns.size // 32)].tolist():
        assert prog.read(pfn * 4096, 4096, True) == kd.page(pfn)
    # with Debian's debug vmlinux of the guest kernel: the crashing task's stack and the release
    release = kd.utsname[130:195].split(b"\0")[0].decode()
    version = resolve_kernel("6.1", "cloud", arch="arm64")["version"]
    prog.load_debug_info([str(vmlinux_of(release, version, "arm64"))], default=False, main=True)
    assert prog["init_uts_ns"].name.release.string_().decode() == release
    frames = [f.name for f in prog.crashed_thread().stack_trace()]
    assert "sysrq_handle_crash" in frames, frames


def test_arm64_build_filters_like_the_host_build(core_arm64_612, host_wheel, tmp_path):
    """pydumpfile built for arm64 (run by qemu-user) writes byte for byte the file the host's
    build writes, from the 52-bit LPA2 vmcore, at -d 31 with LZO and with zlib."""
    _need("qemu-aarch64-static", "aarch64-linux-gnu-gcc", "debootstrap")
    from fixtures.kdumpvm_arm64 import user_python, user_site

    tree, site = user_site(host_wheel)
    for codec in ("-l", "-c"):
        mine, theirs = tmp_path / f"host{codec}", tmp_path / f"arm64{codec}"
        assert run([codec, "-d", "31", core_arm64_612 / "vmcore", mine]).returncode == 0
        r = user_python(tree, ["-m", "dumpfilter", codec, "-d", "31", str(core_arm64_612 / "vmcore"), str(theirs)],
                        site=site, capture_output=True, text=True, timeout=1800)
        assert r.returncode == 0, r.stderr[-2000:]
        assert "pydumpfile Completed." in r.stdout
        assert theirs.read_bytes() == mine.read_bytes()
    r = user_python(tree, ["-c", "import platform, dumpfilter._speedups.classify as c; print(platform.machine(), "
                                 "c.__file__)"], site=site, capture_output=True, text=True, timeout=600)
    assert r.stdout.split()[0] == "aarch64" and "aarch64-linux-gnu.so" in r.stdout
