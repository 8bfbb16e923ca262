"""Helpers for the hostile-input tests: run pydumpfile under a memory limit and measure it, mutate
vmcores in place (and put them back), and tell a complete-looking dump from one that is not.

Everything here reads the files with plain ``struct`` calls, not with the package under test (except
where a test needs the crashed kernel's own addresses, which only a translator can find)."""
from __future__ import annotations

import contextlib
import hashlib
import os
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import FAILED, PYDUMPFILE

PEAK_LIMIT_MIB = 64


@dataclass
class Result:
    returncode: int
    stdout: bytes
    stderr: bytes
    peak_mib: float

    @property
    def lines(self) -> list[str]:
        """stderr's lines before the closing "pydumpfile Failed." (asserted by ``assert_refused``)."""
        lines = self.stderr.decode(errors="replace").strip().splitlines()
        return "\n".join(lines[:-2] if lines[-2:] == ["", FAILED] else lines).strip().splitlines()


# Runs the command and writes "<wait status> <ru_maxrss KiB>" of it to the file argv[1]. The child is
# forked from this small launcher, not from the large test process (a child's ru_maxrss counts the
# parent's resident memory it started with).
_LAUNCHER = (
    "import os, subprocess, sys\n"
    "p = subprocess.Popen(sys.argv[2:])\n"
    "_, status, ru = os.wait4(p.pid, 0)\n"
    "open(sys.argv[1], 'w').write(f'{status} {ru.ru_maxrss}')\n"
)


def run_limited(args: list[object], *, stdin: int | None = None, stdout: int | None = None,
                address_space: int = 1 << 30, timeout: float = 300, close_stdout: bool = False) -> Result:
    """pydumpfile ARGS in a child whose address space is capped (``prlimit --as``: a runaway
    allocation fails there instead of taking the machine), returning its exit status, output and its
    own peak RSS."""
    import tempfile

    cmd = ["prlimit", f"--as={address_space}", "--", *PYDUMPFILE, *(str(a) for a in args)]
    if close_stdout:
        cmd = ["sh", "-c", 'exec "$@" >&-', "sh", *cmd]
    with tempfile.TemporaryDirectory() as d:
        status_file = os.path.join(d, "status")
        with open(os.path.join(d, "out"), "w+b") as fo, open(os.path.join(d, "err"), "w+b") as fe:
            subprocess.run([sys.executable, "-c", _LAUNCHER, status_file, *cmd],
                           stdin=stdin if stdin is not None else subprocess.DEVNULL,
                           stdout=stdout if stdout is not None else fo, stderr=fe, timeout=timeout)
            fo.seek(0)
            fe.seek(0)
            out, err = fo.read(), fe.read()
        status, maxrss = (int(x) for x in open(status_file).read().split())
    return Result(os.waitstatus_to_exitcode(status), out, err, maxrss / 1024)


def assert_refused(r: Result, expect: str | None = None) -> None:
    """Exit code 1 with one line on stderr, no traceback, no signal, no internal error, bounded memory."""
    text = r.stderr.decode(errors="replace")
    assert r.returncode == 1, f"exit {r.returncode}: {text[-800:]}"
    assert "Traceback" not in text and "internal error" not in text, text[-800:]
    assert len(r.lines) == 1 and r.lines[0].startswith("pydumpfile: "), r.lines
    assert text.rstrip().endswith("\n\n" + FAILED), text[-800:]
    assert r.peak_mib < PEAK_LIMIT_MIB, f"peak RSS {r.peak_mib:.0f} MiB"
    if expect is not None:
        assert expect in r.lines[0], r.lines[0]


def fingerprint(path: str | os.PathLike[str]) -> tuple[int, str]:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return os.path.getsize(path), h.hexdigest()


def looks_complete(path: str | os.PathLike[str]) -> bool:
    """True if ``path`` is a kdump-compressed or ELF file that does not say it is incomplete."""
    p = Path(path)
    if not p.exists() or p.stat().st_size < 64:
        return False
    head = p.read_bytes()[:512]
    if head[:8] in (b"KDUMP   ", b"DISKDUMP"):
        return len(head) >= 428 and not struct.unpack_from("<I", head, 424)[0] & 0x8
    if head[:4] == b"\x7fELF":
        off = 48 if head[4] == 2 else 36
        return not struct.unpack_from("<I" if head[5] == 1 else ">I", head, off)[0] & 1
    return False


# --- mutating a vmcore in place -------------------------------------------------------------------


@contextlib.contextmanager
def patched(path: str | os.PathLike[str], patches: dict[int, bytes]) -> Iterator[None]:
    """Overwrite bytes at file offsets, and put the original bytes back afterwards."""
    saved = {}
    with open(path, "r+b") as f:
        for off, data in patches.items():
            f.seek(off)
            saved[off] = f.read(len(data))
            f.seek(off)
            f.write(data)
    try:
        yield
    finally:
        with open(path, "r+b") as f:
            for off, data in saved.items():
                f.seek(off)
                f.write(data)


def elf_phdrs(path: str | os.PathLike[str]) -> tuple[int, int, list[tuple[int, ...]]]:
    """(phoff, phentsize, [(type, flags, offset, vaddr, paddr, filesz, memsz, align)]) of an ELF64 core."""
    with open(path, "rb") as f:
        ehdr = f.read(64)
        phoff, = struct.unpack_from("<Q", ehdr, 32)
        phentsize, phnum = struct.unpack_from("<HH", ehdr, 54)
        f.seek(phoff)
        raw = f.read(phentsize * phnum)
    return phoff, phentsize, [struct.unpack_from("<IIQQQQQQ", raw, i * phentsize) for i in range(phnum)]


def vmcoreinfo_patch(path: str | os.PathLike[str], edit: Callable[[str], str]) -> dict[int, bytes]:
    """Patches that replace the VMCOREINFO note's text by ``edit(text)`` (it may grow into the padding
    after the notes) and fix the PT_NOTE sizes: for ``patched()``."""
    phoff, phentsize, phdrs = elf_phdrs(path)
    k, note = next((i, p) for i, p in enumerate(phdrs) if p[0] == 4)
    limit = min(p[2] for p in phdrs if p[0] == 1 and p[2] > note[2])
    with open(path, "rb") as f:
        f.seek(note[2])
        blob = f.read(note[5])
    off = 0
    while off + 12 <= len(blob):
        namesz, descsz, ntype = struct.unpack_from("<III", blob, off)
        name = blob[off + 12 : off + 12 + namesz].rstrip(b"\0")
        desc_off = off + 12 + (namesz + 3) // 4 * 4
        end = desc_off + (descsz + 3) // 4 * 4
        if name == b"VMCOREINFO":
            text = blob[desc_off : desc_off + descsz].decode()
            new = edit(text).encode()
            note_bytes = struct.pack("<III", namesz, len(new), ntype) + blob[off + 12 : desc_off] + new
            note_bytes += b"\0" * (-len(note_bytes) % 4)
            rest = blob[end:]
            newblob = blob[:off] + note_bytes + rest
            assert note[2] + len(newblob) <= limit, "the edited VMCOREINFO does not fit before the first PT_LOAD"
            ph = struct.pack("<IIQQQQQQ", note[0], note[1], note[2], note[3], note[4], len(newblob), len(newblob),
                             note[7])
            return {note[2]: newblob + b"\0" * max(0, len(blob) - len(newblob)), phoff + k * phentsize: ph}
        off = end
    raise AssertionError("no VMCOREINFO note")


def set_value(key: str, value: str) -> Callable[[str], str]:
    """An edit for vmcoreinfo_patch: ``KEY=...`` becomes ``KEY=value`` (added if absent)."""
    def edit(text: str) -> str:
        lines = text.rstrip("\0").split("\n")
        out = [f"{key}={value}" if line.startswith(key + "=") else line for line in lines]
        if not any(line.startswith(key + "=") for line in lines):
            out.insert(len(out) - 1 if out and out[-1] == "" else len(out), f"{key}={value}")
        return "\n".join(out)
    return edit


def load_paddr_patch(path: str | os.PathLike[str], index: int, paddr: int) -> dict[int, bytes]:
    """Move the PT_LOAD number ``index`` (among the PT_LOADs) to physical address ``paddr``."""
    phoff, phentsize, phdrs = elf_phdrs(path)
    loads = [i for i, p in enumerate(phdrs) if p[0] == 1]
    i = loads[index]
    p = list(phdrs[i])
    p[4] = paddr
    return {phoff + i * phentsize: struct.pack("<IIQQQQQQ", *p)}
