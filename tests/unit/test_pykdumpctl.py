"""pykdumpctl subcommands on a fake /proc and /sys (DUMPFILTER_SYSROOT)."""
from __future__ import annotations

import struct
from pathlib import Path

import pytest

from dumpfilter.kexec import pykdumpctl, sysroot
from dumpfilter.kexec.pykdumpctl import main

IOMEM = """\
00000000-00000fff : Reserved
00001000-0009fbff : System RAM
000a0000-000fffff : Reserved
00100000-bffdffff : System RAM
  01000000-01ffffff : Kernel code
  5e000000-6dffffff : Crash kernel
bffe0000-bfffffff : Reserved
100000000-13fffffff : System RAM
  13f000000-13fffffff : Crash kernel
"""
RAM = (0x9FBFF - 0x1000 + 1) + (0xBFFDFFFF - 0x100000 + 1) + (0x13FFFFFFF - 0x100000000 + 1)


@pytest.fixture
def fakeroot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "root"
    (root / "proc").mkdir(parents=True)
    (root / "sys/kernel").mkdir(parents=True)
    monkeypatch.setenv(sysroot.ENV, str(root))
    return root


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


# --- crashkernel ---------------------------------------------------------------------------------------


def test_crashkernel_with_ram(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "crashkernel", "--ram", "1G", "--arch", "x86_64", "512M-2G:64M,2G-:128M")
    assert rc == 0
    assert "reserved:  64M (67108864 bytes)" in out and "ram:       1G (--ram)" in out
    rc, out, _ = run(capsys, "crashkernel", "--ram", "4G", "--arch", "x86_64", "512M-2G:64M,2G-:128M")
    assert "reserved:  128M" in out


def test_crashkernel_nothing_reserved(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "crashkernel", "--ram", "256M", "512M-2G:64M,2G-:128M")
    assert rc == 0 and "reserved:  0\n" in out and "none of the ranges" in out


def test_crashkernel_high_low(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "crashkernel", "--ram", "16G", "--arch", "x86_64", "crashkernel=1G,high crashkernel=192M,low")
    assert rc == 0 and "low:       192M" in out and "above 4G first" in out


def test_crashkernel_offset(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "crashkernel", "--ram", "4G", "64M@16M")
    assert rc == 0 and "offset:    0x1000000" in out


def test_crashkernel_ram_from_iomem(fakeroot: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (fakeroot / "proc/iomem").write_text(IOMEM)
    assert sysroot.system_ram_bytes() == (RAM, "/proc/iomem")
    rc, out, _ = run(capsys, "crashkernel", "512M-2G:64M,2G-:128M")
    assert rc == 0 and "(/proc/iomem)" in out and "reserved:  128M" in out  # ~4G of RAM


def test_ram_fallbacks(fakeroot: Path) -> None:
    # without root, /proc/iomem shows zero addresses: use memory blocks, then MemTotal
    (fakeroot / "proc/iomem").write_text("00000000-00000000 : System RAM\n")
    mem = fakeroot / "sys/devices/system/memory"
    mem.mkdir(parents=True)
    (mem / "block_size_bytes").write_text("8000000\n")
    for i, state in enumerate(["online", "online", "offline", "online"]):
        (mem / f"memory{i}").mkdir()
        (mem / f"memory{i}/state").write_text(state + "\n")
    assert sysroot.system_ram_bytes() == (3 * 128 << 20, "/sys/devices/system/memory")
    (mem / "block_size_bytes").unlink()
    (fakeroot / "proc/meminfo").write_text("MemTotal:        4012345 kB\nMemFree: 1 kB\n")
    assert sysroot.system_ram_bytes() == (4012345 * 1024, "/proc/meminfo MemTotal")


def test_crashkernel_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(capsys, "crashkernel", "--ram", "4G", "64X")
    assert rc == 1 and out == ""
    assert err == "pykdumpctl: crashkernel: unrecognized character 'X' in '64X'\n"
    rc, _, err = run(capsys, "crashkernel", "--ram", "lots", "64M")
    assert rc == 1 and "'lots' is not a size" in err


# --- estimate -------------------------------------------------------------------------------------------


def _fake_kernel(path: Path, init_size: int) -> None:
    b = bytearray(8192)
    b[0x1F1] = 4
    struct.pack_into("<H", b, 0x1FE, 0xAA55)
    b[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", b, 0x206, 0x020F)
    b[0x211] = 1
    struct.pack_into("<H", b, 0x236, 3)
    struct.pack_into("<I", b, 0x238, 2047)
    struct.pack_into("<I", b, 0x260, init_size)
    path.write_bytes(bytes(b))


def test_estimate(fakeroot: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (fakeroot / "sys/kernel/kexec_crash_size").write_text("134217728\n")
    rc, out, _ = run(capsys, "estimate", "--ram", "4G", "--arch", "x86_64")
    assert rc == 0
    assert "Reserved crashkernel:    128M" in out
    assert "Recommended crashkernel: 384M" in out and "pydumpfile collector" in out
    assert "WARNING: the current reservation is lower" in out
    rc, out2, _ = run(capsys, "estimate", "--ram", "4G", "--arch", "x86_64", "--collector", "makedumpfile")
    assert "Recommended crashkernel: 256M" in out2  # the Fedora default wins for makedumpfile


def test_estimate_uses_the_kernel_and_initrd_sizes(fakeroot: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kernel, initrd = tmp_path / "vmlinuz", tmp_path / "initrd"
    _fake_kernel(kernel, 100 << 20)
    initrd.write_bytes(bytes(3 << 20))
    rc, out, _ = run(capsys, "estimate", "--ram", "4G", "--kernel", str(kernel), "--initrd", str(initrd))
    assert rc == 0
    assert "Kernel image size:     100M (bzImage init_size)" in out
    assert "Initramfs size:        3M x 3\n" in out


def test_estimate_unknown_collector(capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(capsys, "estimate", "--ram", "4G", "--collector", "gzip")
    assert rc == 1 and "unknown collector 'gzip'" in err


# --- showmem --------------------------------------------------------------------------------------------


def test_showmem(fakeroot: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (fakeroot / "proc/iomem").write_text(IOMEM)
    (fakeroot / "sys/kernel/kexec_crash_size").write_text("268435456\n")
    rc, out, _ = run(capsys, "showmem")
    assert rc == 0
    assert "Crash kernel: 0x5e000000-0x6dffffff (256M, below 4G)" in out
    assert "Crash kernel: 0x13f000000-0x13fffffff (16M, above 4G)" in out
    assert "kexec_crash_size: 268435456 bytes" in out
    assert "Reserved 272MB memory for crash kernel" in out


def test_showmem_without_root_and_without_reservation(fakeroot: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (fakeroot / "proc/iomem").write_text("00000000-00000000 : System RAM\n  00000000-00000000 : Crash kernel\n")
    (fakeroot / "sys/kernel/kexec_crash_size").write_text("268435456\n")
    rc, out, _ = run(capsys, "showmem")
    assert rc == 0 and "addresses hidden" in out and "Reserved 256MB" in out
    (fakeroot / "proc/iomem").write_text("00001000-0009fbff : System RAM\n")
    (fakeroot / "sys/kernel/kexec_crash_size").write_text("0\n")
    rc, out, _ = run(capsys, "showmem")
    assert rc == 0 and "No memory is reserved" in out


def test_showmem_nothing_readable(fakeroot: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(capsys, "showmem")
    assert rc == 1 and "cannot read" in err


# --- check-config ----------------------------------------------------------------------------------------


def test_check_config_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "kdump.conf"
    conf.write_text("ssh kdump@backup\ncore_collector pydumpfile -F -z -d 31\ndefault halt\n")
    rc, out, err = run(capsys, "check-config", str(conf))
    assert rc == 0
    assert f"{conf}: OK" in out and "ssh kdump@backup" in out and "failure_action:   halt" in out
    assert "obsolete" in err  # the warning goes to stderr


def test_check_config_error_names_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "kdump.conf"
    conf.write_text("path /var/crash\ncore_colector makedumpfile -l\n")
    rc, out, err = run(capsys, "check-config", str(conf))
    assert rc == 1 and out == ""
    assert err == f"pykdumpctl: {conf}:2: unknown directive 'core_colector' (did you mean 'core_collector'?)\n"


def test_check_config_default_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "etc-kdump.conf"
    conf.write_text("xfs UUID=1234\n")
    monkeypatch.setattr(pykdumpctl, "DEFAULT_CONFIG", str(conf))
    rc, out, _ = run(capsys, "check-config")
    assert rc == 0 and "xfs UUID=1234" in out


# --- capture --------------------------------------------------------------------------------------------


def test_capture_without_vmcore(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                                tmp_path: Path) -> None:
    monkeypatch.setenv("PYKDUMPCTL_ACTION_CMD", "true")
    rc, _, err = run(capsys, "capture", "--config", str(tmp_path / "k.conf"), "--vmcore", str(tmp_path / "none"))
    assert rc == 1 and "kdump:" in err
