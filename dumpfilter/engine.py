"""The writing pipeline's hot path: windows of the 2nd bitmap read, zero-tested and compressed in
Cython with the GIL released, on ``--num-threads`` worker threads, delivered in pfn order.

A window is ``batch_pages`` pfns starting at the next pfn to dump, so windows depend only on the
bitmap, never on the number of threads, and neither do the output bytes. One Cython call per window
(``WindowCompressor.compress_window``) finds the window's runs of pages, maps them from the vmcore
(mmap, as makedumpfile does; ``--non-mmap`` or a file that can't be mapped uses pread), tests each
page for zero and compresses it. Sources that are not a plain ELF file (kdump-compressed or
flattened input) are read through their own ``read_pages``, one call per run of pages.

``--num-threads 0`` (the default) runs everything in the calling thread; N ≥ 1 compresses on N worker
threads while the calling thread writes. Each worker has its own compressor (codec state is never
shared). Memory is bounded by the windows in flight: (N + 1) × 2 × batch_pages × page_size.
"""
from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator

from ._speedups.compress import DirectReader, WindowBuffers, WindowCompressor, fill_descs
from .bitmap import Bitmap
from .errors import InputError
from .plan import DumpPlan

__all__ = ["DirectReader", "WindowBuffers", "compressed_batches", "direct_reader", "fill_descs"]


def direct_reader(plan: DumpPlan) -> DirectReader | None:
    """A C reader over the source file when the source is a plain ELF vmcore, else None."""
    get = getattr(plan.src, "direct_ranges", None)
    found = get() if get is not None else None
    if found is None:
        return None
    fd, ranges = found
    return DirectReader(fd, ranges, plan.use_mmap)


def _windows(bitmap: Bitmap, window: int) -> Iterator[tuple[int, int]]:
    nbits = bitmap.nbits
    pos = bitmap.next_set(0)
    while pos < nbits:
        end = min(pos + window, nbits)
        yield pos, end
        pos = bitmap.next_set(end)


def compressed_batches(plan: DumpPlan, bitmap: Bitmap, base: int,
                       reader: DirectReader | None) -> Iterator[WindowBuffers]:
    """Yield one filled WindowBuffers per window with pages to dump, in pfn order.

    ``bitmap`` is the 2nd bitmap of one cycle, whose first pfn is ``base``; ``reader`` is the dump's
    ``direct_reader`` (made once per dump), or None to read through the source's ``read_pages``. A
    yielded buffer is valid until the caller asks for the next one.
    """
    ps = plan.page_size
    codec = plan.codec.flag if plan.codec else 0
    window = max(8, plan.batch_pages)
    threads = max(0, plan.num_threads)
    src = plan.src
    bits = bitmap.bits
    exclude_zero = plan.exclude_zero
    read_pages = src.read_pages

    def work(comp: WindowCompressor, ws: int, we: int, wb: WindowBuffers) -> WindowBuffers:
        try:
            comp.compress_window(bits, ws, we, base, wb, reader, read_pages, exclude_zero)
        except OSError as e:
            what = e.strerror or "read error"
            raise InputError(f"{src.path}: can't read pfns {base + ws:#x}-{base + we:#x}: {what}") from None
        return wb

    if threads == 0:
        comp = WindowCompressor(codec, ps)
        wb = WindowBuffers(window, ps)
        for ws, we in _windows(bitmap, window):
            yield work(comp, ws, we, wb)
        return

    from concurrent.futures import Future, ThreadPoolExecutor

    local = threading.local()

    def run(ws: int, we: int, wb: WindowBuffers) -> WindowBuffers:
        comp = getattr(local, "comp", None)
        if comp is None:
            comp = local.comp = WindowCompressor(codec, ps)
        return work(comp, ws, we, wb)

    free = [WindowBuffers(window, ps) for _ in range(threads + 1)]
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
