"""pydumpfile: a makedumpfile-compatible kdump core collector.

``dumpfilter.open(path)`` opens any vmcore or dump file and gives a ``DumpSource``.
"""
from __future__ import annotations

from .errors import DumpfilterError

__version__ = "0.1.0"

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .source import DumpSource


def open(path: str) -> DumpSource:  # noqa: A001 - the public name the design asks for
    """Open an ELF vmcore, a kdump-compressed file or a flattened dump."""
    from .source import open_source

    return open_source(path)


def __getattr__(name: str) -> object:
    # the readers (and the compiled kernels they load) are imported on first use: the command-line
    # tools that do not read a dump (pykexec, pykdumpctl, the man page generator at build time) never
    # load them
    if name == "DumpSource":
        from .source import DumpSource

        return DumpSource
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DumpSource", "DumpfilterError", "open", "__version__"]
