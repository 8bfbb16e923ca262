"""Sizes as people and kernels write them: ``64M``, ``4G``, ``0x1000``, ``1073741824``.

One parser for the whole package: the kernel's ``memparse()`` (lib/cmdline.c) on top of
``simple_strtoull(ptr, &end, 0)`` — decimal, ``0x`` hex or leading-``0`` octal, then an optional
K/M/G/T/P/E suffix (powers of 1024). ``-L SIZE``, ``crashkernel=``, ``--ram`` and ``bench --max-size``
all use it.
"""
from __future__ import annotations

from .errors import DumpfilterError

ULLONG_MAX = (1 << 64) - 1
SHIFT = {"k": 10, "m": 20, "g": 30, "t": 40, "p": 50, "e": 60}


class SizeError(DumpfilterError):
    """Not a size."""


def char_at(s: str, i: int) -> str:
    """s[i], or NUL past the end (the C code walks a NUL-terminated string)."""
    return s[i] if i < len(s) else "\0"


def strtoull(s: str, i: int) -> tuple[int, int]:
    base = 10
    if char_at(s, i) == "0":
        if char_at(s, i + 1) in "xX" and char_at(s, i + 2) in "0123456789abcdefABCDEF":
            base, i = 16, i + 2
        else:
            base = 8
    value, j = 0, i
    while j < len(s):
        digit = "0123456789abcdef".find(s[j].lower())
        if digit < 0 or digit >= base:
            break
        value = value * base + digit
        j += 1
    return value, j


def memparse_at(s: str, i: int) -> tuple[int, int]:
    """``memparse(s + i, &end)``: the value and the index just past it (== i: nothing read).

    The value may exceed 64 bits; callers that care compare it with ``ULLONG_MAX``."""
    value, j = strtoull(s, i)
    shift = SHIFT.get(char_at(s, j).lower())
    if shift is not None:
        value <<= shift
        j += 1
    return value, j


def parse_size(text: str) -> int:
    """A whole string like ``4G``, ``512M``, ``0x1000`` or ``1073741824`` (user input, strict: no sign,
    no trailing characters, at most 64 bits)."""
    t = text.strip()
    value, end = memparse_at(t, 0) if t else (0, 0)
    if not t or end != len(t) or not t[0].isdigit() or value > ULLONG_MAX:
        raise SizeError(f"{text!r} is not a size (a number with an optional K/M/G/T/P/E suffix)")
    return value


def format_size(n: int) -> str:
    """The largest K/M/G/T unit that divides ``n`` exactly: 64M, 1536M, 2G, 4096 bytes → 4K."""
    for suffix, shift in (("T", 40), ("G", 30), ("M", 20), ("K", 10)):
        if n and n % (1 << shift) == 0:
            return f"{n >> shift}{suffix}"
    return str(n)
