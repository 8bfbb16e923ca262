"""The writing pipeline's hot path: pages read in large batches, zero-tested and compressed in
Cython with the GIL released, on ``--num-threads`` worker threads, delivered in pfn order.

``--num-threads 0`` (the default) runs everything in the calling thread; N ≥ 1 reads and compresses
on N worker threads while the calling thread writes, so even one worker overlaps I/O with compression.
Each worker has its own ``BatchCompressor`` (codec state is never shared). Output bytes do not depend
on the number of threads: batches are cut by pfn window and yielded in order. Memory is bounded by
the batches in flight: (threads + 1) × 2 × batch_pages × page_size.
"""
from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ._speedups.compress import BatchCompressor
from .bitmap import Bitmap
from .plan import DumpPlan


@dataclass
class Batch:
    pfns: np.ndarray  # int64, the pfns of this batch, ascending
    sizes: np.ndarray  # int64: stored size, -1 for a zero page when zero pages are excluded
    flags: np.ndarray  # uint32: page_desc.flags
    out: np.ndarray  # uint8: the stored pages back to back


class _Worker(threading.local):
    comp: BatchCompressor | None = None
    pages: np.ndarray
    out: np.ndarray


def _windows(bitmap: Bitmap, base: int, window: int) -> Iterator[tuple[int, np.ndarray]]:
    for w in range(0, bitmap.nbits, window):
        sel = np.flatnonzero(bitmap.unpack(w, w + window))
        if sel.size:
            yield base + w, sel


def compressed_batches(plan: DumpPlan, bitmap: Bitmap, base: int = 0) -> Iterator[Batch]:
    """Yield one Batch per pfn window that has dumpable pages, in pfn order.

    ``bitmap`` is the 2nd bitmap of one cycle, whose first pfn is ``base``.
    """
    bs = plan.page_size
    codec = plan.codec.flag if plan.codec else 0
    window = max(8, plan.batch_pages)
    threads = max(0, plan.num_threads)
    src = plan.src

    def work(w: int, sel: np.ndarray, local: _Worker, keep: bool) -> Batch:
        if local.comp is None:
            local.comp = BatchCompressor(codec, bs)
            local.pages = np.empty(window * bs, dtype=np.uint8)  # reused: no page faults per batch
            local.out = np.empty(window * bs, dtype=np.uint8)
        first = int(sel[0])
        n = int(sel[-1]) + 1 - first
        pages = local.pages
        if sel.size * 2 >= n:
            src.read_pages(w + first, n, pages)
        else:  # a sparse window: read only the runs of wanted pages
            brk = np.flatnonzero(np.diff(sel) != 1)
            starts = np.concatenate(([sel[0]], sel[brk + 1])).tolist()
            ends = np.concatenate((sel[brk] + 1, [sel[-1] + 1])).tolist()
            for a, b in zip(starts, ends):
                src.read_pages(w + a, b - a, pages[(a - first) * bs : (b - first) * bs])
        out = local.out
        sizes = np.empty(sel.size, dtype=np.int64)
        flags = np.empty(sel.size, dtype=np.uint32)
        used = local.comp.compress_batch(pages, (sel - first).astype(np.int64), plan.exclude_zero, out, sizes, flags)
        # the calling thread writes a batch before it asks for the next one; workers run ahead, so
        # their results need their own copy
        return Batch((sel + w).astype(np.int64), sizes, flags, out[:used].copy() if keep else out[:used])

    if threads == 0:
        holder = _Worker()
        for w, sel in _windows(bitmap, base, window):
            yield work(w, sel, holder, False)
        return

    local = _Worker()
    pending: deque[Future[Batch]] = deque()
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="pydumpfile") as pool:
        try:
            for w, sel in _windows(bitmap, base, window):
                pending.append(pool.submit(work, w, sel, local, True))
                if len(pending) >= threads + 1:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for f in pending:
                f.cancel()
