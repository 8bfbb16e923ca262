"""A flattened device tree (DTB) read into nodes and written back: enough for a kexec loader to hand
the next kernel its ``/chosen`` node (Devicetree Specification v0.4, chapter 5 "Flattened Devicetree
(DTB) Format"; the kernel's scripts/dtc/libfdt is the reference implementation).

Layout, all big-endian: a 40-byte header (magic 0xd00dfeed, totalsize, off_dt_struct, off_dt_strings,
off_mem_rsvmap, version, last_comp_version, boot_cpuid_phys, size_dt_strings, size_dt_struct); the
memory reservation block ((address, size) u64 pairs ending with 0, 0); the structure block (tokens
BEGIN_NODE name, PROP len nameoff value, END_NODE, NOP, END, each 4-byte aligned); the strings block.
We write version 17 (last compatible 16), as dtc does.
"""
from __future__ import annotations

import struct

from ..errors import DumpfilterError

MAGIC = 0xD00DFEED
_HEADER = struct.Struct(">10I")
BEGIN_NODE, END_NODE, PROP, NOP, END = 1, 2, 3, 4, 9


class FdtError(DumpfilterError):
    """A device tree blob that is not one."""


class Node:
    """One node: its name (``""`` for the root), properties in order, children in order."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.props: dict[str, bytes] = {}
        self.children: list[Node] = []

    def child(self, name: str, create: bool = False) -> Node | None:
        for c in self.children:
            if c.name == name:
                return c
        if not create:
            return None
        c = Node(name)
        self.children.append(c)
        return c

    def u32(self, name: str, default: int) -> int:
        v = self.props.get(name)
        return struct.unpack(">I", v)[0] if v is not None and len(v) == 4 else default


def cells(values: list[int], ncells: int) -> bytes:
    """Numbers as ``ncells`` big-endian 32-bit cells each (an ``<address size>`` pair, ...)."""
    out = b""
    for v in values:
        if v >> (32 * ncells):
            raise FdtError(f"{v:#x} does not fit in {ncells} cells")
        out += v.to_bytes(4 * ncells, "big")
    return out


def _align4(n: int) -> int:
    return (n + 3) & ~3


class Fdt:
    """A parsed DTB: ``root`` node tree, the memory reservation entries and the boot CPU."""

    def __init__(self, root: Node, reserve: list[tuple[int, int]], boot_cpuid: int = 0) -> None:
        self.root = root
        self.reserve = reserve
        self.boot_cpuid = boot_cpuid

    @classmethod
    def parse(cls, blob: bytes) -> Fdt:
        if len(blob) < _HEADER.size:
            raise FdtError(f"a device tree is at least {_HEADER.size} bytes, this one has {len(blob)}")
        (magic, total, off_struct, off_strings, off_rsv, version, _last, boot_cpuid, size_strings,
         size_struct) = _HEADER.unpack_from(blob)
        if magic != MAGIC:
            raise FdtError(f"not a device tree blob (magic {magic:#x}, not {MAGIC:#x})")
        if total > len(blob) or version < 16:
            raise FdtError(f"device tree version {version}, {total} bytes, is truncated or too old ({len(blob)} bytes)")
        strings = blob[off_strings : off_strings + size_strings]
        reserve = []
        off = off_rsv
        while True:
            addr, size = struct.unpack_from(">QQ", blob, off)
            off += 16
            if addr == 0 and size == 0:
                break
            reserve.append((addr, size))
        end = off_struct + (size_struct if version >= 17 else total - off_struct)
        off = off_struct
        stack: list[Node] = []
        root: Node | None = None
        while off < end:
            (tok,) = struct.unpack_from(">I", blob, off)
            off += 4
            if tok == BEGIN_NODE:
                nul = blob.index(b"\0", off)
                node = Node(blob[off:nul].decode("ascii", "replace"))
                off = _align4(nul + 1)
                if stack:
                    stack[-1].children.append(node)
                elif root is None:
                    root = node
                else:
                    raise FdtError("a second root node")
                stack.append(node)
            elif tok == END_NODE:
                if not stack:
                    raise FdtError("END_NODE without a node")
                stack.pop()
            elif tok == PROP:
                if not stack:
                    raise FdtError("a property outside any node")
                length, nameoff = struct.unpack_from(">II", blob, off)
                off += 8
                nul = strings.index(b"\0", nameoff)
                stack[-1].props[strings[nameoff:nul].decode("ascii", "replace")] = bytes(blob[off : off + length])
                off = _align4(off + length)
            elif tok == NOP:
                continue
            elif tok == END:
                break
            else:
                raise FdtError(f"unknown structure token {tok} at offset {off - 4}")
        if root is None or stack:
            raise FdtError("the structure block does not hold one complete tree")
        return cls(root, reserve, boot_cpuid)

    def node(self, path: str, create: bool = False) -> Node | None:
        n: Node | None = self.root
        for part in [p for p in path.split("/") if p]:
            assert n is not None
            n = n.child(part, create)
            if n is None:
                return None
        return n

    def to_bytes(self) -> bytes:
        strings = bytearray()
        offsets: dict[str, int] = {}
        struct_blk = bytearray()

        def name_off(name: str) -> int:
            if name not in offsets:
                offsets[name] = len(strings)
                strings.extend(name.encode() + b"\0")
            return offsets[name]

        def emit(node: Node) -> None:
            name = node.name.encode() + b"\0"
            struct_blk.extend(struct.pack(">I", BEGIN_NODE) + name + b"\0" * (_align4(len(name)) - len(name)))
            for k, v in node.props.items():
                struct_blk.extend(struct.pack(">III", PROP, len(v), name_off(k)) + v + b"\0" * (_align4(len(v)) - len(v)))
            for c in node.children:
                emit(c)
            struct_blk.extend(struct.pack(">I", END_NODE))

        emit(self.root)
        struct_blk.extend(struct.pack(">I", END))
        rsv = b"".join(struct.pack(">QQ", a, s) for a, s in self.reserve) + b"\0" * 16
        off_rsv = (_HEADER.size + 7) & ~7  # the reservation block is 8-byte aligned
        off_struct = off_rsv + len(rsv)
        off_strings = off_struct + len(struct_blk)
        total = off_strings + len(strings)
        head = _HEADER.pack(MAGIC, total, off_struct, off_strings, off_rsv, 17, 16, self.boot_cpuid, len(strings),
                            len(struct_blk))
        return head + b"\0" * (off_rsv - len(head)) + rsv + bytes(struct_blk) + bytes(strings)
