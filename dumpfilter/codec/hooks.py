"""Page hooks: code that may change page *contents* between reading and compressing (erase filters,
plugins). A hook covers a pfn range and is called with a batch of page buffers: the pages of one window
whose pfns fall in its range, copied into a writable buffer; what it leaves there is what is compressed
and written. Hooks run on the worker threads of ``pool.py`` (with the GIL), each window's hooks in the
order they were registered, so a hook must not depend on the order of windows or keep per-call state
without a lock. With no hook registered the hot path does not change.
"""
from __future__ import annotations

from collections.abc import Callable

from ..record import dataclass

#: ``fn(pfns, pages)``: page i of ``pages`` (a writable memoryview of len(pfns) pages) is pfn pfns[i]
HookFn = Callable[[list[int], memoryview], None]


@dataclass(frozen=True)
class PageHook:
    start: int  # first pfn
    end: int  # pfn after the last
    fn: HookFn
    name: str = "hook"


def apply_hooks(hooks: tuple[PageHook, ...], wb) -> None:  # noqa: ANN001 - a WindowBuffers
    """Run every hook whose range meets the window's pages on those pages."""
    runs = wb.runs()
    if not runs:
        return
    lo, hi = runs[0][0], runs[-1][1]
    for h in hooks:
        if h.end <= lo or h.start >= hi:
            continue
        got = wb.hook_pages(h.start, h.end)
        if got is not None:
            h.fn(*got)
