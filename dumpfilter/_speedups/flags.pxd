# The kdump page compression flags (formats-cli.md §1.3, §1.6): page_desc.flags of a stored page and
# the matching disk_dump_header.status bit. The one definition: Cython modules cimport it, Python reads
# the values from dumpfilter._speedups.flags (codec/ and layouts.py).
cdef enum:
    FLAG_NONE = 0
    FLAG_ZLIB = 0x01
    FLAG_LZO = 0x02
    FLAG_SNAPPY = 0x04
    FLAG_ZSTD = 0x20
