"""pykexec for Image kernels (the 64-bit Arm machines) without a machine to load them on: the Image
header and its packings, the device tree codec, the capture kernel's /chosen, the ELF core header,
the purgatory, the segment layout, --dry-run on a fake /proc and /sys, and the system calls made
through a fake ``syscall`` (kexec_file_load first, kexec_load when the kernel has none)."""
from __future__ import annotations

import ctypes
import errno
import gzip
import lzma
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from dumpfilter.kexec import kexec_load as KL
from dumpfilter.kexec.fdt import Fdt, FdtError, cells
from dumpfilter.kexec.image import ImageError, probe, unpack
from dumpfilter.kernel.arch.machines import machine
from dumpfilter.kernel.vmcoreinfo import VmcoreInfo

AA64 = machine("aarch64")
M64 = (1 << 64) - 1
MiB = 1 << 20
BANNER = b"Linux version 6.1.0-99-test-arm64 (builder@debian) #1 SMP Debian 6.1.0-99\n"


def image_bytes(text_offset: int = 0, image_size: int = 3 * MiB, flags: int = 0b1010, size: int = 1 * MiB) -> bytes:
    head = struct.pack("<IIQQQQQQII", 0x91005A4D, 0x14000000, text_offset, image_size, flags, 0, 0, 0,
                       0x644D5241, 0x40)
    body = bytearray(size - len(head))
    body[1000 : 1000 + len(BANNER)] = BANNER
    return head + bytes(body)


# --- the Image ------------------------------------------------------------------------------------


def test_plain_gzip_and_zboot_images(tmp_path):
    raw = image_bytes()
    forms = {"plain": raw, "gzip": gzip.compress(raw)}
    for method, payload in (("gzip", gzip.compress(raw)), ("xzkern", lzma.compress(raw, format=lzma.FORMAT_XZ))):
        head = bytearray(64)
        head[0:2], head[4:8] = b"MZ", b"zimg"
        struct.pack_into("<II", head, 8, 64, len(payload))
        head[24 : 24 + len(method)] = method.encode()
        forms[f"zboot-{method}"] = bytes(head) + payload
    for name, data in forms.items():
        p = tmp_path / name
        p.write_bytes(data)
        img = probe(p)
        assert img.data == raw, name
        assert img.text_offset == 0 and img.image_size == 3 * MiB and img.page_size == 4096 and img.anywhere
        assert img.version_string == BANNER.decode().strip()
        assert (img.packing == "none") == (name == "plain")
        assert "Image" in img.describe()


def test_old_image_without_size_and_refusals(tmp_path):
    old = tmp_path / "old"
    old.write_bytes(image_bytes(text_offset=0x12345, image_size=0))
    img = probe(old)
    assert img.text_offset == 0x80000 and img.image_size == len(old.read_bytes())  # pre-3.17 rules
    bad = tmp_path / "bad"
    bad.write_bytes(b"\0" * 4096)
    with pytest.raises(ImageError, match="neither a kernel Image"):
        probe(bad)
    be = tmp_path / "be"
    be.write_bytes(image_bytes(flags=1))
    with pytest.raises(ImageError, match="big-endian"):
        probe(be)
    head = bytearray(64)
    head[0:2], head[4:8] = b"MZ", b"zimg"
    struct.pack_into("<II", head, 8, 64, 16)
    head[24:28] = b"lz77"
    with pytest.raises(ImageError, match="lz77"):
        unpack(bytes(head) + b"\0" * 16, "z")
    with pytest.raises(ImageError, match="cannot read"):
        probe(tmp_path / "missing")


# --- the device tree ------------------------------------------------------------------------------


def _dtb(tree: list, strings_first: bool = False) -> bytes:
    """An independent, minimal DTB encoder (Devicetree Specification ch. 5) for the tests."""
    strings = bytearray()
    offs: dict[str, int] = {}
    blk = bytearray()

    def pad(b: bytes) -> bytes:
        return b + b"\0" * (-len(b) % 4)

    def node(name: str, props: dict, children: list) -> None:
        blk.extend(struct.pack(">I", 1) + pad(name.encode() + b"\0"))
        for k, v in props.items():
            if k not in offs:
                offs[k] = len(strings)
                strings.extend(k.encode() + b"\0")
            blk.extend(struct.pack(">III", 3, len(v), offs[k]) + pad(v))
        for c in children:
            node(*c)
        blk.extend(struct.pack(">I", 2))

    node(*tree)
    blk.extend(struct.pack(">I", 9))
    rsv = struct.pack(">QQQQ", 0x48000000, 0x1000, 0, 0)
    off_rsv = 40
    off_struct = off_rsv + len(rsv)
    off_str = off_struct + len(blk)
    total = off_str + len(strings)
    head = struct.pack(">10I", 0xD00DFEED, total, off_struct, off_str, off_rsv, 17, 16, 0, len(strings), len(blk))
    return head + rsv + bytes(blk) + bytes(strings)


TREE = ("", {"#address-cells": struct.pack(">I", 2), "#size-cells": struct.pack(">I", 2),
             "compatible": b"linux,dummy-virt\0"},
        [("memory@40000000", {"device_type": b"memory\0", "reg": struct.pack(">QQ", 0x40000000, 1 << 30)}, []),
         ("chosen", {"bootargs": b"console=ttyAMA0\0", "kaslr-seed": b"\0" * 8,
                     "linux,elfcorehdr": b"\1" * 16}, [])])


def test_fdt_round_trip(tmp_path):
    blob = _dtb(TREE)
    f = Fdt.parse(blob)
    assert f.reserve == [(0x48000000, 0x1000)]
    assert f.node("/memory@40000000").props["reg"] == struct.pack(">QQ", 0x40000000, 1 << 30)
    assert f.node("/chosen").props["bootargs"] == b"console=ttyAMA0\0"
    out = f.to_bytes()
    g = Fdt.parse(out)
    assert g.to_bytes() == out and g.reserve == f.reserve
    assert g.node("/chosen").props == f.node("/chosen").props
    if shutil.which("dtc"):  # and dtc reads it the same
        (tmp_path / "a.dtb").write_bytes(blob)
        (tmp_path / "b.dtb").write_bytes(out)
        a = subprocess.run(["dtc", "-q", "-I", "dtb", "-O", "dts", str(tmp_path / "a.dtb")], capture_output=True)
        b = subprocess.run(["dtc", "-q", "-I", "dtb", "-O", "dts", str(tmp_path / "b.dtb")], capture_output=True)
        assert a.returncode == b.returncode == 0 and a.stdout == b.stdout
    with pytest.raises(FdtError, match="magic"):
        Fdt.parse(b"\0" * 64)
    assert cells([0x1_0000_0000, 5], 2) == struct.pack(">QQ", 1 << 32, 5)
    with pytest.raises(FdtError):
        cells([1 << 32], 1)


def test_second_dtb_chosen():
    blob = KL.second_dtb(_dtb(TREE), "console=ttyAMA0 irqpoll", (0x6C000000, 0x6C100000), (0x6C200000, 0x6C200190),
                         ((0x6AC00000, 0x7AC00000), (0x3000000, 0x4000000)))
    c = Fdt.parse(blob).node("/chosen").props
    assert c["bootargs"] == b"console=ttyAMA0 irqpoll\0"
    assert struct.unpack(">Q", c["linux,initrd-start"])[0] == 0x6C000000
    assert struct.unpack(">Q", c["linux,initrd-end"])[0] == 0x6C100000
    assert struct.unpack(">QQ", c["linux,elfcorehdr"]) == (0x6C200000, 0x190)  # 2 + 2 cells
    assert struct.unpack(">4Q", c["linux,usable-memory-range"]) == (0x6AC00000, 0x10000000, 0x3000000, 0x1000000)
    assert len(c["kaslr-seed"]) == 8 and c["kaslr-seed"] != b"\0" * 8  # refilled
    # a root with one address cell and one size cell, no /chosen yet
    small = ("", {"#address-cells": struct.pack(">I", 1), "#size-cells": struct.pack(">I", 1)}, [])
    c = Fdt.parse(KL.second_dtb(_dtb(small), "x", None, (0x100000, 0x100100), ((0x80000000, 0x90000000),))) \
        .node("/chosen").props
    assert struct.unpack(">II", c["linux,elfcorehdr"]) == (0x100000, 0x100)
    assert "linux,initrd-start" not in c


# --- the ELF core header, the purgatory, the layout -----------------------------------------------

VMCI_61 = ("OSRELEASE=6.1.0-99-test-arm64\nPAGESIZE=4096\nSYMBOL(_stext)=ffffd42356810000\n"
           "NUMBER(VA_BITS)=48\nNUMBER(kimage_voffset)=0xffffd42316600000\nNUMBER(PHYS_OFFSET)=0x40000000\n"
           "NUMBER(TCR_EL1_T1SZ)=0x10\n")
VMCI_52_ON_48 = ("OSRELEASE=6.12.0-99-test-arm64\nPAGESIZE=4096\nSYMBOL(_stext)=ffffcecf4f810000\n"
                 "NUMBER(VA_BITS)=52\nNUMBER(kimage_voffset)=0xffffcecf0f600000\n"
                 "NUMBER(PHYS_OFFSET)=0xfff1000040000000\nNUMBER(TCR_EL1_T1SZ)=0x10\nNUMBER(MAX_PHYSMEM_BITS)=48\n")


def facts(vmci: str = VMCI_61, crash=((0x6AC00000, 0x7AC00000),), fdt: bytes | None = None) -> KL.SystemFacts:
    return KL.SystemFacts(ram=((0x40000000, 0x80000000),), crash=crash, kernel_image=(0x40210000, 0x41CB0000),
                          cpu_notes=((0x7FD00000, 432), (0x7FD01000, 432)), vmcoreinfo_note=(0x41C33000, 0x1024),
                          vmcoreinfo=VmcoreInfo.parse(vmci.encode()), fdt=fdt if fdt is not None else _dtb(TREE))


def _phdrs(hdr: bytes) -> list[tuple[int, ...]]:
    assert hdr[:4] == b"\x7fELF" and hdr[4] == 2 and hdr[5] == 1
    e_type, e_machine = struct.unpack_from("<HH", hdr, 16)
    assert (e_type, e_machine) == (4, 183)
    phoff, = struct.unpack_from("<Q", hdr, 32)
    phentsize, phnum = struct.unpack_from("<HH", hdr, 54)
    return [struct.unpack_from("<IIQQQQQQ", hdr, phoff + i * phentsize) for i in range(phnum)]


@pytest.mark.parametrize("vmci,linear_base", [(VMCI_61, 0xFFFF000000000000), (VMCI_52_ON_48, 0xFFFF000000000000)])
def test_elf_core_header(vmci, linear_base):
    ph = _phdrs(KL.elf_core_header(facts(vmci), AA64))
    notes = [p for p in ph if p[0] == 4]
    loads = [p for p in ph if p[0] == 1]
    assert [(p[2], p[5]) for p in notes] == [(0x7FD00000, 432), (0x7FD01000, 432), (0x41C33000, 0x1024)]
    voff = VmcoreInfo.parse(vmci.encode()).number["kimage_voffset"]
    text = loads[0]
    assert (text[2], text[4], text[5]) == (0x40210000, 0x40210000, 0x41CB0000 - 0x40210000)
    assert text[3] == (0x40210000 + voff) & M64
    # System RAM minus the crash region, at linear-map addresses (p_offset = p_paddr = physical)
    assert [(p[4], p[4] + p[5]) for p in loads[1:]] == [(0x40000000, 0x6AC00000), (0x7AC00000, 0x80000000)]
    for p in loads[1:]:
        assert p[2] == p[4] and p[3] == linear_base + p[4] - 0x40000000


def test_purgatory_sets_x0_and_branches():
    code = KL.purgatory(0x6C7B0000, 0x6AC00000)
    words = struct.unpack_from("<6I", code)
    dtb, entry = struct.unpack_from("<QQ", code, 24)
    assert (dtb, entry) == (0x6C7B0000, 0x6AC00000) and len(code) == 40

    def ldr_literal(word: int, pc: int) -> tuple[int, int]:
        assert word & 0xFF000000 == 0x58000000  # LDR (literal), 64-bit
        return word & 0x1F, pc + ((word >> 5) & 0x7FFFF) * 4

    assert ldr_literal(words[0], 0) == (0, 24)  # x0 <- [24] = dtb
    assert words[1:4] == (0xAA1F03E1, 0xAA1F03E2, 0xAA1F03E3)  # mov x1..x3, xzr
    assert ldr_literal(words[4], 16) == (4, 32)  # x4 <- [32] = entry
    assert words[5] == 0xD61F0000 | (4 << 5)  # br x4


def test_segments_fill_the_crash_region_in_order(tmp_path):
    p = tmp_path / "Image"
    p.write_bytes(image_bytes(text_offset=0x80000, image_size=30 * MiB + 5))
    img = probe(p)
    initrd = os.urandom(3 * MiB + 7)
    plan = KL.plan_crash_load(img, initrd, "console=ttyAMA0 irqpoll", facts(), AA64)
    segs = {s.what: s for s in plan.segments}
    assert list(segs) == ["kernel", "initrd", "dtb", "elfcorehdr", "purgatory"]
    assert segs["kernel"].mem == 0x6AC00000 + 0x80000 and segs["kernel"].memsz >= 30 * MiB + 5
    prev_end = 0
    for s in plan.segments:
        assert s.mem % 0x10000 == 0 and s.memsz % 0x10000 == 0 and len(s.data) <= s.memsz
        assert 0x6AC00000 <= s.mem and s.mem + s.memsz <= 0x7AC00000 and s.mem >= prev_end
        prev_end = s.mem + s.memsz
    assert plan.entry == segs["purgatory"].mem and plan.flags == 1 | 183 << 16
    chosen = Fdt.parse(segs["dtb"].data).node("/chosen").props
    assert struct.unpack(">QQ", chosen["linux,elfcorehdr"]) == (segs["elfcorehdr"].mem, len(segs["elfcorehdr"].data))
    assert struct.unpack(">Q", chosen["linux,initrd-start"])[0] == segs["initrd"].mem
    assert struct.unpack(">Q", chosen["linux,initrd-end"])[0] == segs["initrd"].mem + len(initrd)
    assert struct.unpack_from("<QQ", segs["purgatory"].data, 24) == (segs["dtb"].mem, segs["kernel"].mem)
    text = "\n".join(plan.describe()) + plan.syscall_text()
    assert "elfcorehdr" in text and "KEXEC_ARCH(183)" in text
    # the highest region is crashk_res when there are two (,high)
    two = KL.plan_crash_load(img, None, "x", facts(crash=((0x3000000, 0x4000000), (0x6AC00000, 0x7AC00000))), AA64)
    assert two.region == (0x6AC00000, 0x7AC00000)
    with pytest.raises(KL.LoadError, match="too small"):
        KL.plan_crash_load(img, initrd, "x", facts(crash=((0x6AC00000, 0x6C800000),)), AA64)
    with pytest.raises(KL.LoadError, match="no memory is reserved"):
        KL.plan_crash_load(img, initrd, "x", facts(crash=()), AA64)
    with pytest.raises(KL.LoadError, match="VMCOREINFO"):
        KL.plan_crash_load(img, None, "x", KL.SystemFacts(**{**facts().__dict__, "vmcoreinfo": None}), AA64)


# --- pykexec on a fake /proc and /sys ------------------------------------------------------------


def fake_root(tmp_path: Path, kexec_file: bool | None = None) -> Path:
    root = tmp_path / "root"
    (root / "proc").mkdir(parents=True)
    (root / "proc/iomem").write_text(
        "09000000-09000fff : pl011@9000000\n40000000-7fffffff : System RAM\n  40210000-4158ffff : Kernel code\n"
        "  41590000-41a0ffff : reserved\n  41a10000-41caffff : Kernel data\n  6ac00000-7abfffff : Crash kernel\n")
    (root / "proc/cmdline").write_text("console=ttyAMA0 root=/dev/vda crashkernel=256M\n")
    (root / "sys/firmware").mkdir(parents=True)
    (root / "sys/firmware/fdt").write_bytes(_dtb(TREE))
    (root / "sys/kernel").mkdir(parents=True)
    (root / "sys/kernel/vmcoreinfo").write_text("41c33000 1024\n")
    for c in range(2):
        d = root / f"sys/devices/system/cpu/cpu{c}"
        d.mkdir(parents=True)
        (d / "crash_notes").write_text(f"{0x7FD00000 + c * 0x1000:x}\n")
        (d / "crash_notes_size").write_text("432\n")
    desc = VMCI_61.encode()
    note = struct.pack("<III", 11, len(desc), 0) + b"VMCOREINFO\0\0" + desc + b"\0" * (-len(desc) % 4)
    ehdr = b"\x7fELF" + bytes([2, 1, 1, 0]) + b"\0" * 8 + struct.pack("<HHIQQQIHHHHHH", 4, 183, 1, 0, 64, 0, 0, 64,
                                                                     56, 1, 0, 0, 0)
    (root / "proc/kcore").write_bytes(ehdr + struct.pack("<IIQQQQQQ", 4, 0, 120, 0, 0, len(note), 0, 0) + note)
    if kexec_file is not None:
        (root / "boot").mkdir()
        (root / f"boot/config-{os.uname().release}").write_text(
            "CONFIG_KEXEC=y\n" + ("CONFIG_KEXEC_FILE=y\n" if kexec_file else "# CONFIG_KEXEC_FILE is not set\n"))
    return root


def _pykexec(monkeypatch, capsys, root: Path, argv: list[str]) -> tuple[int, str, str]:
    from dumpfilter.kexec import loader

    monkeypatch.setenv("DUMPFILTER_SYSROOT", str(root))
    rc = loader.main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_dry_run_without_kexec_file_shows_the_segments(tmp_path, monkeypatch, capsys):
    (tmp_path / "Image").write_bytes(gzip.compress(image_bytes()))
    (tmp_path / "initrd").write_bytes(b"initrd" * 1000)
    root = fake_root(tmp_path, kexec_file=False)
    rc, out, err = _pykexec(monkeypatch, capsys, root, ["--arch", "aarch64", "--dry-run", "-p", str(tmp_path / "Image"),
                                                        "--initrd", str(tmp_path / "initrd")])
    assert rc == 0, err
    assert "Image unpacked from gzip" in out and "Linux version 6.1.0-99-test-arm64" in out
    assert "cmdline: console=ttyAMA0 root=/dev/vda irqpoll nr_cpus=1 reset_devices cgroup_disable=memory udev.children-max=2 panic=10 swiotlb=noforce novmcoredd cma=0 hugetlb_cma=0 kfence.sample_interval=0\n" in out
    assert "no kexec_file_load" in out and "kexec_file_load(" not in out
    for what in ("kernel", "initrd", "dtb", "elfcorehdr", "purgatory"):
        assert f"  {what} " in out
    assert "would call: kexec_load(entry=" in out and "KEXEC_ON_CRASH|KEXEC_ARCH(183)" in out
    # with kexec_file_load in the kernel only that call is shown
    root2 = fake_root(tmp_path / "b", kexec_file=True)
    rc, out, err = _pykexec(monkeypatch, capsys, root2, ["--arch", "aarch64", "--dry-run", "-p", str(tmp_path / "Image")])
    assert rc == 0 and "kexec_file_load(kernel_fd=memfd" in out and "kexec_load(" not in out
    assert "KEXEC_FILE_NO_INITRAMFS" in out
    rc, out, err = _pykexec(monkeypatch, capsys, root, ["--arch", "aarch64", "--dry-run", "-u", "-p"])
    assert rc == 0 and "kexec_load(entry=0, nr_segments=0" in out


def test_refusals(tmp_path, monkeypatch, capsys):
    root = fake_root(tmp_path, kexec_file=False)
    (tmp_path / "bz").write_bytes(b"\0" * 4096)
    rc, _out, err = _pykexec(monkeypatch, capsys, root, ["--arch", "aarch64", "--dry-run", "-p", str(tmp_path / "bz")])
    assert rc == 1 and "neither a kernel Image" in err
    (tmp_path / "Image").write_bytes(image_bytes())
    rc, _out, err = _pykexec(monkeypatch, capsys, root, ["--arch", "aarch64", "-p", str(tmp_path / "Image")])
    if os.uname().machine != "aarch64":
        assert rc == 1 and "--arch aarch64 is for --dry-run only" in err
    rc, out, _err = _pykexec(monkeypatch, capsys, root, ["--arch", "aarch64", "--dry-run", "-l", str(tmp_path / "Image")])
    assert rc == 0 and "needs kexec_file_load" in out


class FakeSyscalls:
    """Records each call; kexec_file_load (294) answers ``file_errno``, kexec_load (104) succeeds."""

    def __init__(self, file_errno: int) -> None:
        self.file_errno = file_errno
        self.calls: list[tuple[int, tuple]] = []
        self.segments: list[tuple[bytes, int, int]] = []

    def __call__(self, nr: int, *args: object) -> tuple[int, int]:
        self.calls.append((nr, args))
        if nr == 294:
            return (-1, self.file_errno) if self.file_errno else (0, 0)
        if nr == 104 and args[2] is not None:
            n = args[1].value
            arr = ctypes.cast(args[2], ctypes.POINTER(KL._KexecSegment))
            for i in range(n):
                s = arr[i]
                self.segments.append((ctypes.string_at(s.buf, s.bufsz), s.mem, s.memsz))
        return 0, 0


@pytest.mark.parametrize("file_errno", [errno.ENOSYS, 0])
def test_load_falls_back_to_kexec_load(tmp_path, monkeypatch, capsys, file_errno):
    from dumpfilter.kexec import loader

    (tmp_path / "Image").write_bytes(image_bytes())
    (tmp_path / "initrd").write_bytes(b"I" * 5000)
    monkeypatch.setenv("DUMPFILTER_SYSROOT", str(fake_root(tmp_path)))  # CONFIG_KEXEC_FILE unknown
    fake = FakeSyscalls(file_errno)
    args = loader._parser().parse_args(["-p", str(tmp_path / "Image"), "--initrd", str(tmp_path / "initrd")])
    assert KL.run_image(args, AA64, syscall=fake) == 0
    out = capsys.readouterr().out
    assert fake.calls[0][0] == 294  # kexec_file_load first
    if file_errno:
        assert [c[0] for c in fake.calls] == [294, 104] and "kexec_load, 5 segments" in out
        entry, nseg, _arr, flags = fake.calls[1][1]
        assert nseg.value == 5 and flags.value == 1 | 183 << 16
        kernel, initrd = fake.segments[0], fake.segments[1]
        assert kernel[0] == image_bytes() and kernel[1] == 0x6AC00000
        assert initrd[0] == b"I" * 5000
        assert entry.value == fake.segments[4][1]  # the purgatory
    else:
        assert [c[0] for c in fake.calls] == [294] and "(kexec_file_load)" in out
        assert fake.calls[0][1][3].value == b"console=ttyAMA0 root=/dev/vda irqpoll nr_cpus=1 reset_devices cgroup_disable=memory udev.children-max=2 panic=10 swiotlb=noforce novmcoredd cma=0 hugetlb_cma=0 kfence.sample_interval=0"


def test_unload_and_errors(tmp_path, monkeypatch, capsys):
    from dumpfilter.kexec import loader

    monkeypatch.setenv("DUMPFILTER_SYSROOT", str(fake_root(tmp_path, kexec_file=False)))
    fake = FakeSyscalls(errno.ENOSYS)
    assert KL.run_image(loader._parser().parse_args(["-u", "-p"]), AA64, syscall=fake) == 0
    assert [c[0] for c in fake.calls] == [104] and fake.calls[0][1][3].value == 1 | 183 << 16
    (tmp_path / "Image").write_bytes(image_bytes())

    def eperm(nr: int, *a: object) -> tuple[int, int]:
        return -1, errno.EPERM

    with pytest.raises(loader.KexecError, match="kexec_load failed: permission denied"):
        KL.run_image(loader._parser().parse_args(["-p", str(tmp_path / "Image")]), AA64, syscall=eperm)


# --- pykdumpctl crashkernel --arch aarch64 --------------------------------------------------------


def test_crashkernel_rules_of_the_machine():
    from dumpfilter.kexec.crashkernel import reservation

    G = 1 << 30
    r = reservation("512M,high", 8 * G, arch="aarch64")
    assert r.high and r.low_size == 128 * MiB  # DEFAULT_CRASH_KERNEL_LOW_SIZE (x86: >= 256M)
    assert "above the DMA limit first" in r.describe()[0] and any("ZONE_DMA" in n for n in r.notes)
    r = reservation("512M", 8 * G, arch="aarch64")
    assert r.fallback_low_size == 128 * MiB and "below the DMA limit if it fits" in r.describe()[0]
    # CRASH_ALIGN is 2M (the boot protocol), not x86's 16M
    assert not any("aligned" in n for n in reservation("256M@0x60200000", 8 * G, arch="aarch64").notes)
    assert any("16M-aligned" in n for n in reservation("256M@0x60200000", 8 * G, arch="x86_64").notes)
    assert reservation("2G-4G:256M,4G-64G:320M,64G-:576M", 8 * G, arch="aarch64").size == 320 * MiB
    assert reservation("512M,high", 8 * G, arch="x86_64").low_size == 256 * MiB


def test_dry_run_reports_the_capture_line_changes(tmp_path, monkeypatch, capsys):
    """--reuse-cmdline on arm64: the running line loses what kdump-utils removes there (and --remove's
    names), gains its additions, and pykexec says which."""
    (tmp_path / "Image").write_bytes(gzip.compress(image_bytes()))
    root = fake_root(tmp_path, kexec_file=True)
    (root / "proc/cmdline").write_text("BOOT_IMAGE=/vmlinuz console=ttyAMA0 root=/dev/vda quiet cma=64M "
                                       "rd.lvm.lv=vg/root crashkernel=256M\n")
    rc, out, err = _pykexec(monkeypatch, capsys, root, ["--arch", "aarch64", "--dry-run", "-p", str(tmp_path / "Image"),
                                                        "--reuse-cmdline", "--remove", "rd.lvm.lv"])
    assert rc == 0, err
    assert "removed: quiet cma=64M rd.lvm.lv=vg/root crashkernel=256M\n" in out
    assert "added:   irqpoll nr_cpus=1 reset_devices cgroup_disable=memory" in out
    line = next(x for x in out.splitlines() if x.startswith("cmdline: ")).split()[1:]
    assert line[:2] == ["console=ttyAMA0", "root=/dev/vda"] and "cma=0" in line and "swiotlb=noforce" in line
