# cython: language_level=3
"""The kdump page compression flags (flags.pxd) as Python ints."""
NONE = FLAG_NONE
ZLIB = FLAG_ZLIB
LZO = FLAG_LZO
SNAPPY = FLAG_SNAPPY
ZSTD = FLAG_ZSTD
