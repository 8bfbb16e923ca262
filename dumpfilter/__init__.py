"""pydumpfile: a makedumpfile-compatible kdump core collector.

``dumpfilter.open(path)`` opens any vmcore or dump file and gives a ``DumpSource``.
"""
from __future__ import annotations

from .errors import DumpfilterError
from .source import DumpSource, open_source

__version__ = "0.1.0"


def open(path: str) -> DumpSource:  # noqa: A001 - the public name the design asks for
    """Open an ELF vmcore, a kdump-compressed file or a flattened dump."""
    return open_source(path)


__all__ = ["DumpSource", "DumpfilterError", "open", "__version__"]
