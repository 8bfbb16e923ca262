"""Open any input: ELF vmcore, kdump-compressed file, or a flattened file of either."""
from __future__ import annotations

import os

from ..errors import InputError
from ..layouts import DISKDUMP_SIGNATURE, FLAT_SIGNATURE, KDUMP_SIGNATURE
from .base import DumpSource, FileView, Note, parse_notes
from .elf import ElfSource

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .base import ByteView

__all__ = ["DumpSource", "ElfSource", "KdumpSource", "Note", "open_source", "parse_notes"]


def __getattr__(name: str) -> type:
    # the kdump-compressed reader needs numpy; imported only when such an input is opened
    if name == "KdumpSource":
        from .kdump import KdumpSource

        return KdumpSource
    raise AttributeError(name)


def _signature(view: ByteView) -> bytes:
    """The first 16 bytes of an input (closed again if they can't be read)."""
    try:
        return view.pread(0, min(16, view.size), "signature")
    except BaseException:
        view.close()
        raise


def _dump_in(path: str, view: ByteView, head: bytes) -> DumpSource | None:
    """The ELF or kdump-compressed dump that ``view`` holds, by its signature ``head``; else None."""
    if head[:4] == b"\x7fELF":
        return ElfSource(path, view)
    if head[:8] in (KDUMP_SIGNATURE, DISKDUMP_SIGNATURE):
        from .kdump import KdumpSource  # needs numpy: imported only when such an input is opened

        return KdumpSource(path, view)
    return None


def open_source(path: str | os.PathLike[str]) -> DumpSource:
    """Detect the format of ``path`` and open it."""
    p = os.fspath(path)
    if os.path.isdir(p):
        raise InputError(f"{p}: is a directory, not a vmcore")
    fv = FileView(p)
    head = _signature(fv)
    found = _dump_in(p, fv, head)
    if found is not None:
        return found
    if head[:12] == FLAT_SIGNATURE:
        from .flat import FlatView

        fv.close()
        view = FlatView(p)
        found = _dump_in(p, view, _signature(view))
        if found is not None:
            return found
        view.close()
        raise InputError(f"{p}: flattened file does not hold an ELF or kdump-compressed dump")
    fv.close()
    if not head:
        raise InputError(f"{p}: not a vmcore (the file is empty)")
    raise InputError(f"{p}: not a vmcore (no ELF, KDUMP or flattened signature)")
