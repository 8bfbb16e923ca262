"""Kernel symbols and types, from the dump itself or from a debuginfo vmlinux: one lookup interface.

``KernelSymbols`` answers: the (run-time, KASLR-relocated) address of a symbol, the type of a global
variable, a struct by name, a type by C spelling. Two implementations:

- ``DumpSymbols`` (no ``-x``): kallsyms decoded from the dump (``kallsyms.py``, VMCOREINFO's
  ``SYMBOL(kallsyms_*)``, Linux 6.0+) and the kernel's BTF read from the dump between ``__start_BTF``
  and ``__stop_BTF`` (``btf.py``). BTF describes global variables only when pahole encoded them (it
  always does for per-cpu ones); for others the type comes from ``WELL_KNOWN`` below or must be given
  (plugins name their types).
- ``VmlinuxSymbols`` (``-x VMLINUX``): ELF symbols with pyelftools, DWARF types with drgn
  (``dwarf.py``); addresses are moved by VMCOREINFO's ``KERNELOFFSET``.

Everything is lazy: nothing is decoded until a lookup asks for it.
"""
from __future__ import annotations

from ...errors import DumpfilterError
from .types import STRUCT, CType

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..arch import Mmu
    from ..vmcoreinfo import VmcoreInfo


class SymbolError(DumpfilterError):
    pass


#: the C types of globals that kernel BTF does not describe (it only has per-cpu VARs unless pahole
#: encoded global variables), for config files and plugins that name them; ``[]`` is an array of
#: unknown length resolved from the symbol table's next symbol if needed (not done: length 0)
WELL_KNOWN: dict[str, str] = {
    # only globals whose C type has been the same on every kernel with kallsyms in VMCOREINFO (6.0+)
    # and on every architecture; a type larger than the symbol's extent in kallsyms is refused
    "init_task": "struct task_struct",
    "init_uts_ns": "struct uts_namespace",
    "saved_command_line": "char *",
    "init_mm": "struct mm_struct",
    "init_pid_ns": "struct pid_namespace",
    "init_net": "struct net",
    "init_cred": "struct cred",
    "init_user_ns": "struct user_namespace",
    "init_fs": "struct fs_struct",
    "init_files": "struct files_struct",
    "init_ipc_ns": "struct ipc_namespace",
    "modules": "struct list_head",
    "super_blocks": "struct list_head",
    "prb": "struct printk_ringbuffer *",
    "jiffies_64": "u64",
    "max_pfn": "long unsigned int",
    "nr_cpu_ids": "unsigned int",
    "mem_section": "struct mem_section **",
    "key_user_tree": "struct rb_root",
    "key_serial_tree": "struct rb_root",
    "root_key_user": "struct key_user",
    "log_buf": "char *",
    "log_buf_len": "u32",
    "vmcoreinfo_data": "unsigned char *",
}


class KernelSymbols:
    """The lookup interface (see the module doc)."""

    describe = "none"
    ptr_size = 8

    def address(self, name: str) -> int | None:
        raise NotImplementedError

    def var_type(self, name: str) -> CType | None:
        raise NotImplementedError

    def struct(self, name: str) -> CType | None:
        """A complete ``struct NAME``, or a typedef NAME of a struct (makedumpfile's search)."""
        raise NotImplementedError

    def lookup_type(self, spec: str) -> CType | None:
        """A type by C spelling: ``struct x``, ``union x``, ``enum x``, a typedef or base name, with
        any number of trailing ``*`` and one trailing ``[N]``."""
        spec = spec.strip()
        if spec.endswith("]") and "[" in spec:
            base, _, n = spec[:-1].rpartition("[")
            elem = self.lookup_type(base)
            if elem is None:
                return None
            from .types import ARRAY
            return CType(ARRAY, None, None, length=int(n.strip() or "0", 0), target=lambda: elem)
        if spec.endswith("*"):
            inner = self.lookup_type(spec[:-1])
            if inner is None:
                return None
            from .types import PTR
            return CType(PTR, None, self.ptr_size, target=lambda: inner)
        return self._named_type(spec)

    def _named_type(self, spec: str) -> CType | None:
        raise NotImplementedError

    def prefetch(self, names: list[str]) -> None:
        """A hint: these symbols will be looked up (a source may find them in one pass)."""

    def module(self, name: str) -> KernelSymbols | None:
        """The symbols of loaded module ``name`` (its own first, then the kernel's), or None when the
        module is not loaded or this source can't see into modules."""
        return None

    def modules(self) -> list[str]:
        """Names of the loaded modules this source can see into."""
        return []

    def need_address(self, name: str) -> int:
        a = self.address(name)
        if a is None:
            raise SymbolError(f"symbol {name} not found ({self.describe})")
        return a

    def need_type(self, spec: str) -> CType:
        t = self.lookup_type(spec)
        if t is None:
            raise SymbolError(f"type {spec} not found ({self.describe})")
        return t

    def sizeof(self, spec: str) -> int:
        t = self.need_type(spec)
        if t.size is None:
            raise SymbolError(f"type {spec} has no size")
        return t.size

    def offsetof(self, struct_spec: str, member_path: str) -> int:
        t = self.need_type(struct_spec)
        off = 0
        for m in member_path.split("."):
            got = t.member(m)
            if got is None:
                raise SymbolError(f"{t.describe()} has no member {m}")
            off += got[0]
            t = got[1].type
        return off


class DumpSymbols(KernelSymbols):
    """kallsyms + BTF, both read from the dump."""

    def __init__(self, mmu: Mmu, vi: VmcoreInfo) -> None:
        from .kallsyms import Kallsyms

        self.mmu = mmu
        self.vi = vi
        self.kallsyms = Kallsyms(mmu, vi)
        self._btf = None
        self._mods: dict[str, int] | None = None
        self.describe = "kallsyms and BTF from the dump"

    @property
    def btf(self):  # noqa: ANN201 - Btf, imported lazily
        if self._btf is None:
            from .btf import Btf, BtfError

            self.prefetch(["__start_BTF", "__stop_BTF"])
            start, stop = self.address("__start_BTF"), self.address("__stop_BTF")
            if start is None or stop is None or not 0 < stop - start < 1 << 28:
                raise BtfError("the dump's kernel has no BTF (__start_BTF/__stop_BTF not in kallsyms)")
            self._btf = Btf.read(self.mmu, start, stop - start)
            self._btf._index()
            self.ptr_size = self._btf.ptr_size
        return self._btf

    def address(self, name: str) -> int | None:
        v = self.vi.symbol.get(name)
        if v is not None:
            return v
        return self.kallsyms.address(name)

    def prefetch(self, names: list[str]) -> None:
        self.kallsyms.prefetch([n for n in names if n not in self.vi.symbol])

    def var_type(self, name: str) -> CType | None:
        got = self.btf.variables(name)
        if got:
            return got[0]
        spec = WELL_KNOWN.get(name)
        if not spec:
            return None
        t = self.lookup_type(spec)
        ext = self.kallsyms.extent(name)
        if t is not None and t.size is not None and ext is not None and t.size > ext:
            raise SymbolError(f"{name}: {spec} ({t.size} bytes) does not fit the symbol's {ext} bytes in kallsyms; "
                              "its type differs in this kernel (give -x VMLINUX)")
        return t

    def struct(self, name: str) -> CType | None:
        return btf_struct(self.btf, name)

    def _named_type(self, spec: str) -> CType | None:
        return _btf_named_type(self.btf, spec)

    def _module_table(self) -> dict[str, int]:
        """Loaded modules: name -> struct module address (the ``modules`` list)."""
        if self._mods is None:
            from .modules import module_table

            self._mods = module_table(self)
        return self._mods

    def modules(self) -> list[str]:
        try:
            return list(self._module_table())
        except DumpfilterError:
            return []

    def module(self, name: str) -> KernelSymbols | None:
        from .modules import ModuleSymbols

        try:
            addr = self._module_table().get(name)
        except DumpfilterError:
            return None
        return ModuleSymbols(self, name, addr) if addr is not None else None


def _btf_named_type(btf, spec: str) -> CType | None:  # noqa: ANN001 - a Btf
    from .btf import K_ENUM, K_ENUM64, K_FLOAT, K_INT, K_STRUCT, K_TYPEDEF, K_UNION

    words = spec.split()
    if not words:
        return None
    if words[0] in ("struct", "union", "enum") and len(words) == 2:
        kinds = {"struct": (K_STRUCT,), "union": (K_UNION,), "enum": (K_ENUM, K_ENUM64)}[words[0]]
        return btf.find(words[1], kinds)
    return btf.find(" ".join(words), (K_TYPEDEF, K_INT, K_FLOAT))


def btf_struct(btf, name: str) -> CType | None:  # noqa: ANN001 - a Btf
    """makedumpfile's struct search on BTF: a complete struct NAME, or a typedef NAME of one."""
    from .btf import K_STRUCT, K_TYPEDEF

    for tid in btf.ids(name):
        k = btf.kind_of(tid)
        if k == K_STRUCT and btf.type(tid).size:
            return btf.type(tid)
        if k == K_TYPEDEF:
            t = btf.type(tid).strip()
            if t.kind == STRUCT and t.size:
                return t
    return None


def open_symbols(mmu: Mmu, vi: VmcoreInfo, vmlinux: str | None = None) -> KernelSymbols:
    """The symbols of the dump's kernel: from ``vmlinux`` (``-x``) if given, else from the dump."""
    if vmlinux is not None:
        from .dwarf import VmlinuxSymbols

        return VmlinuxSymbols(vmlinux, vi)
    return DumpSymbols(mmu, vi)


__all__ = ["CType", "DumpSymbols", "KernelSymbols", "SymbolError", "WELL_KNOWN", "open_symbols"]
