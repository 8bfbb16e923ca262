"""``-R``: rearrange a flattened stream from stdin into a dump file (formats-cli.md §2.3).

While records arrive, the copy of the dump header in the output carries the incomplete mark (kdump
status bit 0x8, ELF e_flags bit 0); the real header bytes are written only after the end marker, so
an interrupted or truncated stream never leaves a file that looks complete.
"""
from __future__ import annotations

TYPE_CHECKING = False  # typing is not imported at run time
if TYPE_CHECKING:
    from typing import BinaryIO, Literal

from ..errors import InputError
from ..layouts import DISKDUMP_SIGNATURE, DUMP_DH_COMPRESSED_INCOMPLETE, ELF_INCOMPLETE, KDUMP_SIGNATURE, STATUS_OFFSET
from ..source.flat import rearrange
from .sink import FileSink

SHADOW = 512


def _marked(shadow: bytearray) -> bytes:
    m = bytearray(shadow)
    if m[:8] in (KDUMP_SIGNATURE, DISKDUMP_SIGNATURE):
        st = int.from_bytes(m[STATUS_OFFSET : STATUS_OFFSET + 4], "little") | DUMP_DH_COMPRESSED_INCOMPLETE
        m[STATUS_OFFSET : STATUS_OFFSET + 4] = st.to_bytes(4, "little")
    elif m[:4] == b"\x7fELF":
        off = 48 if m[4] == 2 else 36
        order: Literal["little", "big"] = "big" if m[5] == 2 else "little"
        fl = int.from_bytes(m[off : off + 4], order) | ELF_INCOMPLETE
        m[off : off + 4] = fl.to_bytes(4, order)
    return bytes(m)


def rearrange_to_file(stream: BinaryIO, sink: FileSink) -> int:
    shadow = bytearray(SHADOW)
    hi = 0

    def write_at(offset: int, data: bytes) -> None:
        nonlocal hi
        if offset < SHADOW:
            n = min(len(data), SHADOW - offset)
            shadow[offset : offset + n] = data[:n]
            hi = max(hi, offset + n)
            sink.pwrite(data, offset)
            sink.patch(_marked(shadow)[:hi], 0)
        else:
            sink.pwrite(data, offset)

    nrec = rearrange(stream, write_at)
    # a stream that ends cleanly must still have carried a dump: records, starting with a header
    if nrec == 0:
        raise InputError("the flattened stream holds no data (a header and an end marker only); not a dump")
    if shadow[:8] not in (KDUMP_SIGNATURE, DISKDUMP_SIGNATURE) and shadow[:4] != b"\x7fELF":
        raise InputError("the flattened stream does not start with a kdump-compressed or ELF header; not a dump")
    sink.sync()
    sink.patch(bytes(shadow[:hi]), 0)
    sink.sync()
    return nrec
