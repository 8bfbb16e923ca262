# cython: language_level=3
"""Starting the writeback of a file's dirty pages early (sync_file_range(2), which Python's os lacks)."""
from libc.stdint cimport int64_t

cdef extern from "<fcntl.h>" nogil:
    int sync_file_range(int fd, int64_t offset, int64_t nbytes, unsigned int flags)
    unsigned int SYNC_FILE_RANGE_WRITE


def start_writeback(int fd, int64_t offset=0, int64_t nbytes=0):
    """Ask the kernel to start writing [offset, offset+nbytes) (0: to the end) of ``fd`` to disk without
    waiting, so that the final fsync finds little left. Returns 0, or -1 when the file refuses it
    (callers ignore that: such a file is synced at the end as usual)."""
    cdef int r
    with nogil:
        r = sync_file_range(fd, offset, nbytes, SYNC_FILE_RANGE_WRITE)
    return -1 if r != 0 else 0
