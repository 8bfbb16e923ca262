"""The kernel's BTF (``CONFIG_DEBUG_INFO_BTF``), read from the dump between ``__start_BTF`` and
``__stop_BTF``.

Layout (include/uapi/linux/btf.h): a header (magic 0xEB9F, version 1, flags, hdr_len, then type and
string section offsets and lengths relative to the header's end), the type section — records of a
12-byte ``btf_type`` (name_off, info: vlen bits 0-15, kind bits 24-28, kind_flag bit 31; size or type)
followed by kind-specific data — and the string section. Type ids count from 1; 0 is void.

Only one pass over the type section is made, on first use, to find where each record starts and
which ids carry which name; a type's members, array bounds and targets are decoded when asked for.
"""
from __future__ import annotations

import struct
from functools import partial

from ...errors import DumpfilterError
from .types import ARRAY, ENUM, FLOAT, FUNC, FWD, INT, PTR, QUAL, STRUCT, TYPEDEF, UNION, VOID_TYPE, CType, Member

BTF_MAGIC = 0xEB9F

K_INT, K_PTR, K_ARRAY, K_STRUCT, K_UNION, K_ENUM, K_FWD, K_TYPEDEF = 1, 2, 3, 4, 5, 6, 7, 8
K_VOLATILE, K_CONST, K_RESTRICT, K_FUNC, K_FUNC_PROTO, K_VAR, K_DATASEC, K_FLOAT = 9, 10, 11, 12, 13, 14, 15, 16
K_DECL_TAG, K_TYPE_TAG, K_ENUM64 = 17, 18, 19

# bytes after the 12-byte header: fixed, and per vlen item
_EXTRA = {K_INT: (4, 0), K_ARRAY: (12, 0), K_STRUCT: (0, 12), K_UNION: (0, 12), K_ENUM: (0, 8),
          K_FUNC_PROTO: (0, 8), K_VAR: (4, 0), K_DATASEC: (0, 12), K_DECL_TAG: (4, 0), K_ENUM64: (0, 12)}


class BtfError(DumpfilterError):
    pass


class Btf:
    """One BTF blob (vmlinux's, or a module's split BTF on top of ``base``)."""

    def __init__(self, data: bytes | bytearray, base: Btf | None = None,
                 sections: tuple[bytearray, bytearray] | None = None) -> None:
        if len(data) < 24:
            raise BtfError("BTF blob too short")
        magic, version, _flags, hdr_len = struct.unpack_from("<HBBI", data, 0)
        if magic != BTF_MAGIC or version != 1:
            raise BtfError(f"not BTF (magic {magic:#x}, version {version})")
        type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", data, 8)
        t0, s0 = hdr_len + type_off, hdr_len + str_off
        if sections is None and (t0 + type_len > len(data) or s0 + str_len > len(data)):
            raise BtfError("BTF sections beyond the blob")
        self.base = base
        if sections is not None:
            self._types: bytes | bytearray = sections[0]
            self._strs: bytes | bytearray = sections[1]
        else:
            mv = memoryview(data)
            self._types = bytes(mv[t0:t0 + type_len])  # the blob itself is not kept
            self._strs = bytes(mv[s0:s0 + str_len])
            mv.release()
        if base is not None:
            base._index()
        self.first_id: int = (base.first_id + base.count) if base is not None else 1
        self.str_base: int = (base.str_base + len(base._strs)) if base is not None else 0
        self._offsets: memoryview | None = None
        self._names: memoryview = memoryview(b"").cast("I")
        self._kinds: bytearray = bytearray()
        self._cache: dict[int, CType] = {}
        self.count: int = 0
        self.ptr_size: int = base.ptr_size if base is not None else 8

    @classmethod
    def read(cls, mmu, va: int, size: int) -> Btf:  # noqa: ANN001 - an Mmu
        """The BTF blob at kernel address ``va``, reading its type and string sections separately (the
        blob is not held twice)."""
        hdr = mmu.read(va, min(size, 24))
        if len(hdr) < 24:
            raise BtfError("BTF blob too short")
        hdr_len = struct.unpack_from("<I", hdr, 4)[0]
        type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", hdr, 8)
        if hdr_len < 24 or hdr_len + max(type_off + type_len, str_off + str_len) > size:
            raise BtfError("BTF sections beyond the blob")
        types = bytearray(type_len)
        mmu.read_into(va + hdr_len + type_off, types)
        strs = bytearray(str_len)
        mmu.read_into(va + hdr_len + str_off, strs)
        return cls(hdr[:hdr_len] if hdr_len <= 24 else mmu.read(va, hdr_len), sections=(types, strs))

    # --- the one pass ------------------------------------------------------------------------
    def _index(self) -> None:
        if self._offsets is not None:
            return
        from ..._speedups.ksyms import btf_scan

        try:
            offs, names, kinds = btf_scan(self._types)
        except ValueError as e:
            raise BtfError(str(e)) from None
        self._offsets = offs
        self._names = names
        self._kinds = kinds
        self.count = len(offs)
        if self.base is None:  # pointer size: that of 'long unsigned int'
            for t in self.ids("long unsigned int"):
                _, info, size = self._hdr(t)
                if (info >> 24) & 0x1F == K_INT:
                    self.ptr_size = size
                    break

    def string(self, off: int) -> str:
        if off < self.str_base and self.base is not None:
            return self.base.string(off)
        off -= self.str_base
        end = self._strs.find(b"\0", off)
        return self._strs[off:end if end >= 0 else None].decode("utf-8", "replace")

    def _owner(self, tid: int) -> Btf:
        b: Btf = self
        while tid < b.first_id and b.base is not None:
            b = b.base
        return b

    def _hdr(self, tid: int) -> tuple[int, int, int]:
        b = self._owner(tid)
        b._index()
        assert b._offsets is not None
        i = tid - b.first_id
        if not 0 <= i < len(b._offsets):
            raise BtfError(f"BTF type id {tid} out of range")
        return struct.unpack_from("<III", b._types, int(b._offsets[i]))

    def _extra(self, tid: int) -> tuple[bytes | bytearray, int]:
        b = self._owner(tid)
        assert b._offsets is not None
        return b._types, int(b._offsets[tid - b.first_id]) + 12

    # --- lookups -----------------------------------------------------------------------------
    def ids(self, name: str) -> list[int]:
        """Ids of the types (of any kind) named ``name``, base BTF first."""
        from ..._speedups.ksyms import u32_find_all

        self._index()
        out = self.base.ids(name) if self.base is not None else []
        key = b"\0" + name.encode() + b"\0"
        pos = self._strs.find(key)
        while pos >= 0:  # BTF strings are deduplicated: normally one hit
            off = self.str_base + pos + 1
            out.extend(h + self.first_id for h in u32_find_all(self._names, off))
            pos = self._strs.find(key, pos + 1)
        return out

    def kind_of(self, tid: int) -> int:
        b = self._owner(tid)
        b._index()
        return int(b._kinds[tid - b.first_id])

    def find(self, name: str, kinds: tuple[int, ...]) -> CType | None:
        for t in self.ids(name):
            if self.kind_of(t) in kinds:
                return self.type(t)
        return None

    def variables(self, name: str) -> list[CType]:
        """Types of the BTF VARs called ``name`` (per-cpu variables; all globals with pahole's global_var)."""
        out = []
        for t in self.ids(name):
            _, info, typ = self._hdr(t)
            if (info >> 24) & 0x1F == K_VAR:
                out.append(self.type(typ))
        return out

    def type(self, tid: int) -> CType:
        if tid == 0:
            return VOID_TYPE
        got = self._cache.get(tid)
        if got is not None:
            return got
        name_off, info, st = self._hdr(tid)
        kind = (info >> 24) & 0x1F
        vlen = info & 0xFFFF
        kflag = info >> 31
        name = self.string(name_off) if name_off else None
        def ref(t: int = st) -> CType:
            return self.type(t)

        t: CType
        if kind == K_INT:
            t = CType(INT, name, st, key=tid)
        elif kind == K_FLOAT:
            t = CType(FLOAT, name, st, key=tid)
        elif kind == K_PTR:
            t = CType(PTR, None, self.ptr_size, target=ref, key=tid)
        elif kind == K_ARRAY:
            buf, o = self._extra(tid)
            elem, _idx, nelems = struct.unpack_from("<III", buf, o)
            t = CType(ARRAY, None, None, length=nelems, target=partial(self.type, elem), key=tid)
        elif kind in (K_STRUCT, K_UNION):
            t = CType(STRUCT if kind == K_STRUCT else UNION, name, st,
                      members=partial(self._members, tid, vlen, kflag), key=tid)
        elif kind in (K_ENUM, K_ENUM64):
            t = CType(ENUM, name, st, key=tid)
        elif kind == K_FWD:
            t = CType(FWD, name, None, key=tid)
        elif kind == K_TYPEDEF:
            t = CType(TYPEDEF, name, None, target=ref, key=tid)
        elif kind in (K_VOLATILE, K_CONST, K_RESTRICT, K_TYPE_TAG):
            t = CType(QUAL, None, None, target=ref, key=tid)
        elif kind == K_FUNC_PROTO:
            t = CType(FUNC, None, None, target=ref, key=tid)
        elif kind in (K_FUNC, K_VAR):
            t = CType(QUAL, name, None, target=ref, key=tid)
        else:
            t = CType(QUAL, name, None, target=lambda: VOID_TYPE, key=tid)
        self._cache[tid] = t
        return t

    def _members(self, tid: int, vlen: int, kflag: int) -> list[Member]:
        buf, o = self._extra(tid)
        out = []
        for i in range(vlen):
            name_off, typ, off = struct.unpack_from("<III", buf, o + 12 * i)
            bits = 0
            if kflag:
                bits, off = off >> 24, off & 0xFFFFFF
            out.append(Member(self.string(name_off) if name_off else None, off, bits, partial(self.type, typ)))
        return out
