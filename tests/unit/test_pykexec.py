"""pykexec: bzImage checks, the command line, the plan printed by --dry-run, errno sentences, and the
refusal of real loads. Nothing here calls the real syscall: PYKEXEC_ALLOW_REAL is never set and the
libc entry point is replaced by one that fails the test if reached."""
from __future__ import annotations

import errno
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from dumpfilter.errors import DumpfilterError
from dumpfilter.kexec import loader, sysroot
from dumpfilter.kexec.bzimage import ImageError, probe
from dumpfilter.kernel.arch.machines import Machine, machine
from dumpfilter.kexec.loader import (
    KEXEC_FILE_NO_INITRAMFS,
    KEXEC_FILE_ON_CRASH,
    KEXEC_FILE_UNLOAD,
    KexecError,
    make_cmdline,
    execute,
    explain_errno,
    main,
    plan_load,
    plan_unload,
)

RUNNING = "BOOT_IMAGE=/vmlinuz-6.1.0 root=UUID=abcd ro quiet crashkernel=512M-2G:64M,2G-:128M console=ttyS0"
#: a machine with a short table, so the rules are visible apart from any one machine's lists
PLAIN = Machine("plain", 0, capture_add=("irqpoll", "nr_cpus=1", "reset_devices"), capture_remove=("hugepages",))


def fake_bzimage(
    *,
    magic: bytes = b"HdrS",
    boot_flag: int = 0xAA55,
    protocol: int = 0x020F,
    loadflags: int = 0x01,
    xloadflags: int = 0x3,
    cmdline_size: int = 2047,
    init_size: int = 48 << 20,
    size: int = 8192,
) -> bytes:
    """Just the real-mode header of an x86 bzImage (Documentation/arch/x86/boot.rst offsets)."""
    b = bytearray(size)
    b[0x1F1] = 4  # setup_sects
    struct.pack_into("<H", b, 0x1FE, boot_flag)
    b[0x202:0x206] = magic
    struct.pack_into("<H", b, 0x206, protocol)
    struct.pack_into("<H", b, 0x20E, 0x200)  # kernel_version: string at 0x200 + 0x200
    b[0x400:0x420] = b"6.1.0-fake (test@host) #1 SMP\0\0\0"
    b[0x211] = loadflags
    struct.pack_into("<H", b, 0x236, xloadflags)
    struct.pack_into("<I", b, 0x238, cmdline_size)
    struct.pack_into("<I", b, 0x260, init_size)
    return bytes(b)


@pytest.fixture(autouse=True)
def no_real_syscall(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(loader.ALLOW_ENV, raising=False)

    def boom(*args: object) -> tuple[int, int]:
        raise AssertionError("the real kexec_file_load must never be called by tests")

    monkeypatch.setattr(loader, "_libc_syscall", boom)


@pytest.fixture
def fakeroot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "root"
    (root / "proc").mkdir(parents=True)
    (root / "sys/kernel").mkdir(parents=True)
    (root / "proc/cmdline").write_text(RUNNING + "\n")
    monkeypatch.setenv(sysroot.ENV, str(root))
    return root


@pytest.fixture
def kernel(tmp_path: Path) -> Path:
    p = tmp_path / "vmlinuz"
    p.write_bytes(fake_bzimage())
    return p


@pytest.fixture
def initrd(tmp_path: Path) -> Path:
    p = tmp_path / "initrd.img"
    p.write_bytes(b"\x1f\x8b" + bytes(1000))
    return p


# --- the image -------------------------------------------------------------------------------------


def test_probe_reads_the_header(kernel: Path) -> None:
    img = probe(kernel)
    assert (img.protocol, img.protocol_str) == (0x020F, "2.15")
    assert img.version_string == "6.1.0-fake (test@host) #1 SMP"
    assert img.init_size == 48 << 20 and img.cmdline_size == 2047
    assert img.max_cmdline(crash=False) == 2046 and img.max_cmdline(crash=True) == 2016


@pytest.mark.parametrize(
    "kwargs, why",
    [
        ({"magic": b"\x7fELF"}, "no 'HdrS' magic at 0x202"),
        ({"boot_flag": 0}, "0xAA55"),
        ({"protocol": 0x020B}, "2.11 is older than the 2.12"),
        ({"loadflags": 0}, "zImage"),
        ({"xloadflags": 0x2}, "XLF_KERNEL_64"),
        ({"xloadflags": 0x1}, "XLF_CAN_BE_LOADED_ABOVE_4G"),
        ({"size": 2048}, "truncated"),
    ],
)
def test_probe_rejects_like_bzImage64_probe(tmp_path: Path, kwargs: dict, why: str) -> None:
    p = tmp_path / "bad"
    p.write_bytes(fake_bzimage(**kwargs))
    with pytest.raises(ImageError, match="ENOEXEC") as info:
        probe(p)
    assert why in str(info.value)


def test_probe_rejects_short_and_missing_files(tmp_path: Path) -> None:
    elf = tmp_path / "vmlinux"
    elf.write_bytes(b"\x7fELF" + bytes(100))
    with pytest.raises(ImageError, match="too short"):
        probe(elf)
    with pytest.raises(ImageError, match="cannot read"):
        probe(tmp_path / "nope")


# --- the command line -------------------------------------------------------------------------------


def test_capture_cmdline_from_the_running_one() -> None:
    line = make_cmdline(machine=PLAIN, crash=True, reuse=False, append=None, running=RUNNING).line
    assert line == "root=UUID=abcd ro quiet console=ttyS0 irqpoll nr_cpus=1 reset_devices"


def test_capture_args_are_not_duplicated_and_can_be_left_out() -> None:
    line = make_cmdline(machine=PLAIN, crash=True, reuse=True, append="nr_cpus=2 irqpoll", running=RUNNING).line
    assert line.split().count("irqpoll") == 1
    assert "nr_cpus=2" in line and "nr_cpus=1" not in line
    assert line.endswith("reset_devices")
    bare = make_cmdline(machine=PLAIN, crash=True, reuse=False, append="root=/dev/vda", capture_args=False, running=RUNNING).line
    assert bare == "root=/dev/vda"


def test_crashkernel_is_removed_even_from_append() -> None:
    line = make_cmdline(machine=PLAIN, crash=True, reuse=False, append="root=/dev/vda crashkernel=256M", running=RUNNING).line
    assert "crashkernel" not in line and line.startswith("root=/dev/vda")


def test_reuse_for_a_normal_kexec_keeps_crashkernel() -> None:
    line = make_cmdline(machine=PLAIN, crash=False, reuse=True, append="single", running=RUNNING).line
    assert line.startswith("root=UUID=abcd") and "crashkernel=512M-2G:64M,2G-:128M" in line
    assert "BOOT_IMAGE" not in line and line.endswith(" single") and "irqpoll" not in line
    assert make_cmdline(machine=PLAIN, crash=False, reuse=False, append=None, running=RUNNING).line == ""


def test_additions_go_before_the_init_separator() -> None:
    running = "BOOT_IMAGE=x root=/dev/vda crashkernel=256M -- --init-flag"
    line = make_cmdline(machine=PLAIN, crash=True, reuse=False, append=None, running=running).line
    assert line == "root=/dev/vda irqpoll nr_cpus=1 reset_devices -- --init-flag"
    line = make_cmdline(machine=PLAIN, crash=False, reuse=True, append="single", running=running).line
    assert line == "root=/dev/vda crashkernel=256M single -- --init-flag"


def test_quoted_parameters_stay_whole() -> None:
    line = make_cmdline(machine=PLAIN, crash=True, reuse=False, append=None, running='BOOT_IMAGE=x dyndbg="file a.c +p" crashkernel=1G').line
    assert line.startswith('dyndbg="file a.c +p" irqpoll')


def test_x86_64_capture_line_as_kdump_utils() -> None:
    running = ("BOOT_IMAGE=/vmlinuz root=/dev/vda ro quiet hugepagesz=2M hugepages=512 cma=64M swiotlb=65536 "
               "transparent_hugepage=always log_buf_len=16M crashkernel=256M console=ttyS0")
    cmd = make_cmdline(crash=True, reuse=False, append=None, running=running, machine=machine("x86_64"))
    words = cmd.line.split()
    for gone in ("quiet", "hugepagesz=2M", "hugepages=512", "cma=64M", "swiotlb=65536", "log_buf_len=16M",
                 "crashkernel=256M", "transparent_hugepage=always"):
        assert gone not in words and gone in cmd.removed
    assert "crashkernel=256M" in cmd.removed and "BOOT_IMAGE=/vmlinuz" not in cmd.removed
    for new in ("cgroup_disable=memory", "numa=off", "transparent_hugepage=never", "nokaslr", "cma=0",
                "hugetlb_cma=0", "irqpoll", "nr_cpus=1", "reset_devices", "novmcoredd"):
        assert words.count(new) == 1 and new in cmd.added
    assert words[:3] == ["root=/dev/vda", "ro", "console=ttyS0"]
    assert cmd.report()[0].startswith("removed: quiet hugepagesz=2M")


def test_machine_tables_differ() -> None:
    aa = make_cmdline(crash=True, reuse=False, append=None, running="root=/dev/vda cma=64M", machine=machine("aarch64"))
    assert "swiotlb=noforce" in aa.added and "cma=0" in aa.line.split() and "nokaslr" not in aa.line
    ppc = make_cmdline(crash=True, reuse=False, append=None, running="root=/dev/vda cma=64M", machine=machine("ppc64le"))
    assert "cma=64M" in ppc.line.split() and "nr_cpus=16" in ppc.added and "cma=64M" not in ppc.removed
    s390 = make_cmdline(crash=True, reuse=False, append=None, running="root=/dev/vda prot_virt=1", machine=machine("s390x"))
    assert s390.removed == ("prot_virt=1",) and "irqpoll" not in s390.line
    unknown = make_cmdline(crash=True, reuse=False, append=None, running="root=/dev/vda quiet crashkernel=1G",
                           machine=machine("pdp11"))
    assert unknown.line == "root=/dev/vda quiet" and unknown.added == () and unknown.removed == ("crashkernel=1G",)


def test_user_append_wins_and_remove_option() -> None:
    cmd = make_cmdline(crash=True, reuse=True, append="nr_cpus=4 quiet", running="root=/dev/vda nr_cpus=2 rd.lvm.lv=x",
                       machine=PLAIN, remove="rd.lvm.lv")
    assert cmd.line == "root=/dev/vda nr_cpus=4 quiet irqpoll reset_devices"
    assert cmd.removed == ("nr_cpus=2", "rd.lvm.lv=x") and cmd.added == ("irqpoll", "reset_devices")
    same = make_cmdline(crash=True, reuse=False, append=None, running="root=/dev/vda irqpoll", machine=PLAIN)
    assert same.line == "root=/dev/vda irqpoll nr_cpus=1 reset_devices" and same.removed == ()
    bare = make_cmdline(crash=True, reuse=False, append=None, running="a hugepages=3 crashkernel=1G", machine=PLAIN,
                        capture_args=False)
    assert bare.line == "a hugepages=3" and bare.report() == ["removed: crashkernel=1G"]


# --- the plan and --dry-run -------------------------------------------------------------------------------


def test_plan_flags(kernel: Path, initrd: Path) -> None:
    assert plan_load(kernel, initrd, "x", crash=True).flags == KEXEC_FILE_ON_CRASH
    assert plan_load(kernel, None, "x", crash=True).flags == KEXEC_FILE_ON_CRASH | KEXEC_FILE_NO_INITRAMFS
    assert plan_load(kernel, initrd, "x", crash=False).flags == 0
    assert plan_unload(crash=True).flags == KEXEC_FILE_UNLOAD | KEXEC_FILE_ON_CRASH
    assert plan_unload(crash=False).flags == KEXEC_FILE_UNLOAD


def test_cmdline_too_long_for_the_kernel(kernel: Path) -> None:
    plan_load(kernel, None, "a" * 2016, crash=True)
    with pytest.raises(KexecError, match="at most 2016"):
        plan_load(kernel, None, "a" * 2017, crash=True)
    plan_load(kernel, None, "a" * 2046, crash=False)


def test_dry_run_prints_the_syscall(fakeroot: Path, kernel: Path, initrd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-p", str(kernel), "--initrd", str(initrd), "--dry-run", "--arch", "x86_64"]) == 0
    out = capsys.readouterr().out
    cmd = make_cmdline(crash=True, reuse=False, append=None, running=RUNNING, machine=machine("x86_64")).line
    assert cmd.startswith("root=UUID=abcd ro console=ttyS0 irqpoll nr_cpus=1 reset_devices")
    assert "removed: quiet crashkernel=512M-2G:64M,2G-:128M\n" in out and "added:   irqpoll nr_cpus=1 reset_devices cgroup_disable=memory" in out
    assert f"cmdline: {cmd}" in out
    assert (
        f'kexec_file_load(kernel_fd=open("{kernel}"), initrd_fd=open("{initrd}"), '
        f'cmdline_len={len(cmd) + 1}, cmdline="{cmd}", flags=KEXEC_FILE_ON_CRASH)'
    ) in out
    assert "boot protocol 2.15" in out and "6.1.0-fake" in out


def test_dry_run_kexec_tools_style_positional_kernel(fakeroot: Path, kernel: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-p", "--command-line", "root=/dev/vda", "--no-capture-args", "--dry-run", str(kernel)]) == 0
    out = capsys.readouterr().out
    assert "initrd_fd=-1" in out and "flags=KEXEC_FILE_ON_CRASH|KEXEC_FILE_NO_INITRAMFS" in out
    assert 'cmdline="root=/dev/vda"' in out


def test_dry_run_unload(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-u", "-p", "--dry-run"]) == 0
    assert "flags=KEXEC_FILE_UNLOAD|KEXEC_FILE_ON_CRASH" in capsys.readouterr().out


def test_dry_run_quotes_the_cmdline_like_c(fakeroot: Path, kernel: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-l", str(kernel), "--append", 'dyndbg="file a.c +p"', "--dry-run"]) == 0
    assert 'cmdline="dyndbg=\\"file a.c +p\\"", flags=KEXEC_FILE_NO_INITRAMFS)' in capsys.readouterr().out


def test_dry_run_rejects_a_non_bzimage(fakeroot: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "notakernel"
    bad.write_bytes(b"\x7fELF" + bytes(8192))
    assert main(["-p", str(bad), "--dry-run"]) == 1
    errline = capsys.readouterr().err.strip()
    assert errline.startswith("pykexec: ") and "ENOEXEC" in errline and "\n" not in errline


def test_dry_run_missing_initrd(fakeroot: Path, kernel: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-p", str(kernel), "--initrd", str(tmp_path / "missing.img"), "--dry-run"]) == 1
    assert "initramfs does not exist" in capsys.readouterr().err


def test_usage_errors(kernel: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--dry-run"]) == 1
    assert "no kernel given" in capsys.readouterr().err
    assert main([str(kernel), "--dry-run"]) == 1
    assert "-p (crash kernel) or -l" in capsys.readouterr().err


# --- errno → sentence -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "err, crash, words",
    [
        (errno.EPERM, True, "CAP_SYS_BOOT"),
        (errno.ENOEXEC, True, "not a bootable kernel"),
        (errno.EKEYREJECTED, True, "signature was rejected"),
        (errno.EBUSY, True, "busy"),
        (errno.EADDRNOTAVAIL, True, "crashkernel=SIZE"),
        (errno.ENOMEM, True, "reservation is too small"),
        (errno.ENOMEM, False, "not enough memory"),
        (errno.EINVAL, True, "command line may be too long"),
        (errno.EBADF, True, "file descriptor"),
        (errno.ENOSYS, False, "CONFIG_KEXEC_FILE"),
    ],
)
def test_errno_sentences(err: int, crash: bool, words: str) -> None:
    msg = explain_errno(err, crash=crash)
    assert words in msg
    assert msg.startswith("kexec_file_load failed: ") and msg.endswith(f"({errno.errorcode[err]})")


# --- the syscall itself, with a fake ---------------------------------------------------------------


def test_execute_passes_fds_length_and_flags(kernel: Path, initrd: Path) -> None:
    seen: dict[str, object] = {}

    def fake(nr: int, kfd, ifd, clen, cmd, flags) -> tuple[int, int]:
        seen.update(
            nr=nr,
            kernel=os.readlink(f"/proc/self/fd/{kfd.value}"),
            initrd=os.readlink(f"/proc/self/fd/{ifd.value}"),
            clen=clen.value,
            cmd=cmd.value,
            flags=flags.value,
            fds=(kfd.value, ifd.value),
        )
        return 0, 0

    plan = plan_load(kernel, initrd, "root=/dev/vda irqpoll", crash=True)
    execute(plan, syscall=fake, machine="x86_64")
    assert seen["nr"] == 320
    assert (seen["kernel"], seen["initrd"]) == (str(kernel), str(initrd))
    assert seen["clen"] == len("root=/dev/vda irqpoll") + 1  # the NUL counts
    assert seen["cmd"] == b"root=/dev/vda irqpoll"
    assert seen["flags"] == KEXEC_FILE_ON_CRASH
    for fd in seen["fds"]:  # type: ignore[union-attr]
        with pytest.raises(OSError):
            os.fstat(fd)  # closed again


def test_execute_unload_and_errno(kernel: Path) -> None:
    calls: list[tuple] = []

    def fake(nr: int, *args) -> tuple[int, int]:
        calls.append((nr, *[getattr(a, "value", a) for a in args]))
        return -1, errno.EADDRNOTAVAIL

    with pytest.raises(KexecError, match="no memory is reserved for a crash kernel") as info:
        execute(plan_load(kernel, None, "", crash=True), syscall=fake, machine="aarch64")
    assert isinstance(info.value, DumpfilterError)
    assert calls[0][0] == 294 and calls[0][2] == -1  # arm64 number, no initrd
    calls.clear()
    with pytest.raises(KexecError):
        execute(plan_unload(crash=True), syscall=fake, machine="x86_64")
    assert calls[0] == (320, -1, -1, 0, None, KEXEC_FILE_UNLOAD | KEXEC_FILE_ON_CRASH)


def test_execute_unknown_machine(kernel: Path) -> None:
    with pytest.raises(KexecError, match="not available on armv7l"):
        execute(plan_unload(crash=True), syscall=lambda *a: (0, 0), machine="armv7l")


# --- refusing real loads ------------------------------------------------------------------------------


def test_real_load_is_refused_without_the_env_var(fakeroot: Path, kernel: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert os.environ.get("PYKEXEC_ALLOW_REAL") is None
    assert main(["-p", str(kernel)]) == 1  # the autouse fixture would fail the test if the syscall ran
    err = capsys.readouterr().err
    assert "refusing to call kexec_file_load" in err and "PYKEXEC_ALLOW_REAL=1" in err
    assert main(["-u", "-p"]) == 1
    assert "refusing" in capsys.readouterr().err


def test_execute_without_fake_is_gated(kernel: Path) -> None:
    with pytest.raises(KexecError, match="refusing"):
        execute(plan_load(kernel, None, "", crash=True))


def test_module_entry_point_refuses_too(kernel: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYKEXEC_ALLOW_REAL"}
    env[sysroot.ENV] = str(tmp_path)  # a fake root is a second reason to refuse
    r = subprocess.run(
        [sys.executable, "-m", "dumpfilter.kexec.loader", "-p", str(kernel), "--append", "x"],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert r.returncode == 1 and "refusing" in r.stderr


# --- --status ---------------------------------------------------------------------------------------


def test_status_reads_sysfs(fakeroot: Path, capsys: pytest.CaptureFixture[str]) -> None:
    k = fakeroot / "sys/kernel"
    (k / "kexec_loaded").write_text("0\n")
    (k / "kexec_crash_loaded").write_text("1\n")
    (k / "kexec_crash_size").write_text("268435456\n")
    assert main(["--status"]) == 0
    out = capsys.readouterr().out
    assert "kexec_crash_loaded: 1" in out and "kexec_loaded:       0" in out and "268435456 (256M)" in out
    (k / "kexec_crash_loaded").write_text("0\n")
    assert main(["-S"]) == 1


def test_status_without_sysfs_files(fakeroot: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--status"]) == 1
    assert "unknown" in capsys.readouterr().out
