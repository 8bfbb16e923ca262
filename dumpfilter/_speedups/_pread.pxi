# Shared by the readers (textual include): pread(2) of a whole range, retried after EINTR.
from libc.errno cimport errno, EINTR
from libc.stdint cimport int64_t as _i64, uint8_t as _u8

cdef extern from "<sys/types.h>" nogil:
    ctypedef long off_t

cdef extern from "<unistd.h>" nogil:
    ssize_t pread(int fd, void* buf, size_t count, off_t offset)


cdef inline int pread_all(int fd, _u8* dst, _i64 size, _i64 off) noexcept nogil:
    """0, errno on a read error, or -1 at the end of the file."""
    cdef ssize_t got
    while size > 0:
        got = pread(fd, dst, size, off)
        if got < 0:
            if errno == EINTR:
                continue
            return errno
        if got == 0:
            return -1
        dst += got
        size -= got
        off += got
    return 0
