"""--dump-dmesg on real vmcores (Debian 6.1, 6.12 and 7.x under QEMU, crashed with sysrq-c).

Oracles: the serial console of the crashed kernel (every line it printed must be in our log, with
the same timestamp), and Debian's makedumpfile 1.7.2 (byte-identical once our caller-id column,
which makedumpfile prints only since 1.7.5, is left out)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

import dumpfilter
from dumpfilter.kernel.dmesg import dump_dmesg
from dumpfilter.kernel.vmcoreinfo import VmcoreInfo
from tests.helpers import error_lines, file_mode, makedumpfile, run

CONSOLE_LINE = re.compile(rb"\[\s*(\d+\.\d{6})\] (.*)")
OUR_LINE = re.compile(rb"\[\s*(\d+\.\d{6})\] \[ *[TC]\d+\] (.*)")
INDENT = 26  # "[%5lld.%06ld] [%8s] "


def first_kernel_console(console: Path, whole: bool = False) -> set[tuple[bytes, bytes]]:
    """(timestamp, text) of every kernel message on the console before the capture kernel's banner."""
    lines = console.read_bytes().split(b"\n")
    banners = [i for i, line in enumerate(lines) if b"] Linux version " in line]
    assert banners, "no kernel banner on the console"
    if not whole:
        assert len(banners) >= 2, "the capture kernel's banner is missing from the console"
        lines = lines[: banners[1]]
    out = set()
    for line in lines:
        m = CONSOLE_LINE.search(line)  # the first banner follows BIOS escape sequences on its line
        if m and all(0x20 <= b < 0x7F or b == 9 for b in m.group(2).rstrip(b"\r")):
            out.add((m.group(1), m.group(2).rstrip(b"\r").rstrip()))
    return out


def our_messages(text: bytes) -> set[tuple[bytes, bytes]]:
    """(timestamp, line) for every line of every record, continuation lines included."""
    out, ts = set(), None
    for line in text.split(b"\n"):
        m = OUR_LINE.match(line)
        if m:
            ts = m.group(1)
            out.add((ts, m.group(2).rstrip()))
        elif line.startswith(b" " * INDENT) and ts is not None:
            out.add((ts, line[INDENT:].rstrip()))
        else:
            assert line == b"", f"unexpected line {line!r}"
    return out


def strip_caller(text: bytes) -> bytes:
    """Our output as makedumpfile < 1.7.5 writes it: no caller column, 15-column indent."""
    out = []
    for line in text.split(b"\n"):
        m = re.match(rb"(\[[ \d]+\.\d{6}\] )\[ *[TC]\d+\] ", line)
        if m:
            out.append(m.group(1) + line[m.end():])
        elif line.startswith(b" " * INDENT):
            out.append(line[INDENT - 15:])
        else:
            out.append(line)
    return b"\n".join(out)


def cli_dmesg(vmcore, out: Path, *extra) -> bytes:
    r = run(["--dump-dmesg", *extra, vmcore, out])
    assert r.returncode == 0, r.stderr.decode()
    assert f"The dmesg log is saved to {out}." in r.stdout.decode()
    assert file_mode(str(out)) == 0o600
    return out.read_bytes()


@pytest.fixture(params=["core_61", "core_612", "core_7x"])
def crashed(request) -> Path:
    return request.getfixturevalue(request.param)


def test_log_holds_every_console_line_of_the_crashed_kernel(crashed, tmp_path):
    text = cli_dmesg(crashed / "vmcore", tmp_path / "dmesg.txt")
    assert b"sysrq: Trigger a crash" in text
    assert b"Kernel panic - not syncing: sysrq triggered crash" in text
    ours = our_messages(text)
    console = first_kernel_console(crashed / "console.log")
    assert len(console) > 300
    missing = sorted(console - ours)
    assert not missing, f"{len(missing)} console lines missing from our log, e.g. {missing[:5]}"
    # the capture kernel's messages are not in it (same banner text, but only once)
    assert text.count(b"] Linux version ") == 1
    # and the format: every record line has the prefix with the caller column (5.10+ always)
    assert text.startswith(b"[    0.000000] [      T0] Linux version ")


def test_matches_makedumpfile_1_7_2(crashed, tmp_path):
    """Debian's makedumpfile 1.7.2 predates the caller column (1.7.5); everything else is identical.
    The kernels are built without CONFIG_PRINTK_CALLER, but 5.10+ exports
    OFFSET(printk_info.caller_id) regardless, so makedumpfile >= 1.7.5 prints the column too."""
    assert "# CONFIG_PRINTK_CALLER is not set" in (crashed / "config").read_text()
    ref = tmp_path / "mdf.txt"
    r = makedumpfile(["--dump-dmesg", crashed / "vmcore", ref])
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    assert b"The dmesg log is saved to" in r.stdout
    want = ref.read_bytes()
    ours = cli_dmesg(crashed / "vmcore", tmp_path / "ours.txt")
    assert strip_caller(ours) == want
    with dumpfilter.open(str(crashed / "vmcore")) as src:
        res = dump_dmesg(src, VmcoreInfo.parse(src.vmcoreinfo_raw), caller_column=False)
    assert res.text == want and res.kind == "lockless" and res.error is None


def test_partial_dmesg_matches_makedumpfile(core_61, tmp_path):
    """No `dmesg --clear` ran in the guest: --partial-dmesg gives the whole log, as makedumpfile's."""
    ref = tmp_path / "mdf.txt"
    r = makedumpfile(["--dump-dmesg", "--partial-dmesg", core_61 / "vmcore", ref])
    assert r.returncode == 0, r.stderr.decode()
    ours = cli_dmesg(core_61 / "vmcore", tmp_path / "ours.txt", "--partial-dmesg")
    assert strip_caller(ours) == ref.read_bytes()
    assert ours == cli_dmesg(core_61 / "vmcore", tmp_path / "full.txt")


def test_kdump_compressed_and_flattened_input(core_61, tmp_path):
    vmcore = core_61 / "vmcore"
    want = cli_dmesg(vmcore, tmp_path / "elf.txt")
    kd = tmp_path / "out.kd"
    r = run(["-l", "-d", "31", vmcore, kd])
    assert r.returncode == 0, r.stderr.decode()
    assert cli_dmesg(kd, tmp_path / "kd.txt") == want
    flat = tmp_path / "out.flat"
    r = run(["-F", "-c", "-d", "31", vmcore])
    assert r.returncode == 0, r.stderr.decode()
    flat.write_bytes(r.stdout)
    assert cli_dmesg(flat, tmp_path / "flat.txt") == want
    # makedumpfile reads the same log out of our kdump-compressed file
    ref = tmp_path / "mdf-kd.txt"
    r = makedumpfile(["--dump-dmesg", kd, ref])
    assert r.returncode == 0, r.stderr.decode()
    assert ref.read_bytes() == strip_caller(want)


def test_qemu_producer_elf(core_qemu_61, tmp_path):
    """QEMU's dump-guest-memory ELF of a live (not crashed) guest; makedumpfile 1.7.2 cannot read it."""
    text = cli_dmesg(core_qemu_61 / "vmcore", tmp_path / "dmesg.txt")
    console = first_kernel_console(core_qemu_61 / "console.log", whole=True)
    assert len(console) > 300
    missing = sorted(console - our_messages(text))
    assert not missing, f"{len(missing)} console lines missing, e.g. {missing[:5]}"
    assert b"Kernel panic" not in text


def test_existing_output_needs_force(core_61, tmp_path):
    out = tmp_path / "dmesg.txt"
    out.write_bytes(b"keep")
    r = run(["--dump-dmesg", core_61 / "vmcore", out])
    assert r.returncode == 1 and out.read_bytes() == b"keep"
    assert "already exists" in r.stderr.decode() and len(error_lines(r.stderr)) == 1
    assert cli_dmesg(core_61 / "vmcore", out, "-f").startswith(b"[    0.000000] ")


def test_missing_vmcoreinfo_keys_give_one_line(core_61, tmp_path):
    """A -i VMCOREINFO file without the printk keys: one error line naming what is missing."""
    with dumpfilter.open(str(core_61 / "vmcore")) as src:
        raw = src.vmcoreinfo_raw.split(b"\0")[0]
    lines = [l for l in raw.split(b"\n") if not l.startswith((b"OFFSET(prb_desc.", b"SIZE(prb_desc)"))]
    vi = tmp_path / "vmcoreinfo"
    vi.write_bytes(b"\n".join(lines))
    out = tmp_path / "dmesg.txt"
    r = run(["--dump-dmesg", "-i", vi, core_61 / "vmcore", out])
    err = "\n".join(error_lines(r.stderr))
    assert r.returncode == 1 and len(err.splitlines()) == 1, err
    assert "SIZE(prb_desc)" in err and "OFFSET(prb_desc.state_var)" in err and "OFFSET(prb_desc.text_blk_lpos)" in err
    assert not out.exists()
