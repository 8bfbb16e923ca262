"""The crashed kernel's ``struct new_utsname`` (6 × 65 bytes), read from ``init_uts_ns``."""
from __future__ import annotations

from ..errors import DumpfilterError
from ..source.base import DumpSource
from .arch import Arch
from .arch.machines import uname_of_e_machine
from .vmcoreinfo import VmcoreInfo

UTSNAME_LEN = 65
UTSNAME_SIZE = 6 * UTSNAME_LEN


def placeholder(e_machine: int) -> bytes:
    """A utsname with only ``machine`` set (what QEMU writes when it knows nothing else)."""
    fields = [b"Linux", b"", b"", b"", uname_of_e_machine(e_machine).encode(), b""]
    return b"".join(f.ljust(UTSNAME_LEN, b"\0") for f in fields)


def read_utsname(src: DumpSource, vi: VmcoreInfo, arch: Arch) -> bytes | None:
    """Raw 390 bytes at init_uts_ns + OFFSET(uts_namespace.name); None if it can't be located."""
    addr = vi.symbol.get("init_uts_ns")
    if not addr:
        return None
    off = vi.offset.get("uts_namespace.name", 0)
    paddr = arch.kernel_text_to_phys(addr + off, src, vi)
    if paddr is None or paddr // src.page_size >= src.max_mapnr:
        return None
    try:
        raw = src.read_phys(paddr, UTSNAME_SIZE)
    except DumpfilterError:
        return None
    if not raw.startswith(b"Linux\0"):
        return None
    return raw


def release_of(uts: bytes) -> str:
    return uts[2 * UTSNAME_LEN : 3 * UTSNAME_LEN].split(b"\0", 1)[0].decode("ascii", "replace")
