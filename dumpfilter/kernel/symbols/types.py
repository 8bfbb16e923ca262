"""One small model of C types for every source of kernel type information (BTF in the dump, DWARF of
a ``-x`` vmlinux): what erase filters, plugins and the debuggability check need — sizes, member offsets,
array lengths, pointer targets — and nothing else.

Types are built lazily by their source: a struct's members are only read when asked for.
"""
from __future__ import annotations

from collections.abc import Callable

# kinds
INT = "int"  # integers, bool, char (``name`` is the C name)
FLOAT = "float"
ENUM = "enum"
PTR = "pointer"
ARRAY = "array"
STRUCT = "struct"
UNION = "union"
TYPEDEF = "typedef"
QUAL = "qualifier"  # const / volatile / restrict / type tags: transparent
FUNC = "function"  # a function type (``target`` is the return type)
VOID = "void"
FWD = "forward"  # a declaration without a definition


class Member:
    __slots__ = ("name", "bit_offset", "bit_size", "_type", "_resolve")

    def __init__(self, name: str | None, bit_offset: int, bit_size: int, resolve: Callable[[], CType]) -> None:
        self.name = name  # None for an anonymous struct/union member
        self.bit_offset = bit_offset
        self.bit_size = bit_size  # 0 unless a bitfield
        self._type: CType | None = None
        self._resolve = resolve

    @property
    def offset(self) -> int:
        """Byte offset in the enclosing struct."""
        return self.bit_offset // 8

    @property
    def type(self) -> CType:
        if self._type is None:
            self._type = self._resolve()
        return self._type

    def __repr__(self) -> str:
        return f"Member({self.name!r}, +{self.offset})"


class CType:
    """A C type. ``target`` is lazy (pointers to structs may be cyclic); ``members`` too."""

    __slots__ = ("kind", "name", "_size", "length", "_target", "_target_fn", "_members", "_members_fn", "key")

    def __init__(self, kind: str, name: str | None = None, size: int | None = None, *,
                 length: int = 0, target: Callable[[], CType] | None = None,
                 members: Callable[[], list[Member]] | None = None, key: object = None) -> None:
        self.kind = kind
        self.name = name  # struct/union/enum tag, typedef name, base type name; None if anonymous
        self._size = size
        self.length = length  # array: number of elements (0 for a flexible array)
        self._target: CType | None = None
        self._target_fn = target
        self._members: list[Member] | None = None
        self._members_fn = members
        self.key = key  # the source's identity of this type

    @property
    def target(self) -> CType | None:
        """Pointee, element, aliased or qualified type, function return type; None for void."""
        if self._target is None and self._target_fn is not None:
            self._target = self._target_fn()
            self._target_fn = None
        return self._target

    @property
    def members(self) -> list[Member]:
        if self._members is None:
            self._members = self._members_fn() if self._members_fn is not None else []
            self._members_fn = None
        return self._members

    @property
    def size(self) -> int | None:
        """Bytes; None when the type has no size (void, functions, declarations)."""
        if self._size is not None:
            return self._size
        if self.kind in (TYPEDEF, QUAL):
            t = self.target
            return t.size if t is not None else None
        if self.kind == ARRAY:
            t = self.target
            es = t.size if t is not None else None
            return es * self.length if es is not None else None
        return None

    def strip(self) -> CType:
        """This type without typedefs and qualifiers."""
        t = self
        while t.kind in (TYPEDEF, QUAL) and t.target is not None:
            t = t.target
        return t

    def member(self, name: str) -> tuple[int, Member] | None:
        """(byte offset, member) of ``name``, looking into anonymous structs and unions."""
        for m in self.strip().members:
            if m.name == name:
                return m.offset, m
            if m.name is None:
                inner = m.type.strip()
                if inner.kind in (STRUCT, UNION):
                    got = inner.member(name)
                    if got is not None:
                        return m.offset + got[0], got[1]
        return None

    def describe(self) -> str:
        k = self.kind
        if k in (STRUCT, UNION, ENUM):
            return f"{k} {self.name or '<anonymous>'}"
        if k == PTR:
            t = self.target
            return f"{t.describe() if t is not None else 'void'} *"
        if k == ARRAY:
            t = self.target
            return f"{t.describe() if t is not None else '?'}[{self.length}]"
        if k == QUAL:
            t = self.target
            return t.describe() if t is not None else "void"
        return self.name or k

    def __repr__(self) -> str:
        return f"CType({self.describe()}, size={self._size})"


VOID_TYPE = CType(VOID, "void")
