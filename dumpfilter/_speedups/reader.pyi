from collections.abc import Callable

from ._buffer import ReadBuf
from .window import WindowBuffers

class DirectReader:
    use_mmap: bool
    def __init__(self, fd: int, ranges: list[tuple[int, int, int]], use_mmap: bool = True,
                 host_page: int = 4096) -> None: ...
    def read_window(self, bitmap: ReadBuf, wstart: int, wend: int, base: int, wb: WindowBuffers) -> None: ...

class RunReader:
    def __init__(self, read_pages: Callable[[int, int, memoryview], None]) -> None: ...
    def read_window(self, bitmap: ReadBuf, wstart: int, wend: int, base: int, wb: WindowBuffers) -> None: ...
