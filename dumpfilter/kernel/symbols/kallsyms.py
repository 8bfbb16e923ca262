"""The kernel's own symbol table (kallsyms), decoded from the dump with what VMCOREINFO says of it.

Since Linux 6.0 VMCOREINFO carries ``SYMBOL(kallsyms_names)``, ``kallsyms_num_syms``,
``kallsyms_token_table``, ``kallsyms_token_index``, ``kallsyms_offsets`` and (until 6.16)
``kallsyms_relative_base``. Each name is a length (one byte, or two when the first has bit 7 set)
followed by that many token numbers; a token expands to a NUL-terminated string of the token table
at ``token_index[token]``; the first character of the expanded name is the symbol's type letter.

An address comes from ``kallsyms_offsets[i]`` in one of three ways, depending on the kernel's
configuration: absolute per-cpu (non-negative offsets are absolute, negative ones are
``relative_base - 1 - offset``), relative to ``kallsyms_relative_base``, or (6.16 and later) relative
to the offset entry's own address. VMCOREINFO's ``SYMBOL(_stext)`` tells which: the right rule gives
``_stext`` its VMCOREINFO address.

Lazy: nothing is read before the first lookup; each lookup then expands the names one by one in C
(``_speedups/ksyms.pyx``: a few milliseconds) and keeps only the answer: the expanded table would be
megabytes, and memory in a capture kernel is scarce.
"""
from __future__ import annotations

import struct

from ...errors import DumpfilterError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from ..arch import Mmu
    from ..vmcoreinfo import VmcoreInfo

REQUIRED = ("kallsyms_names", "kallsyms_num_syms", "kallsyms_token_table", "kallsyms_token_index", "kallsyms_offsets")
MAX_SYMS = 1 << 22
MAX_NAMES = 32 << 20  # bytes of kallsyms_names read at most
M64 = (1 << 64) - 1


class KallsymsError(DumpfilterError):
    pass


def available(vi: VmcoreInfo) -> bool:
    return all(k in vi.symbol for k in REQUIRED) and "_stext" in vi.symbol


class Kallsyms:
    def __init__(self, mmu: Mmu, vi: VmcoreInfo) -> None:
        self._mmu = mmu
        self._vi = vi
        self._names: bytearray | None = None
        self._index: memoryview | None = None
        self._table = b""
        self._offsets: memoryview | None = None
        self._rule: Callable[[int], int] | None = None
        self._rule_no = 0
        self._found: dict[str, tuple[int, int]] = {}
        self._base = 0
        self._cache: dict[str, int | None] = {}
        self.count = 0

    def _load(self) -> None:
        if self._names is not None:
            return
        vi, mmu = self._vi, self._mmu
        if not available(vi):
            missing = [k for k in (*REQUIRED, "_stext") if k not in vi.symbol]
            raise KallsymsError(f"VMCOREINFO has no SYMBOL({missing[0]}) (kallsyms needs Linux 6.0 or later)")
        sym = vi.symbol
        try:
            n = struct.unpack("<I", mmu.read(sym["kallsyms_num_syms"], 4))[0]
            if not 0 < n <= MAX_SYMS:
                raise KallsymsError(f"kallsyms_num_syms={n} is not plausible")
            self._index = memoryview(mmu.read(sym["kallsyms_token_index"], 512)).cast("H")  # little-endian hosts
            self._table = mmu.read(sym["kallsyms_token_table"], max(self._index) + 256)
            self._offsets = memoryview(mmu.read(sym["kallsyms_offsets"], 4 * n)).cast("i")
            # the names end before the next kallsyms array that follows them
            start = sym["kallsyms_names"]
            after = [a for k, a in sym.items() if k.startswith("kallsyms_") and a > start]
            size = min(min(after) - start, n * 64, MAX_NAMES) if after else min(n * 32, MAX_NAMES)
            names = bytearray(size)
            mmu.read_into(start, names)
        except ValueError as e:
            raise KallsymsError(f"kallsyms in the dump is corrupt: {e}") from None
        except DumpfilterError as e:
            if isinstance(e, KallsymsError):
                raise
            raise KallsymsError(f"can't read kallsyms from the dump: {e}") from None
        self._names = names
        self.count = n
        self._choose_rule(sym)

    def prefetch(self, names: list[str]) -> None:
        """Look several names up in one pass over the table (each lookup alone is one pass)."""
        from ..._speedups.ksyms import kallsyms_find_many

        self._load()
        assert self._names is not None and self._index is not None
        todo = [n for n in names if n not in self._found]
        if not todo:
            return
        try:
            got = kallsyms_find_many(self._names, self.count, self._table, self._index, [n.encode() for n in todo])
        except ValueError as e:
            raise KallsymsError(f"kallsyms in the dump is corrupt: {e}") from None
        self._found.update(zip(todo, got))

    def _find(self, name: str) -> tuple[int, int]:
        from ..._speedups.ksyms import kallsyms_find

        got = self._found.get(name)
        if got is not None:
            return got
        self._load()
        assert self._names is not None and self._index is not None
        try:
            got = kallsyms_find(self._names, self.count, self._table, self._index, name.encode())
        except ValueError as e:
            raise KallsymsError(f"kallsyms in the dump is corrupt: {e}") from None
        self._found[name] = got
        return got

    def _choose_rule(self, sym: dict[str, int]) -> None:
        offs = self._offsets
        assert offs is not None
        base_sym = sym.get("kallsyms_relative_base")
        base = struct.unpack("<Q", self._mmu.read(base_sym, 8))[0] if base_sym is not None else 0
        offs_addr = sym["kallsyms_offsets"]

        def abs_percpu(i: int) -> int:
            v = int(offs[i])
            return v if v >= 0 else (base - 1 - v) & M64

        def rel_base(i: int) -> int:
            return (base + (int(offs[i]) & 0xFFFFFFFF)) & M64

        def place_rel(i: int) -> int:
            return (offs_addr + 4 * i + int(offs[i])) & M64

        i = self.index("_stext")
        if i is None:
            raise KallsymsError("kallsyms has no _stext")
        rules = ([abs_percpu, rel_base] if base_sym is not None else []) + [place_rel]
        self._rule = next((r for r in rules if r(i) == sym["_stext"]), None)
        if self._rule is None:
            raise KallsymsError("no kallsyms address rule gives _stext its VMCOREINFO address")
        self._rule_no = {abs_percpu: 0, rel_base: 1, place_rel: 2}[self._rule]
        self._base = base

    def index(self, name: str) -> int | None:
        """The kallsyms index of the first symbol called ``name``."""
        i, _ = self._find(name)
        return i if i >= 0 else None

    def address(self, name: str) -> int | None:
        if name in self._cache:
            return self._cache[name]
        i = self.index(name)
        addr = None
        if i is not None:
            if self._rule is None:
                self._choose_rule(self._vi.symbol)
            assert self._rule is not None
            addr = self._rule(i)
        self._cache[name] = addr
        return addr

    def extent(self, name: str) -> int | None:
        """Bytes from the symbol to the next higher symbol address (an upper bound of its size)."""
        a = self.address(name)
        if a is None:
            return None
        from ..._speedups.ksyms import kallsyms_next_above

        assert self._offsets is not None
        nxt = kallsyms_next_above(self._offsets, self._rule_no, self._base, self._vi.symbol["kallsyms_offsets"], a)
        return nxt - a if nxt else None

    def kind(self, name: str) -> str | None:
        """The type letter (T, t, D, d, B, b, R, r, ...) of the first symbol called ``name``."""
        i, letter = self._find(name)
        return chr(letter) if i >= 0 else None

    def names(self) -> dict[str, int]:
        """Every symbol and its address (first occurrence of each name)."""
        from ..._speedups.ksyms import kallsyms_expand

        self._load()
        assert self._names is not None and self._index is not None
        blob, _ = kallsyms_expand(self._names, self.count, self._table, self._index)
        out: dict[str, int] = {}
        for i, entry in enumerate(bytes(blob[1:-1]).split(b"\n")):
            name = entry[1:].decode("ascii", "replace")
            if name not in out:
                if self._rule is None:
                    self._choose_rule(self._vi.symbol)
                assert self._rule is not None
                out[name] = self._rule(i)
        return out
