"""The compression stage: page codecs keyed by the kdump page flag (formats-cli.md §1.3, §1.6).

Pages are compressed a window at a time in C (``_speedups/compress.pyx``: the zlib format written by
libdeflate at level 2, LZO1X-1, a raw snappy block, zstd level 1 as one frame with the content size
and no checksum; a page is stored compressed only if strictly smaller than a page), on the worker
threads of ``pool.py``, after the page hooks of ``hooks.py``. This registry names the codecs and their
flags (``_speedups/flags.pxd``, the one definition) and decodes single pages with the PyPI packages,
for reading dumps back; ``decompress`` is thread-safe.
"""
from __future__ import annotations

import zlib
from collections.abc import Callable

from ..record import dataclass
from ..errors import DumpfilterError, InputError

from .._speedups import flags as _flags

FLAG_ZLIB: int = _flags.ZLIB
FLAG_LZO: int = _flags.LZO
FLAG_SNAPPY: int = _flags.SNAPPY
FLAG_ZSTD: int = _flags.ZSTD

def _zlib_dec(data: bytes, size: int) -> bytes:
    return zlib.decompress(data, bufsize=size)


def _lzo_dec(data: bytes, size: int) -> bytes:
    import lzo

    return lzo.decompress(data, False, size)


def _snappy_dec(data: bytes, size: int) -> bytes:
    import snappy

    return snappy.decompress(data)


def _zstd_dec(data: bytes, size: int) -> bytes:
    import zstandard

    return zstandard.ZstdDecompressor().decompress(data, max_output_size=size)


@dataclass(frozen=True)
class Codec:
    name: str
    flag: int  # page_desc.flags value and header status bit
    decompress: Callable[[bytes, int], bytes]


CODECS: dict[str, Codec] = {
    "zlib": Codec("zlib", FLAG_ZLIB, _zlib_dec),
    "lzo": Codec("lzo", FLAG_LZO, _lzo_dec),
    "snappy": Codec("snappy", FLAG_SNAPPY, _snappy_dec),
    "zstd": Codec("zstd", FLAG_ZSTD, _zstd_dec),
}
BY_FLAG: dict[int, Codec] = {c.flag: c for c in CODECS.values()}


def get_codec(name: str | None) -> Codec | None:
    if name is None or name == "none":
        return None
    try:
        codec = CODECS[name]
    except KeyError:
        raise DumpfilterError(f"unknown compression {name!r}") from None
    return codec  # compression itself runs in pool.py / _speedups/compress.pyx against the C libraries


def decompress_page(flags: int, data: bytes, page_size: int, where: str) -> bytes:
    """Decode one stored page; InputError unless it yields exactly one page."""
    if flags == 0:
        if len(data) != page_size:
            raise InputError(f"{where}: raw page has size {len(data)}, expected {page_size}")
        return data
    codec = BY_FLAG.get(flags)
    if codec is None:
        raise InputError(f"{where}: unknown page compression flags {flags:#x}")
    try:
        page = codec.decompress(bytes(data), page_size)
    except Exception as e:  # noqa: BLE001 - codec libraries raise assorted types
        raise InputError(f"{where}: {codec.name} decompression failed: {e}") from None
    if len(page) != page_size:
        raise InputError(f"{where}: {codec.name} page decompressed to {len(page)} bytes, expected {page_size}")
    return page
