"""VMCOREINFO: the kernel's KEY=VALUE note, parsed with makedumpfile's rules (filtering.md §2.2).

Lines are read until the first one that starts with NUL; lookups are prefix matches on the whole
key including ``=``, and the first matching line wins.
"""
from __future__ import annotations

import re

from ..record import dataclass, field
from ..errors import VmcoreinfoError

_DEC = re.compile(r"^\s*[+-]?[0-9]+$")
_HEX = re.compile(r"^\s*[+-]?(0[xX])?[0-9a-fA-F]+$")
_FAMILY = re.compile(r"^(SYMBOL|SIZE|OFFSET|LENGTH|NUMBER)\((.+)\)=(.*)$")


def _split_lines(blob: bytes) -> list[str]:
    lines: list[str] = []
    for raw in blob.split(b"\n"):
        if raw[:1] == b"\0":
            break
        lines.append(raw.split(b"\0", 1)[0].decode("ascii", "replace"))
    return lines


# Every value ends up in a 64-bit field (a C long or unsigned long in the kernel, a struct field or a
# u64 in the dump we write): one that does not fit is invalid where it enters, as makedumpfile's
# strtoul() turns it into ULONG_MAX, which it refuses. Signed values may be negative (phys_base);
# unsigned ones use the whole range (NUMBER(kimage_voffset)).
_MIN_LONG = -(1 << 63)
_MAX_ULONG = (1 << 64) - 1
_MAX_DIGITS = 24  # more digits than any 64-bit value has: refused before int() does the work


def _in_range(v: int, text: str, key: str, lo: int = _MIN_LONG) -> int:
    if not lo <= v <= _MAX_ULONG:
        raise VmcoreinfoError(f"VMCOREINFO: {key}={text.strip()[:40]!r} does not fit in 64 bits")
    return v


def _parse_long(text: str, key: str) -> int:
    digits = text.strip().lstrip("+-")
    if len(digits) > _MAX_DIGITS and len(digits.lstrip("0")) > _MAX_DIGITS - 2:
        raise VmcoreinfoError(f"VMCOREINFO: {key}={text.strip()[:40]!r}... does not fit in 64 bits")
    if _DEC.match(text):
        return _in_range(int(text, 10), text, key)
    if _HEX.match(text):
        return _in_range(int(text, 16), text, key)
    raise VmcoreinfoError(f"VMCOREINFO: invalid value {text!r} for {key}")


def parse_address(text: str, key: str) -> int:
    """A hexadecimal address (SYMBOL(), KERNELOFFSET): 0 .. 2^64-1; ValueError otherwise."""
    if len(text.strip().lstrip("+-").lstrip("0")) > _MAX_DIGITS:
        raise ValueError(f"{key}: too many digits")
    v = int(text, 16)
    if not 0 <= v <= _MAX_ULONG:
        raise ValueError(f"{key}={text!r} does not fit in 64 bits")
    return v


@dataclass
class VmcoreInfo:
    """Typed tables of a VMCOREINFO note. Missing keys are absent from the dicts."""

    lines: list[str]
    raw: bytes = b""
    symbol: dict[str, int] = field(default_factory=dict)
    size: dict[str, int] = field(default_factory=dict)
    offset: dict[str, int] = field(default_factory=dict)
    length: dict[str, int] = field(default_factory=dict)
    number: dict[str, int] = field(default_factory=dict)

    @classmethod
    def parse(cls, blob: bytes) -> VmcoreInfo:
        lines = _split_lines(blob)
        vi = cls(lines=lines, raw=blob)
        tables = {"SIZE": vi.size, "OFFSET": vi.offset, "LENGTH": vi.length, "NUMBER": vi.number}
        for line in lines:
            m = _FAMILY.match(line)
            if not m:
                continue
            fam, name, val = m.groups()
            if fam == "SYMBOL":
                if name in vi.symbol:
                    continue
                try:
                    v = parse_address(val, f"SYMBOL({name})")
                except ValueError:
                    continue  # reported when the key is actually needed
                vi.symbol[name] = v
            else:
                table = tables[fam]
                if name in table:
                    continue
                try:
                    table[name] = _parse_long(val, f"{fam}({name})")
                except VmcoreinfoError:
                    continue
        return vi

    def get(self, key: str) -> str | None:
        """Value of the first line starting with ``key=`` (key without the ``=``)."""
        prefix = key + "="
        for line in self.lines:
            if line.startswith(prefix):
                return line[len(prefix) :]
        return None

    # --- basic keys --------------------------------------------------------------------------
    @property
    def osrelease(self) -> str | None:
        v = self.get("OSRELEASE")
        return v[:64] if v is not None else None

    def _decimal(self, key: str) -> int | None:
        """A decimal basic key's value; None if absent; ValueError if it is not a number."""
        v = self.get(key)
        if v is not None and len(v.strip().lstrip("+-").lstrip("0")) > _MAX_DIGITS:
            raise ValueError(f"{key}: too many digits")
        return None if v is None else int(v, 10)

    @property
    def page_size(self) -> int | None:
        try:
            ps = self._decimal("PAGESIZE")
        except ValueError:
            ps = 0
        if ps is not None and (ps < 1024 or ps > 65536 or ps & (ps - 1)):
            raise VmcoreinfoError(f"VMCOREINFO: invalid PAGESIZE={(self.get('PAGESIZE') or '')[:40]!r}")
        return ps

    @property
    def crashtime(self) -> int | None:
        """Seconds since the epoch; None when absent, zero, or not a time a dump header can hold."""
        try:
            t = self._decimal("CRASHTIME")
        except ValueError:
            return None
        return t if t is not None and 0 < t < 1 << 63 else None

    @property
    def kerneloffset(self) -> int | None:
        v = self.get("KERNELOFFSET")
        if v is None:
            return None
        try:
            return parse_address(v, "KERNELOFFSET")
        except ValueError:
            raise VmcoreinfoError(f"VMCOREINFO: invalid KERNELOFFSET={v[:40]!r}") from None

    def need(self, table: str, name: str) -> int:
        d = {"SIZE": self.size, "OFFSET": self.offset, "LENGTH": self.length, "NUMBER": self.number}[table]
        if name not in d:
            raise VmcoreinfoError(f"VMCOREINFO has no {table}({name})")
        return d[name]
