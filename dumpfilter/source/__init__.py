"""Open any input: ELF vmcore, kdump-compressed file, or a flattened file of either."""
from __future__ import annotations

import os

from ..errors import InputError
from ..layouts import DISKDUMP_SIGNATURE, FLAT_SIGNATURE, KDUMP_SIGNATURE
from .base import DumpSource, FileView, Note, parse_notes
from .elf import ElfSource

__all__ = ["DumpSource", "ElfSource", "KdumpSource", "Note", "open_source", "parse_notes"]


def __getattr__(name: str) -> type:
    # the kdump-compressed reader needs numpy; imported only when such an input is opened
    if name == "KdumpSource":
        from .kdump import KdumpSource

        return KdumpSource
    raise AttributeError(name)


def open_source(path: str | os.PathLike[str]) -> DumpSource:
    """Detect the format of ``path`` and open it."""
    p = os.fspath(path)
    if os.path.isdir(p):
        raise InputError(f"{p}: is a directory, not a vmcore")
    fv = FileView(p)
    try:
        head = fv.pread(0, min(16, fv.size), "signature")
    except BaseException:
        fv.close()
        raise
    if head[:4] == b"\x7fELF":
        return ElfSource(p, fv)
    if head[:8] in (KDUMP_SIGNATURE, DISKDUMP_SIGNATURE):
        from .kdump import KdumpSource

        return KdumpSource(p, fv)
    if head[:12] == FLAT_SIGNATURE:
        from .flat import FlatView
        from .kdump import KdumpSource

        fv.close()
        view = FlatView(p)
        try:
            inner = view.pread(0, min(16, view.size), "signature")
        except BaseException:
            view.close()
            raise
        if inner[:4] == b"\x7fELF":
            return ElfSource(p, view)  # type: ignore[arg-type]
        if inner[:8] in (KDUMP_SIGNATURE, DISKDUMP_SIGNATURE):
            return KdumpSource(p, view)  # type: ignore[arg-type]
        view.close()
        raise InputError(f"{p}: flattened file does not hold an ELF or kdump-compressed dump")
    fv.close()
    if not head:
        raise InputError(f"{p}: not a vmcore (the file is empty)")
    raise InputError(f"{p}: not a vmcore (no ELF, KDUMP or flattened signature)")
