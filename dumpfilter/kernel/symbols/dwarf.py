"""``-x VMLINUX``: symbols from the vmlinux's ELF symbol table (pyelftools finds the sections; the
table is searched as bytes, so only the names asked for are decoded) and types from its DWARF (drgn
indexes it in C on all cores: a 6.1 vmlinux in about a second, where a Python DWARF walk takes
minutes). Addresses are link-time ones moved by VMCOREINFO's ``KERNELOFFSET`` (KASLR), as
makedumpfile does.
"""
from __future__ import annotations

import struct
from functools import partial

from .types import ARRAY, ENUM, FLOAT, FUNC, INT, PTR, STRUCT, TYPEDEF, UNION, VOID, VOID_TYPE, CType, Member
from . import KernelSymbols, SymbolError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..vmcoreinfo import VmcoreInfo


class ElfSymtab:
    """A vmlinux's .symtab, searched lazily."""

    def __init__(self, path: str) -> None:
        from elftools.common.exceptions import ELFError
        from elftools.elf.elffile import ELFFile

        try:
            self._f = open(path, "rb")  # noqa: SIM115 - kept open for the lookups
        except OSError as e:
            raise SymbolError(f"Can't open the vmlinux {path}: {e.strerror}") from None
        try:
            elf = ELFFile(self._f)
            symtab = elf.get_section_by_name(".symtab")
            if symtab is None:
                raise SymbolError(f"{path} has no symbol table")
            strtab = elf.get_section(symtab["sh_link"])
            self.elf = elf
            self.machine = elf["e_machine"]
            self.elfclass = elf.elfclass
            self._syms = symtab.data()
            self._entsize = symtab["sh_entsize"] or (24 if elf.elfclass == 64 else 16)
            self._strs = strtab.data()
        except ELFError as e:
            raise SymbolError(f"{path} is not a usable ELF file: {e}") from None
        self._cache: dict[str, int | None] = {}
        self._name_index: dict[int, list[int]] | None = None

    def _by_name_off(self) -> dict[int, list[int]]:
        if self._name_index is None:
            idx: dict[int, list[int]] = {}
            es = self._entsize
            for i, (name,) in enumerate(struct.iter_unpack("<I" + "x" * (es - 4), self._syms)):
                if name:
                    idx.setdefault(name, []).append(i)
            self._name_index = idx
        return self._name_index

    def value(self, name: str) -> int | None:
        """st_value of the first symbol called ``name`` (makedumpfile's get_symbol_addr)."""
        if name in self._cache:
            return self._cache[name]
        key = name.encode() + b"\0"
        idx = self._by_name_off()
        strs = self._strs
        found = None
        cands: list[int] = []
        pos = strs.find(key)
        while pos >= 0:  # linkers share string tails: a name may start inside a longer one
            cands.extend(idx.get(pos, ()))
            pos = strs.find(key, pos + 1)
        if cands:
            best = min(cands)
            off = best * self._entsize
            if self.elfclass == 64:
                found = struct.unpack_from("<Q", self._syms, off + 8)[0]
            else:
                found = struct.unpack_from("<I", self._syms, off + 4)[0]
        self._cache[name] = found
        return found


class _DrgnTypes:
    """drgn Types turned into CTypes, lazily and once each."""

    def __init__(self, prog) -> None:  # noqa: ANN001
        self.prog = prog
        self._cache: dict[int, CType] = {}

    def convert(self, t) -> CType:  # noqa: ANN001 - drgn.Type
        from drgn import TypeKind

        key = id(t)
        got = self._cache.get(key)
        if got is not None:
            return got
        k = t.kind
        c: CType
        if k == TypeKind.VOID:
            c = VOID_TYPE
        elif k in (TypeKind.INT, TypeKind.BOOL):
            c = CType(INT, t.name, t.size, key=t)
        elif k == TypeKind.FLOAT:
            c = CType(FLOAT, t.name, t.size, key=t)
        elif k == TypeKind.POINTER:
            c = CType(PTR, None, t.size, target=lambda: self.convert(t.type), key=t)
        elif k == TypeKind.ARRAY:
            c = CType(ARRAY, None, None, length=t.length or 0, target=lambda: self.convert(t.type), key=t)
        elif k in (TypeKind.STRUCT, TypeKind.UNION, TypeKind.CLASS):
            kind = UNION if k == TypeKind.UNION else STRUCT
            if not t.is_complete():
                c = CType(kind, t.tag, None, key=t)
            else:
                c = CType(kind, t.tag, t.size, members=lambda: self._members(t), key=t)
        elif k == TypeKind.ENUM:
            c = CType(ENUM, t.tag, t.type.size if t.is_complete() else None,
                      target=(lambda: self.convert(t.type)) if t.is_complete() else None, key=t)
        elif k == TypeKind.TYPEDEF:
            c = CType(TYPEDEF, t.name, None, target=lambda: self.convert(t.type), key=t)
        elif k == TypeKind.FUNCTION:
            c = CType(FUNC, None, None, target=lambda: self.convert(t.type), key=t)
        else:
            c = CType(VOID, str(k), None, key=t)
        self._cache[key] = c
        return c

    def _members(self, t) -> list[Member]:  # noqa: ANN001
        out = []
        for m in t.members:
            out.append(Member(m.name, m.bit_offset, m.bit_field_size or 0, partial(self.convert, m.type)))
        return out


class VmlinuxSymbols(KernelSymbols):
    def __init__(self, path: str, vi: VmcoreInfo | None) -> None:
        self.path = path
        self.symtab = ElfSymtab(path)
        self.kaslr = (vi.kerneloffset or 0) if vi is not None else 0
        self.ptr_size = 8 if self.symtab.elfclass == 64 else 4
        self.describe = f"the vmlinux {path}"
        self._prog = None
        self._types: _DrgnTypes | None = None

    @property
    def types(self) -> _DrgnTypes:
        if self._types is None:
            try:
                import drgn
            except ImportError:
                raise SymbolError("-x needs drgn to read DWARF (pip install drgn)") from None
            prog = drgn.Program()  # the platform comes from the file
            try:
                mod = prog.extra_module("vmlinux", 0, create=True)
                mod.try_file(self.path, force=True)
            except Exception as e:  # noqa: BLE001 - drgn reports ELF/DWARF problems with several types
                raise SymbolError(f"{self.path}: can't read its DWARF: {e}") from None
            if mod.debug_file_path is None:
                raise SymbolError(f"{self.path}: no usable DWARF debug information")
            self._prog = prog
            self._types = _DrgnTypes(prog)
        return self._types

    def address(self, name: str) -> int | None:
        v = self.symtab.value(name)
        if v is None or v == 0:
            return None
        return (v + self.kaslr) & ((1 << 64) - 1)

    def link_address(self, name: str) -> int | None:
        return self.symtab.value(name)

    def var_type(self, name: str) -> CType | None:
        tt = self.types
        try:
            obj = tt.prog.variable(name)
        except (LookupError, ValueError):
            return None
        return tt.convert(obj.type_)

    def struct(self, name: str) -> CType | None:
        tt = self.types
        for spec in (f"struct {name}", name):
            try:
                t = tt.prog.type(spec)
            except (LookupError, ValueError, SyntaxError):
                continue
            c = tt.convert(t).strip()
            if c.kind == STRUCT and c.size:
                return c
        return None

    def _named_type(self, spec: str) -> CType | None:
        tt = self.types
        try:
            return tt.convert(tt.prog.type(spec))
        except (LookupError, ValueError, SyntaxError):
            return None

    def array_length(self, name: str) -> int | None:
        t = self.var_type(name)
        if t is None:
            return None
        t = t.strip()
        return t.length if t.kind == ARRAY else None


__all__ = ["ElfSymtab", "VmlinuxSymbols"]
_ = (ENUM, TYPEDEF)
