# Buffer types the Cython kernels accept for their typed memoryviews (a stub-only helper module).
from _typeshed import ReadableBuffer, WriteableBuffer

ReadBuf = ReadableBuffer  # const uint8_t[::1]: bytes, bytearray, memoryview, numpy uint8 arrays
WriteBuf = WriteableBuffer  # uint8_t[::1]: bytearray, a writable memoryview, numpy arrays
