"""The compression stage's hot path: windows of the 2nd bitmap read, hooked, zero-tested and
compressed, on ``--num-threads`` worker threads, delivered in pfn order.

A window is ``window`` pfns starting at the next pfn to dump, so windows depend only on the bitmap,
never on the number of threads, and neither do the output bytes. Per window: the source's reader
points a ``WindowBuffers`` at the pages (``_speedups/reader.pyx``: mapped from an ELF vmcore as
makedumpfile does, or read with pread, or through the source's ``read_pages``), the page hooks whose
range meets the window run (``hooks.py``), and one C call tests each page for zero and compresses it
(``_speedups/compress.pyx``), each with the GIL released.

``threads == 0`` (the default) runs everything in the calling thread; N ≥ 1 works on N worker threads
while the calling thread writes. Each worker has its own compressor (codec state is never shared).
Memory is bounded by the windows in flight: (N + 1) × 2 × window × page_size.
"""
from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator

from .._speedups.compress import BatchCompressor
from .._speedups.window import WindowBuffers
from ..bitmap import Bitmap
from ..errors import InputError
from ..record import dataclass
from .hooks import PageHook, apply_hooks

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..source.base import WindowReader

WINDOW_PAGES = 512  # pfns per window: 2 MiB of 4 KiB pages


@dataclass(frozen=True)
class Compression:
    """How the pages of a dump are compressed: codec flag (0 = stored raw), zero pages left out, threads."""

    page_size: int
    codec: int
    exclude_zero: bool
    threads: int = 0
    hooks: tuple[PageHook, ...] = ()
    window: int = WINDOW_PAGES

    def windows(self, reader: WindowReader, bitmap: Bitmap, base: int, where: str) -> Iterator[WindowBuffers]:
        """Yield one filled WindowBuffers per window with pages to dump, in pfn order: read, hooked,
        zero-tested and compressed (``wb.out``, ``wb.sizes``, ``wb.flags``).

        ``bitmap`` is the 2nd bitmap of one cycle, whose first pfn is ``base``; ``reader`` is the
        source's window reader (made once per dump). A yielded buffer is valid until the caller asks
        for the next one. ``where`` names the input in read errors."""
        ps, codec, exclude_zero, hooks = self.page_size, self.codec, self.exclude_zero, self.hooks
        local = threading.local()  # one compressor per thread: codec state is never shared

        def compress(wb: WindowBuffers) -> None:
            comp = getattr(local, "comp", None)
            if comp is None:
                comp = local.comp = BatchCompressor(codec, ps)
            if hooks:
                apply_hooks(hooks, wb)
            comp.compress_window(wb, exclude_zero)

        return map_windows(reader, bitmap, base, where, ps, self.window, self.threads, compress)


def map_windows(reader: WindowReader, bitmap: Bitmap, base: int, where: str, page_size: int, window: int,
                threads: int, work: Callable[[WindowBuffers], None]) -> Iterator[WindowBuffers]:
    """For each window of ``window`` pfns with set bits in ``bitmap`` (bit i is pfn base + i): read its
    pages with ``reader``, then ``work(wb)``; on ``threads`` worker threads when > 0 (the C stages
    release the GIL); yield the buffers in pfn order. The dump's pages a window maps are unmapped
    after ``work``; the rest of the buffer stays valid until the next window is asked for."""
    window = max(8, window)
    bits = bitmap.bits

    def run(ws: int, we: int, wb: WindowBuffers) -> WindowBuffers:
        try:
            reader.read_window(bits, ws, we, base, wb)
        except OSError as e:
            what = e.strerror or "read error"
            raise InputError(f"{where}: can't read pfns {base + ws:#x}-{base + we:#x}: {what}") from None
        try:
            work(wb)
        finally:
            wb.release()
        return wb

    if threads <= 0:
        wb = WindowBuffers(window, page_size)
        for ws, we in _windows(bitmap, window):
            yield run(ws, we, wb)
        return

    from concurrent.futures import Future, ThreadPoolExecutor

    free = [WindowBuffers(window, page_size) for _ in range(threads + 1)]
    pending: deque[Future[WindowBuffers]] = deque()
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="pydumpfile") as pool:
        try:
            for ws, we in _windows(bitmap, window):
                if not free:
                    done = pending.popleft().result()
                    yield done
                    free.append(done)
                wb = free.pop()
                pending.append(pool.submit(run, ws, we, wb))
            while pending:
                yield pending.popleft().result()
        finally:
            for f in pending:
                f.cancel()


def _windows(bitmap: Bitmap, window: int) -> Iterator[tuple[int, int]]:
    nbits = bitmap.nbits
    pos = bitmap.next_set(0)
    while pos < nbits:
        end = min(pos + window, nbits)
        yield pos, end
        pos = bitmap.next_set(end)
