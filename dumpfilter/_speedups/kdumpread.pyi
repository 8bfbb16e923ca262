from ._buffer import ReadBuf
from .window import WindowBuffers

class KdumpReader:
    def __init__(self, fd: int, pd_off: int, file_size: int, page_size: int) -> None: ...
    def read_window(self, bitmap: ReadBuf, wstart: int, wend: int, base: int, wb: WindowBuffers, in_bits: ReadBuf,
                    in_first: int, idx0: int) -> None: ...
