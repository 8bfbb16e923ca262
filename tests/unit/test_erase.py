"""Erase filters (filter/erase.py) on a small fake kernel: the config language, what each command
erases (makedumpfile's rules), the page rule of the hook, eraseinfo; and the BTF and kallsyms readers on
hand-made blobs."""
from __future__ import annotations

import struct

import numpy as np
import pytest

from dumpfilter.filter.erase import ConfigError, EraseList, ErasePlan, parse_config, resolve_config
from dumpfilter.kernel.symbols import KernelSymbols
from dumpfilter.kernel.symbols.btf import Btf
from dumpfilter.kernel.symbols.types import ARRAY, INT, PTR, STRUCT, TYPEDEF, CType, Member

BASE = 0xFFFF800000000000
PS = 4096


class FakeMem:
    def __init__(self, size: int = 16 * PS) -> None:
        self.mem = bytearray(size)

    def read(self, va: int, size: int) -> bytes:
        o = va - BASE
        return bytes(self.mem[o:o + size]).ljust(size, b"\0")

    def vtop(self, va: int) -> int:
        return va - BASE

    def put(self, va: int, data: bytes) -> None:
        self.mem[va - BASE:va - BASE + len(data)] = data


def _types():
    char = CType(INT, "char", 1)
    ulong = CType(INT, "long unsigned int", 8)
    uint = CType(INT, "unsigned int", 4)
    lh: CType = CType(STRUCT, "list_head", 16)
    lh._members = [Member("next", 0, 0, lambda: CType(PTR, None, 8, target=lambda: lh)),
                   Member("prev", 64, 0, lambda: CType(PTR, None, 8, target=lambda: lh))]
    task: CType = CType(STRUCT, "task", 64)
    task._members = [
        Member("name", 0, 0, lambda: CType(ARRAY, None, None, length=8, target=lambda: char)),
        Member("cmd", 64, 0, lambda: CType(PTR, None, 8, target=lambda: char)),
        Member("len", 128, 0, lambda: CType(TYPEDEF, "u32", None, target=lambda: uint)),
        # makedumpfile's member search descends into list_head before a later 'next': keep next first
        Member("next", 320, 0, lambda: CType(PTR, None, 8, target=lambda: task)),
        Member("list", 192, 0, lambda: lh),
        Member("secret", 384, 0, lambda: CType(PTR, None, 8, target=lambda: ulong)),
    ]
    return {"char": char, "task": task, "list_head": lh, "ulong": ulong}


class FakeSyms(KernelSymbols):
    describe = "fake"

    def __init__(self, addrs: dict[str, int], vars: dict[str, CType], structs: dict[str, CType]) -> None:
        self.addrs, self.vars, self.structs = addrs, vars, structs

    def address(self, name):
        return self.addrs.get(name)

    def var_type(self, name):
        return self.vars.get(name)

    def struct(self, name):
        return self.structs.get(name)

    def _named_type(self, spec):
        return self.structs.get(spec.split()[-1])


@pytest.fixture()
def kernel():
    t = _types()
    mem = FakeMem()
    # three tasks on a list headed by 'tasks'; task i at BASE + PS*(1+i)
    head = BASE + 0x100
    tasks = [BASE + PS * (1 + i) for i in range(3)]
    nodes = [head] + [a + 24 for a in tasks]
    for i, n in enumerate(nodes):
        mem.put(n, struct.pack("<QQ", nodes[(i + 1) % 4], nodes[i - 1]))
    for i, a in enumerate(tasks):
        mem.put(a, f"task{i}".encode())
        mem.put(a + 8, struct.pack("<Q", BASE + 0x800 + 0x40 * i))
        mem.put(BASE + 0x800 + 0x40 * i, b"cmd of %d\0" % i)
        mem.put(a + 16, struct.pack("<I", 5 + i))
        mem.put(a + 40, struct.pack("<Q", tasks[i + 1] if i < 2 else 0))
        mem.put(a + 48, struct.pack("<Q", BASE + 0xA00 + 8 * i))
    syms = FakeSyms({"tasks": head, "first": tasks[0], "size_var": BASE + 0x200},
                    {"tasks": t["list_head"], "first": t["task"], "size_var": CType(INT, "int", 4)},
                    {"task": t["task"], "list_head": t["list_head"]})
    mem.put(BASE + 0x200, struct.pack("<i", 6))
    return syms, mem, tasks


def _resolve(text, kernel):
    syms, mem, _ = kernel
    return resolve_config(text, syms, mem, None)


def test_parse_tokens_sections_and_errors():
    cmds = parse_config("# c\n[vmlinux]\nerase a.b\tsize 4K\n[mod]\nerase  c nullify\nfor x in y via next\n erase x.z\nendfor\n")
    assert [c.module for c in cmds] == [None, "mod", "mod"]
    assert cmds[0].sizes[0].size == 4096 and cmds[1].filters[0].nullify
    assert cmds[2].iter_entry.name == "x" and cmds[2].list_entry.next.name == "next"
    for bad, msg in (("erase\n", "expected kernel symbol"), ("for x in y\nerase x.a\n", "No matching 'endfor'"),
                     ("bogus\n", "Invalid token 'bogus'"), ("for x y\n", "expected token 'in'"),
                     ("for x in y\nerase z\nendfor\n", "unused iteration variable"),
                     ("erase a size -1\n", "size value must be positive")):
        with pytest.raises(ConfigError, match=msg):
            parse_config(bad)


def test_members_strings_arrays_nullify_and_size_var(kernel):
    syms, mem, tasks = kernel
    e = _resolve("erase first.name\nerase first.cmd\nerase first.secret nullify\nerase first.len size size_var\n"
                 "erase first.next.name size 2\n", kernel)
    got = sorted((r.paddr, r.size, r.nullify) for r in e.ranges)
    a = tasks[0] - BASE
    assert got == sorted([(a, 8, False), (0x800, len("cmd of 0"), False), (a + 48, 8, True), (a + 16, 6, False),
                          (tasks[1] - BASE, 2, False)])
    assert e.exprs[1:] == ["first.name", "first.cmd", "first.secret", "first.len", "first.next.name"]


def test_loops_list_via_and_eraseinfo(kernel):
    syms, mem, tasks = kernel
    e = _resolve("for t in tasks within task:list\n erase t.name\n erase t.secret nullify\nendfor\n"
                 "for u in first via next\n erase u.len\nendfor\n", kernel)
    plan = ErasePlan(e, PS, is_dumped=lambda pfn: True)
    assert plan.eraseinfo.decode().splitlines() == (
        ["erase t.name size 8"] * 3 + ["erase t.secret nullify"] * 3 + ["erase u.len size 4"] * 3)


def test_unknown_symbol_and_member_are_errors(kernel):
    with pytest.raises(ConfigError, match="Can't find symbol 'nope'"):
        _resolve("erase nope\n", kernel)
    with pytest.raises(ConfigError, match="has no member with name 'nope'"):
        _resolve("erase first.nope\n", kernel)


def test_page_rule_and_same_address():
    e = EraseList()
    e.add(0, PS - 10, 30, False, None)  # crosses into page 1
    e.add(0, 2 * PS - 5, 20, False, None)  # crosses into page 2, which is not dumped
    e.add(0, 3 * PS, 4, False, None)
    assert e.add(0, 3 * PS, 8, False, None) is None and e.ranges[-1].size == 8  # same address: larger size
    plan = ErasePlan(e, PS, is_dumped=lambda pfn: pfn != 2)
    pages = memoryview(bytearray(4 * PS))
    plan.hook([0, 1, 2, 3], pages)
    b = bytes(pages)
    assert b[PS - 10:PS + 20] == b"X" * 30 and b[2 * PS - 5:2 * PS] == b"X" * 5
    assert b[2 * PS:2 * PS + 15] == bytes(15) and b[3 * PS:3 * PS + 8] == b"X" * 8
    assert plan.erased_bytes == 30 + 5 + 8


def _btf_blob() -> bytes:
    strs = b"\0int\0long unsigned int\0foo\0a\0b\0bits\0foo_t\0"
    off = {s: strs.index(b"\0" + s.encode() + b"\0") + 1 for s in ("int", "long unsigned int", "foo", "a", "b", "bits", "foo_t")}
    types = b""
    types += struct.pack("<III", off["int"], 1 << 24, 4) + struct.pack("<I", 32)  # 1 int
    types += struct.pack("<III", off["long unsigned int"], 1 << 24, 8) + struct.pack("<I", 64)  # 2 ulong
    types += struct.pack("<III", 0, 2 << 24, 1)  # 3 int *
    types += struct.pack("<III", 0, 3 << 24, 0) + struct.pack("<III", 1, 1, 5)  # 4 int[5]
    types += struct.pack("<III", off["foo"], (4 << 24) | 3 | (1 << 31), 40)  # 5 struct foo, kind_flag
    types += struct.pack("<III", off["a"], 3, 0) + struct.pack("<III", off["b"], 4, 64)
    types += struct.pack("<III", off["bits"], 1, (3 << 24) | 256)
    types += struct.pack("<III", off["foo_t"], 8 << 24, 5)  # 6 typedef foo_t
    hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strs))
    return hdr + types + strs


def test_btf_reader():
    b = Btf(_btf_blob())
    foo = b.find("foo", (4,))
    assert foo is not None and foo.size == 40 and b.ptr_size == 8
    assert foo.member("b")[0] == 8 and foo.member("b")[1].type.length == 5 and foo.member("b")[1].type.size == 20
    assert foo.member("a")[1].type.target.name == "int"
    bits = foo.member("bits")[1]
    assert bits.bit_offset == 256 and bits.bit_size == 3
    assert b.find("foo_t", (8,)).strip() is foo
    assert b.ids("nothing") == []


def test_kallsyms_expand():
    from dumpfilter._speedups.ksyms import kallsyms_expand

    tokens = [bytes([i]) if 32 < i < 127 else b"" for i in range(256)]
    tokens[1], tokens[2] = b"init_", b"task"
    table = b"".join(t + b"\0" for t in tokens)
    index = np.array(np.cumsum([0] + [len(t) + 1 for t in tokens[:-1]]), dtype=np.uint16)
    names = bytes([3, ord("D"), 1, 2, 3, ord("T"), 1, ord("x")])
    blob, used = kallsyms_expand(names, 2, table, index)
    assert blob == b"\nDinit_task\nTinit_x\n" and used == len(names)
    with pytest.raises(ValueError):
        kallsyms_expand(names, 3, table, index)
