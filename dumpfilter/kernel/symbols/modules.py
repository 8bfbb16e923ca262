"""Loaded modules, seen from the dump: the ``modules`` list, each module's own symbol table
(``struct module.kallsyms``: an ELF symbol array and its string table, run-time addresses) and its BTF
(``btf_data``/``btf_data_size``, split BTF on top of the kernel's; ``CONFIG_DEBUG_INFO_BTF_MODULES``).
Used for ``[module]`` sections of a config file and by plugins (``ctx.module(name)``)."""
from __future__ import annotations

import struct

from ...errors import DumpfilterError
from . import DumpSymbols, KernelSymbols, SymbolError, _btf_named_type, btf_struct
from .types import CType

MAX_MODULES = 4096
MAX_SYMTAB = 1 << 20


def module_table(k: DumpSymbols) -> dict[str, int]:
    head = k.need_address("modules")
    o_list = k.offsetof("struct module", "list")
    o_name = k.offsetof("struct module", "name")
    out: dict[str, int] = {}
    node = int.from_bytes(k.mmu.read(head, 8), "little")
    while node and node != head and len(out) < MAX_MODULES:
        mod = node - o_list
        try:
            name = k.mmu.read(mod + o_name, 56).split(b"\0", 1)[0].decode("ascii", "replace")
            node = int.from_bytes(k.mmu.read(node, 8), "little")
        except DumpfilterError:
            break  # a list cut by unmapped memory: the modules before the cut
        out.setdefault(name, mod)
    return out


class ModuleSymbols(KernelSymbols):
    """A module's symbols and types first, then the kernel's."""

    def __init__(self, kernel: DumpSymbols, name: str, addr: int) -> None:
        self.kernel = kernel
        self.name = name
        self.addr = addr
        self.ptr_size = kernel.ptr_size
        self.describe = f"module {name}: its kallsyms and BTF from the dump"
        self.mmu = kernel.mmu
        self._syms: dict[str, int] | None = None
        self._btf = None
        self._btf_tried = False

    def _symbols(self) -> dict[str, int]:
        if self._syms is None:
            k = self.kernel
            ks = int.from_bytes(k.mmu.read(self.addr + k.offsetof("struct module", "kallsyms"), 8), "little")
            out: dict[str, int] = {}
            if ks:
                symtab = int.from_bytes(k.mmu.read(ks + k.offsetof("struct mod_kallsyms", "symtab"), 8), "little")
                n = int.from_bytes(k.mmu.read(ks + k.offsetof("struct mod_kallsyms", "num_symtab"), 4), "little")
                strtab = int.from_bytes(k.mmu.read(ks + k.offsetof("struct mod_kallsyms", "strtab"), 8), "little")
                if not 0 <= n <= MAX_SYMTAB:
                    raise SymbolError(f"module {self.name}: {n} symbols is not plausible")
                raw = k.mmu.read(symtab, 24 * n)
                names = {}
                for i in range(n):
                    st_name, _info, _other, _shndx, value, _size = struct.unpack_from("<IBBHQQ", raw, 24 * i)
                    if st_name and value:
                        names[st_name] = value
                if names:
                    last = strtab + max(names)
                    # the last name may end near unmapped memory: read to its page's end at most
                    strs = k.mmu.read(strtab, min(max(names) + 256, last - last % 4096 + 4096 - strtab))
                    for off, value in names.items():
                        end = strs.find(b"\0", off)
                        out.setdefault(strs[off:end].decode("ascii", "replace"), value)
            self._syms = out
        return self._syms

    @property
    def btf(self):  # noqa: ANN201 - a Btf or None
        if not self._btf_tried:
            self._btf_tried = True
            from .btf import Btf, BtfError

            k = self.kernel
            try:
                data, size = self._btf_location()
                if data and 0 < size < 1 << 26:
                    self._btf = Btf(k.mmu.read(data, size), base=k.btf)
            except (BtfError, SymbolError, DumpfilterError):
                self._btf = None
        return self._btf

    def _btf_location(self) -> tuple[int, int]:
        """(address, size) of the module's BTF: ``module.btf_data`` while loading; once loaded (the
        data is freed) the ``struct btf`` that ``btf_modules`` keeps for it."""
        k = self.kernel
        rd = lambda va, n: int.from_bytes(k.mmu.read(va, n), "little")  # noqa: E731
        data = rd(self.addr + k.offsetof("struct module", "btf_data"), 8)
        if data:
            return data, rd(self.addr + k.offsetof("struct module", "btf_data_size"), 4)
        head = k.address("btf_modules")
        if head is None:
            return 0, 0
        o_list, o_mod = k.offsetof("struct btf_module", "list"), k.offsetof("struct btf_module", "module")
        o_btf = k.offsetof("struct btf_module", "btf")
        node, seen = rd(head, 8), 0
        while node and node != head and seen < MAX_MODULES:
            bm = node - o_list
            if rd(bm + o_mod, 8) == self.addr:
                btf = rd(bm + o_btf, 8)
                return (rd(btf + k.offsetof("struct btf", "data"), 8),
                        rd(btf + k.offsetof("struct btf", "data_size"), 4))
            node, seen = rd(node, 8), seen + 1
        return 0, 0

    def address(self, name: str) -> int | None:
        got = self._symbols().get(name)
        return got if got is not None else self.kernel.address(name)

    def var_type(self, name: str) -> CType | None:
        b = self.btf
        if b is not None:
            got = b.variables(name)
            if got:
                return got[0]
        return self.kernel.var_type(name)

    def struct(self, name: str) -> CType | None:
        b = self.btf
        return (btf_struct(b, name) if b is not None else None) or self.kernel.struct(name)

    def _named_type(self, spec: str) -> CType | None:
        b = self.btf
        return (_btf_named_type(b, spec) if b is not None else None) or self.kernel.lookup_type(spec)
