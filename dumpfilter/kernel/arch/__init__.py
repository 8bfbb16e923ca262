"""Architectures: how a dump's kernel addresses become physical ones, one ``Arch`` per machine.

``for_machine(e_machine)`` gives the ``Arch`` of a dump (every source reports its ELF machine, a
kdump-compressed one from its header's utsname). An ``Arch`` knows the machine's page sizes, where the
kernel image sits (``phys_base``, kernel text → physical), the direct-map base, and makes an ``Mmu`` that
walks the dump's page tables (``vtop``, ``read``; ``walk.py`` has what every walker shares: the
per-leaf cache and the reads). Machines: ``x86_64.py``, ``arm64.py``. Nothing outside this package names an architecture;
the per-machine facts that are not translation (uname, kexec calls, crashkernel= rules) are in
``machines.py``.

A machine without translation (``GenericArch``) can still be dumped at levels 0 and 1, which need no
kernel knowledge; asking it for an ``Mmu`` is a clear error.
"""
from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Protocol

    from ...source.base import DumpSource
    from ..vmcoreinfo import VmcoreInfo

    class Mmu(Protocol):
        """Kernel virtual memory of one dump."""

        page_offset: int  # direct-map base
        max_physmem_bits: int  # default when VMCOREINFO has no NUMBER(MAX_PHYSMEM_BITS)
        kernel_va_start: int  # lowest kernel virtual address (plausibility of pointers read from the dump)
        section_size_bits: int  # default when VMCOREINFO has no NUMBER(SECTION_SIZE_BITS)

        def vtop(self, va: int) -> int: ...
        def read(self, va: int, size: int) -> bytes: ...
        def read_into(self, va: int, buf: bytearray | memoryview) -> None: ...
        def view(self, va: int, size: int) -> tuple[memoryview, int] | None: ...
        def describe(self) -> list[str]: ...
else:
    Mmu = object

from ...errors import DumpfilterError, InputError
from .machines import EM_386, Machine, machine, uname_of_e_machine


MAX_PAGE_SIZE = 65536  # the largest page of any machine (arm64 64K, ppc64 64K); the C readers' limit


class UnsupportedArch(DumpfilterError):
    """The dump's machine has no address translation here (only levels 0 and 1 work)."""


class Arch:
    """Base: a machine with no kernel knowledge."""

    name = "unknown"
    e_machine = 0
    page_sizes: tuple[int, ...] = ()  # the page sizes this machine's kernels use
    #: the VMCOREINFO entries translation reads (printed by -D)
    vmcoreinfo_keys: tuple[str, ...] = ()

    @property
    def machine(self) -> Machine:
        return machine(self.name)

    @property
    def signed_char(self) -> bool:
        return self.machine.signed_char

    def phys_base(self, src: DumpSource, vi: VmcoreInfo | None) -> int:
        """Where the kernel image was loaded, as the kdump header's sub header records it."""
        return 0

    def kernel_text_to_phys(self, vaddr: int, src: DumpSource, vi: VmcoreInfo) -> int | None:
        """Physical address of a kernel-image (symbol) address without walking page tables, or None."""
        return None

    def linear_vaddr(self, vi: VmcoreInfo, paddr: int) -> int | None:
        """The running kernel's direct-map address of ``paddr`` (``__va``), from its own VMCOREINFO (the
        ELF core header a kexec_load loader writes); None if this machine can't tell."""
        return None

    def image_voffset(self, vi: VmcoreInfo) -> int | None:
        """Kernel-image virtual minus physical address of the running kernel (None: unknown)."""
        return None

    def mmu(self, src: DumpSource, vi: VmcoreInfo) -> Mmu:
        raise UnsupportedArch(
            f"{src.path}: kernel memory of {self.describe_machine()} dumps can't be read yet "
            "(dump levels 0 and 1 work without it)"
        )

    def describe_machine(self) -> str:
        return f"{self.name} (ELF machine {self.e_machine})"

    def default_phys_bits(self, vi: VmcoreInfo | None) -> int:
        """Physical address bits when VMCOREINFO has no NUMBER(MAX_PHYSMEM_BITS)."""
        return 52

    def check_layout(self, src: DumpSource, vi: VmcoreInfo | None) -> None:
        """Refuse a dump whose layout no machine of this kind can have, before any work that grows
        with it: a page size the machine does not use, memory above its physical address limit
        (MAX_PHYSMEM_BITS). makedumpfile refuses these too; a corrupt header otherwise costs
        minutes and gigabytes of bitmaps."""
        ps = src.page_size
        if ps > MAX_PAGE_SIZE or (self.page_sizes and ps not in self.page_sizes):
            sizes = ", ".join(str(p) for p in self.page_sizes) or f"at most {MAX_PAGE_SIZE}"
            raise InputError(f"{src.path}: page size {ps} does not exist on {self.name} (page sizes: {sizes})")
        bits = vi.number.get("MAX_PHYSMEM_BITS") if vi is not None else None
        if bits is None or not 32 <= bits <= 64:
            bits = self.default_phys_bits(vi)
        top = src.max_mapnr * ps
        if top > 1 << bits:
            raise InputError(f"{src.path}: memory up to {top:#x} lies beyond the {bits}-bit physical address space "
                             f"of {self.name}; the dump's headers are corrupt")


class GenericArch(Arch):
    def __init__(self, e_machine: int) -> None:
        self.e_machine = e_machine
        self.name = uname_of_e_machine(e_machine) or "unknown"


class I386(Arch):
    """32-bit x86: only the kernel image's linear mapping (for the dump header's utsname)."""

    name = "i686"
    e_machine = EM_386
    page_sizes = (4096,)
    PAGE_OFFSET = 0xC0000000

    def kernel_text_to_phys(self, vaddr: int, src: DumpSource, vi: VmcoreInfo) -> int | None:
        return vaddr - self.PAGE_OFFSET if vaddr >= self.PAGE_OFFSET else None

    def default_phys_bits(self, vi: VmcoreInfo | None) -> int:
        return 36  # PAE


def for_machine(e_machine: int) -> Arch:
    """The Arch of a dump whose ELF machine is ``e_machine``."""
    from .arm64 import Arm64Arch
    from .x86_64 import X86_64Arch

    for cls in (X86_64Arch, Arm64Arch, I386):
        if cls.e_machine == e_machine:
            return cls()
    return GenericArch(e_machine)


__all__ = ["Arch", "GenericArch", "Mmu", "UnsupportedArch", "for_machine"]
