NONE: int
ZLIB: int
LZO: int
SNAPPY: int
ZSTD: int
