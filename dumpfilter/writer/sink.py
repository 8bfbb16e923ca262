"""Where output bytes go: a seekable file (positioned writes, holes for gaps) or a flattened stream.

Writers only call ``pwrite(data, offset)``; the flattened sink turns each call into a record
(formats-cli.md §2.2). Both count "Write bytes" as makedumpfile's report does.
"""
from __future__ import annotations

import errno
import os
import stat

TYPE_CHECKING = False  # typing is not imported at run time
if TYPE_CHECKING:
    from typing import BinaryIO

from .._speedups.writeback import start_writeback
from ..errors import NoSpaceError, OutputError
from ..layouts import FLAT_END, FLAT_HEADER, FLAT_HEADER_SIZE, FLAT_RECORD, FLAT_SIGNATURE, FLAT_TYPE, FLAT_VERSION


class Sink:
    """Interface: positioned writes of the output file."""

    seekable = True
    name = "?"
    bytes_written = 0

    def pwrite(self, data: bytes | bytearray | memoryview, offset: int) -> None:
        raise NotImplementedError

    def patch(self, data: bytes, offset: int) -> None:
        """A small rewrite inside already-written bytes (header status); ignores the size limit."""
        raise NotImplementedError

    def sync(self) -> None:
        pass

    def finish(self) -> None:
        """Everything was written successfully."""

    def abort(self) -> None:
        """Stop after a failure; keep what is there (it is marked incomplete by the writer)."""

    def discard(self) -> None:
        """Remove the output entirely (before a retry with another dump level)."""


def _identity(st: os.stat_result) -> tuple[int, int]:
    """What makes two paths or descriptors the same file (a device node: the device it names)."""
    if stat.S_ISBLK(st.st_mode) or stat.S_ISCHR(st.st_mode):
        return (-1, st.st_rdev)
    return (st.st_dev, st.st_ino)


def check_distinct(output: str | int, inputs: list[str | int], what: str = "the dump file") -> None:
    """Refuse an output (a path, or a descriptor such as 1 for -F) that is one of the inputs, through
    links and /proc/self/fd alike, before anything is opened for writing: pydumpfile -f x x would
    otherwise truncate the vmcore it is about to read."""
    try:
        out = _identity(os.fstat(output) if isinstance(output, int) else os.stat(output))
    except OSError:
        return  # does not exist yet: it can't be an input
    for src in inputs:
        try:
            ident = _identity(os.fstat(src) if isinstance(src, int) else os.stat(src))
        except OSError:
            continue
        if ident == out:
            name = "the standard output" if output == 1 else output
            raise OutputError(f"{what} ({name}) is the input {src if isinstance(src, str) else 'on standard input'}; "
                              "refusing to overwrite it")


def open_output(path: str, force: bool) -> int:
    """Create the dump file with mode 0600, refusing an existing one unless ``force``."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
    if os.path.lexists(path):
        if not force:
            raise OutputError(f"Can't create the dump file {path}: it already exists (use -f to overwrite)")
        if os.path.isdir(path):
            raise OutputError(f"Can't create the dump file {path}: it is a directory")
    else:
        flags |= os.O_EXCL
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as e:
        raise OutputError(f"Can't open the dump file({path}). {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode):
            os.fchmod(fd, 0o600)
    except OSError:
        pass
    return fd


WRITEBACK_STEP = 32 << 20  # bytes between two starts of writeback


class FileSink(Sink):
    """A regular file (or block device) written with pwrite; ``limit`` is makedumpfile's -L."""

    def __init__(self, path: str, force: bool = False, limit: int | None = None) -> None:
        self.name = path
        self.path = path
        self.limit = limit
        self.fd = open_output(path, force)
        self.regular = stat.S_ISREG(os.fstat(self.fd).st_mode)  # a block device is never removed
        self.bytes_written = 0
        self.size = 0
        self.removed = False  # discard() took the file away
        self._unflushed = 0  # bytes written since writeback was last started

    def _nospace(self, why: str, written: int) -> NoSpaceError:
        return NoSpaceError(f"Can't write the dump file({self.path}). {why}", written)

    def pwrite(self, data: bytes | bytearray | memoryview, offset: int) -> None:
        mv = memoryview(data).cast("B")
        n = len(mv)
        if n == 0:
            return
        allowed = n
        if self.limit is not None and offset + n > self.limit:
            allowed = max(0, self.limit - offset)
        done = 0
        while done < allowed:
            try:
                w = os.pwrite(self.fd, mv[done:allowed], offset + done)
            except OSError as e:
                self.bytes_written += done
                self.size = max(self.size, offset + done)
                if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                    raise self._nospace(os.strerror(e.errno), done) from None
                raise OutputError(f"Can't write the dump file({self.path}). {e.strerror}") from None
            if w == 0:
                break
            done += w
        self.bytes_written += done
        self.size = max(self.size, offset + done)
        self._unflushed += done
        if self._unflushed >= WRITEBACK_STEP:
            # start writing what is dirty now, without waiting: the dump becomes durable while it is
            # written, the final fsync has little left, and a capture kernel's page cache holds less
            start_writeback(self.fd)
            self._unflushed = 0
        if done < n:
            raise self._nospace(f"Size limit({self.limit}) reached." if allowed < n else "Short write.", done)

    def patch(self, data: bytes, offset: int) -> None:
        try:
            os.pwrite(self.fd, data, offset)
        except OSError as e:
            raise OutputError(f"Can't write the dump file({self.path}). {e.strerror}") from None
        self.bytes_written += len(data)

    def sync(self) -> None:
        try:
            os.fsync(self.fd)
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.EROFS):
                raise OutputError(f"Can't sync the dump file({self.path}). {e.strerror}") from None

    def _close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def finish(self) -> None:
        self._close()

    def abort(self) -> None:
        if self.size == 0 and self.regular:
            self.discard()  # nothing was written: no empty file that looks like a dump was ever made
            return
        try:
            self.sync()
        except OutputError:
            pass
        self._close()

    def discard(self) -> None:
        self._close()
        if not self.regular:
            return
        try:
            os.unlink(self.path)
        except OSError:
            pass
        self.removed = True


class FlatSink(Sink):
    """makedumpfile's flattened stream on a pipe (``-F``): header, records, end marker."""

    seekable = False

    def __init__(self, out: BinaryIO | int, name: str = "STDOUT", limit: int | None = None) -> None:
        self.name = name
        self.fd = out if isinstance(out, int) else out.fileno()
        self.limit = limit
        self.bytes_written = 0
        head = FLAT_HEADER.pack(FLAT_SIGNATURE.ljust(16, b"\0"), FLAT_TYPE, FLAT_VERSION).ljust(FLAT_HEADER_SIZE, b"\0")
        self._emit(head)

    def _emit(self, data: bytes | bytearray | memoryview) -> None:
        mv = memoryview(data).cast("B")
        while len(mv):
            try:
                w = os.write(self.fd, mv)
            except BrokenPipeError:
                raise OutputError("Can't write the flattened stream: the reader closed the pipe") from None
            except OSError as e:
                if e.errno == errno.ENOSPC:
                    raise NoSpaceError(f"Can't write the dump file({self.name}). {e.strerror}") from None
                raise OutputError(f"Can't write the flattened stream: {e.strerror}") from None
            self.bytes_written += w
            mv = mv[w:]

    def pwrite(self, data: bytes | bytearray | memoryview, offset: int) -> None:
        n = len(memoryview(data).cast("B"))
        if n == 0:
            return
        if self.limit is not None and self.bytes_written + FLAT_RECORD.size + n > self.limit:
            raise NoSpaceError(f"Can't write the dump file({self.name}). Size limit({self.limit}) reached.")
        self._emit(FLAT_RECORD.pack(offset, n))
        self._emit(data)

    def patch(self, data: bytes, offset: int) -> None:
        self._emit(FLAT_RECORD.pack(offset, len(data)))
        self._emit(data)

    def finish(self) -> None:
        self._emit(FLAT_END)

    def abort(self) -> None:
        pass  # no end marker: -R refuses the stream

    def discard(self) -> None:
        raise OutputError("Can't retry with another dump level on a flattened stream")


class NullSink(Sink):
    """``--dry-run``: count what would be written, write nothing."""

    name = "(dry run)"

    def __init__(self) -> None:
        self.bytes_written = 0

    def pwrite(self, data: bytes | bytearray | memoryview, offset: int) -> None:
        self.bytes_written += len(memoryview(data).cast("B"))

    def patch(self, data: bytes, offset: int) -> None:
        self.bytes_written += len(data)
