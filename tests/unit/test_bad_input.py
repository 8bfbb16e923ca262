"""Bad input: one clear line on stderr, exit 1, fast, and no output that looks complete."""
from __future__ import annotations

import os
import struct

import pytest

from fixtures import synthetic as S
from tests.helpers import error_lines, run

MAKERS = {
    "not_a_vmcore": lambda src, dst: S.make_not_a_vmcore(dst),
    "truncated_headers": S.make_truncated_headers,
    "truncated_notes": S.make_truncated_notes,
    "load_past_eof": S.make_load_past_eof,
    "bad_note_sizes": S.make_bad_note_sizes,
    "phnum_huge": S.make_phnum_huge,
    "phoff_beyond_eof": S.make_phoff_beyond_eof,
    "empty": lambda src, dst: open(dst, "wb").close(),
}

EXPECT = {
    "not_a_vmcore": b"not a vmcore",
    "truncated_headers": b"truncated",
    "truncated_notes": b"truncated",
    "load_past_eof": b"past the end of the file",
    "bad_note_sizes": b"truncated or corrupt",
    "phnum_huge": b"PN_XNUM",
    "phoff_beyond_eof": b"past the end of the file",
    "empty": b"empty",
}


def _one_line_error(r, usage: bool = False):
    """Exit 1; one clear line, then (usage errors) "Try `pydumpfile --help' ...", then "pydumpfile Failed."."""
    assert r.returncode == 1, r.stderr.decode()
    lines = error_lines(r.stderr, usage=usage)
    assert len(lines) == 1, lines
    assert lines[0].startswith("pydumpfile: ")
    assert b"Traceback" not in r.stderr


@pytest.mark.parametrize("kind", list(MAKERS))
@pytest.mark.parametrize("mode", [[], ["-E"], ["-F"]])
def test_bad_vmcore(synth, tmp_path, kind, mode):
    bad = tmp_path / kind
    MAKERS[kind](synth.path, bad)
    out = tmp_path / "out"
    r = run(mode + ["-d", "1", bad] + ([] if mode == ["-F"] else [out]))
    _one_line_error(r)
    assert EXPECT[kind] in r.stderr, r.stderr
    assert not out.exists()
    if mode == ["-F"]:
        assert r.stdout == b""


def _kdump_of(synth, tmp_path):
    kd = tmp_path / "good.kd"
    assert run(["-l", "-d", "1", synth.path, kd]).returncode == 0
    return kd.read_bytes()


@pytest.mark.parametrize(
    "patch,needle",
    [
        (lambda b: b[:8] + b"\x00" * 100 + b[108:], b"invalid kdump header"),  # header_version 0 etc.
        (lambda b: b[:428] + struct.pack("<i", 12345) + b[432:], b"block_size"),
        (lambda b: b[:436] + struct.pack("<I", 0) + b[440:], b"bitmap_blocks"),
        (lambda b: b[:4096 + 96] + struct.pack("<Q", 1 << 50) + b[4096 + 104 :], b"max_mapnr"),
        (lambda b: b[:300], b"truncated"),
        (lambda b: b[: len(b) // 2], b"past the end"),
    ],
)
def test_garbage_kdump_header(synth, tmp_path, patch, needle):
    bad = tmp_path / "bad.kd"
    raw = _kdump_of(synth, tmp_path)
    bad.write_bytes(patch(raw))
    out = tmp_path / "out"
    r = run(["-d", "1", bad, out])
    if needle == b"past the end" and r.returncode == 0:
        pytest.fail("a kdump file cut in half was accepted")
    _one_line_error(r)
    assert needle in r.stderr, r.stderr
    assert not out.exists()


def _flat_stream(synth):
    r = run(["-F", "-l", "-d", "1", synth.path])
    assert r.returncode == 0
    return r.stdout


@pytest.mark.parametrize(
    "mangle,needle",
    [
        (lambda s: b"makedumpfilX" + s[12:], b"wrong signature"),
        (lambda s: s[:100], b"truncated in its header"),
        (lambda s: s[: len(s) // 2], b"truncated"),
        (lambda s: s[:-16], b"no end marker"),
        (lambda s: s[:4096] + struct.pack(">qq", 1 << 48, 16) + b"x" * 16 + s[4096:], b"implausible offset"),
        (lambda s: s[:4096] + struct.pack(">qq", -5, 16) + b"x" * 16 + s[4096:], b"invalid record"),
        (lambda s: s[:4096] + struct.pack(">qq", 0, 1 << 40) + s[4096:], b"implausible"),
        (lambda s: s[:4096] + struct.pack(">qq", -1, 0), b"invalid record"),
    ],
)
def test_bad_flattened_stream(synth, tmp_path, mangle, needle):
    stream = mangle(_flat_stream(synth))
    out = tmp_path / "out"
    r = run(["-R", out], stdin=stream, timeout=30)
    _one_line_error(r)
    assert needle in r.stderr, r.stderr
    if out.exists() and out.stat().st_size >= 464:
        raw = out.read_bytes()
        if raw[:8] == b"KDUMP   ":
            assert struct.unpack_from("<I", raw, 424)[0] & 0x8, "a failed -R left a file without the incomplete mark"


def test_rearrange_of_makedumpfile_style_stream_keeps_mark_until_end(synth, tmp_path):
    """A stream whose header record comes first (as makedumpfile writes it), cut short."""
    direct = tmp_path / "direct"
    assert run(["-l", "-d", "1", synth.path, direct]).returncode == 0
    raw = direct.read_bytes()
    import io

    s = io.BytesIO()
    s.write(b"makedumpfile".ljust(16, b"\0") + struct.pack(">qq", 1, 1))
    s.write(b"\0" * (4096 - 32))
    s.write(struct.pack(">qq", 0, 4096) + raw[:4096])
    s.write(struct.pack(">qq", 4096, len(raw) // 2 - 4096) + raw[4096 : len(raw) // 2])
    out = tmp_path / "out"
    r = run(["-R", out], stdin=s.getvalue())
    assert r.returncode == 1
    assert struct.unpack_from("<I", out.read_bytes(), 424)[0] & 0x8
    s.write(struct.pack(">qq", len(raw) // 2, len(raw) - len(raw) // 2) + raw[len(raw) // 2 :])
    s.write(b"\xff" * 16)
    r = run(["-R", "-f", out], stdin=s.getvalue())
    assert r.returncode == 0
    assert out.read_bytes() == raw


@pytest.mark.parametrize(
    "args,needle",
    [
        (["-d", "32"], b"Dump_level(32) is invalid."),
        (["-d", "x"], b"Dump_level(x) is invalid."),
        (["-L", "12Q"], b"Limit size(12Q) is invalid."),
        (["--message-level", "99"], b"Message_level(99) is invalid."),
        (["--bogus"], b"Commandline parameter is invalid"),
    ],
)
def test_usage_errors(synth, tmp_path, args, needle):
    r = run(args + [synth.path, tmp_path / "o"])
    _one_line_error(r, usage=True)  # as makedumpfile: the line, then "Try `pydumpfile --help' ..."
    assert needle in r.stderr
    assert r.stderr.decode().endswith("\nTry `pydumpfile --help' for more information.\n\npydumpfile Failed.\n")


def test_missing_input(tmp_path):
    r = run([tmp_path / "nope", tmp_path / "o"])
    assert r.returncode == 1 and b"No such file" in r.stderr
    assert len(error_lines(r.stderr)) == 1  # no "Try ..." line: not a usage error
    assert not (tmp_path / "o").exists()
