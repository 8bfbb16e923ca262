"""Erase filters: makedumpfile.conf (``--config``, formats-cli.md §5.9) and the byte ranges plugins ask
for, applied through a page hook while pages are copied, recorded as eraseinfo (§1.8).

The config language, and what each command erases, follow makedumpfile's ``erase_info.c`` so that the
same file erases the same bytes:

- ``erase SYM[.member...]``: the size is the type's (an array: length × element; a ``char *`` is
  followed and its string erased, at most 1024 bytes; any other pointer is followed and the pointee
  erased); ``size N[K|M]``; ``size SYM[.member...]`` (a variable of base type holds the size);
  ``nullify`` (a pointer becomes 0).
- ``for ID in ARRAY | STRUCTVAR via NEXT | LISTHEAD within STRUCT:MEMBER`` … ``endfor``.
- Members are looked up by the *name* of the enclosing struct (as makedumpfile's DWARF search does):
  a member found first inside a named or anonymous sub-struct wins, a member of a union-typed member
  can't be named, an anonymous type ends the path.
- A range is translated to a physical address once and erased physically contiguous from there.
  It is erased only in dumped pages: from its first page on, while the following pages are dumped.
  Ranges at the same physical address keep the larger size. Erased bytes become ``'X'``, nullified
  ones 0.
- eraseinfo: one line ``erase EXPR size N`` / ``erase EXPR nullify`` per command and loop iteration
  that erased something, in the order the commands were first inserted.

Type facts come from ``KernelSymbols`` (BTF+kallsyms from the dump, or DWARF of ``-x``), through
``base_type`` and ``find_member`` which reproduce makedumpfile's DWARF walk on our type model.
"""
from __future__ import annotations

import struct
from collections.abc import Iterable

from ..bitmap import Bitmap
from ..errors import DumpfilterError
from ..kernel.symbols import KernelSymbols
from ..kernel.symbols.types import ARRAY, FLOAT, FUNC, INT, ENUM, PTR, QUAL, STRUCT, UNION, VOID, CType
from ..record import dataclass, field

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..filter import DumpBitmaps
    from ..kernel.arch import Mmu
    from ..report import Messages

STRLEN_MAX = 1024

# makedumpfile's type flags
T_BASE, T_ARRAY, T_PTR, T_STRUCT, T_LIST_HEAD = 1, 2, 4, 8, 16
# entry flags
SYMBOL_ENTRY, FILTER_ENTRY, SIZE_ENTRY, ITERATION_ENTRY, LIST_ENTRY, TRAVERSAL_ENTRY, VAR_ENTRY, RESOLVED = (
    1, 2, 4, 8, 16, 32, 64, 128)
KEYWORDS = {"erase", "size", "nullify", "for", "in", "via", "within", "endfor"}


class ConfigError(DumpfilterError):
    pass


# --- type facts, as makedumpfile's DWARF walk sees them --------------------------------------------

@dataclass
class TypeFacts:
    name: str | None  # the innermost type's name ("char", "task_struct", "void" for a void pointer)
    size: int  # its size (not the array's); -1 when it has none
    flags: int
    array_length: int  # first dimension when the type itself (past one qualifier) is an array, else 0


def base_type(t: CType, ptr_size: int) -> TypeFacts:
    """Follow ``t`` through typedefs, qualifiers, pointers, arrays, enums and function returns to the
    innermost type, collecting pointer/array/struct/base flags (makedumpfile's get_dwarf_base_type)."""
    flags = 0
    length = 0
    first = t
    if first.kind == QUAL and first.target is not None:
        first = first.target
    if first.kind == ARRAY:
        length = first.length
    cur = t
    while True:
        k = cur.kind
        if k == ARRAY:
            flags |= T_ARRAY
        elif k == PTR:
            flags |= T_PTR
        elif k == STRUCT:
            flags |= T_STRUCT
        elif k in (INT, FLOAT, ENUM):
            flags |= T_BASE
        nxt = cur.target if k not in (STRUCT, UNION, INT, FLOAT, ENUM) else None
        if nxt is None or nxt.kind == VOID:
            break
        cur = nxt
    name = cur.name if cur.kind not in (PTR, ARRAY, QUAL, FUNC) else None
    if name is None and flags == T_PTR:
        name = "void"
    size = cur.size
    if cur.kind == PTR:
        size = ptr_size
    return TypeFacts(name, size if size is not None else -1, flags, length)


def find_member(container: CType, name: str) -> tuple[int, CType] | None:
    """(offset, type) of member ``name``: depth first in declaration order, descending into every
    struct or union typed member whose name differs (makedumpfile's search_member)."""
    union = container.kind == UNION
    for m in container.members:
        if m.name != name:
            mt = m.type
            if mt.kind in (STRUCT, UNION):
                got = find_member(mt, name)
                if got is not None:
                    return m.offset + got[0], got[1]
            continue
        return (0 if union else m.offset), m.type
    return None


# --- the config file --------------------------------------------------------------------------------

class Entry:
    """One node of ``Symbol.member.member`` (makedumpfile's config_entry)."""

    def __init__(self, name: str | None, flag: int, line: int) -> None:
        self.name = name
        self.flag = flag
        self.line = line
        self.next: Entry | None = None
        self.refer_to: Entry | None = None
        self.symbol_expr: str | None = None
        self.nullify = False
        self.sym_addr = 0
        self.vaddr = 0
        self.size = 0
        self.offset = 0
        self.type_name: str | None = None
        self.type_flag = 0
        self.array_length = 0
        self.index = 0
        self.cmp_addr = 0
        self.erase_idx = 0
        self.untyped_ok = False  # a bare symbol with size/nullify may lack a type (kernel BTF lacks most globals)


def _chain(token: str, flag: int, line: int) -> Entry:
    head: Entry | None = None
    prev: Entry | None = None
    depth = 0
    for part in token.split("."):
        if not part:
            continue
        e = Entry(None, flag, line)
        if depth == 0:
            e.flag |= SYMBOL_ENTRY
        if flag & ITERATION_ENTRY:
            if depth > 0:
                raise ConfigError(f"Config error at {line}: Invalid iteration variable entry.")
            e.name = part
        if flag & (FILTER_ENTRY | LIST_ENTRY):
            e.name = part
        if flag & SIZE_ENTRY:
            num = _size_number(part) if depth == 0 else None
            if num is not None:
                if num < 0:
                    raise ConfigError(f"Config error at {line}: size value must be positive.")
                e.size = num
                e.flag |= RESOLVED
            else:
                e.name = part
        if prev is None:
            head = e
        else:
            prev.next = e
        prev = e
        depth += 1
    if head is None:
        raise ConfigError(f"Config error at {line}: empty symbol expression")
    return head


def _size_number(text: str) -> int | None:
    """sscanf("%ld%c"): a leading decimal number, with a K/M suffix (any other trailing text ignored)."""
    i = 0
    if i < len(text) and text[i] in "+-":
        i += 1
    j = i
    while j < len(text) and text[j].isdigit():
        j += 1
    if j == i:
        return None
    n = int(text[:j])
    suffix = text[j:j + 1]
    if suffix in ("M", "m"):
        n *= 1024 * 1024
    elif suffix in ("K", "k"):
        n *= 1024
    return n


@dataclass
class Command:
    """One ``erase`` or one ``for`` loop, in a module section (None: vmlinux)."""

    module: str | None
    line: int
    filters: list[Entry] = field(default_factory=list)
    sizes: list[Entry | None] = field(default_factory=list)
    list_entry: Entry | None = None
    iter_entry: Entry | None = None


class _Tokens:
    """makedumpfile's tokenizer: '#' comments, tabs as spaces, ``[module]`` sections at column 0."""

    def __init__(self, text: str) -> None:
        self.items: list[tuple[str, int, str | None, bool]] = []  # token, line, module, starts a section
        module: str | None = None
        new_section = False
        for n, raw in enumerate(text.split("\n"), 1):
            line = raw.split("#", 1)[0].replace("\t", " ")
            if line.startswith("["):
                end = line.find("]")
                if end < 0:
                    raise ConfigError(f"Config error at {n}: Invalid module section entry.")
                module = line[1:end]
                new_section = True
                continue
            for tok in line.split(" "):
                if tok:
                    self.items.append((tok, n, module, new_section))
                    new_section = False
        self.pos = 0

    def peek(self) -> tuple[str, int, str | None, bool] | None:
        return self.items[self.pos] if self.pos < len(self.items) else None

    def take(self, expected: str | None = None, new_cmd: bool = False) -> str | None:
        it = self.peek()
        if it is None:
            return None
        tok, _line, _mod, starts = it
        if starts and not new_cmd:
            return None
        if expected is not None and tok != expected:
            return None
        self.pos += 1
        return tok

    @property
    def line(self) -> int:
        it = self.peek()
        return it[1] if it else (self.items[-1][1] if self.items else 0)


def parse_config(text: str) -> list[Command]:
    toks = _Tokens(text)
    cmds: list[Command] = []
    while toks.peek() is not None:
        tok, line, module, _ = toks.items[toks.pos]
        if toks.take("erase", new_cmd=True):
            cmd = Command(module if module not in (None, "vmlinux") else None, line)
            _read_erase(toks, cmd, line)
        elif toks.take("for", new_cmd=True):
            cmd = Command(module if module not in (None, "vmlinux") else None, line)
            _read_for(toks, cmd, line)
        else:
            raise ConfigError(f"Config error at {line}: Invalid token '{tok}'.")
        cmds.append(cmd)
    return cmds


def _read_erase(toks: _Tokens, cmd: Command, line: int) -> None:
    tok = toks.take()
    if tok is None or tok in KEYWORDS:
        raise ConfigError(f"Config error at {line}: expected kernel symbol after 'erase' command.")
    fe = _chain(tok, FILTER_ENTRY, line)
    fe.symbol_expr = tok
    it = cmd.iter_entry
    if it is not None:
        if fe.name != it.name:
            raise ConfigError(f"Config error at {line}: unused iteration variable '{it.name}'.")
        fe.flag = (fe.flag & ~SYMBOL_ENTRY) | VAR_ENTRY
        fe.refer_to = it
    size_e: Entry | None = None
    if toks.take("nullify"):
        fe.nullify = True
    elif toks.take("size"):
        st = toks.take()
        if st is None or st in KEYWORDS:
            raise ConfigError(f"Config error at {line}: expected size symbol after 'size' keyword.")
        size_e = _chain(st, SIZE_ENTRY, line)
        if it is not None and size_e.name is not None and size_e.name == it.name:
            size_e.flag = (size_e.flag & ~SYMBOL_ENTRY) | VAR_ENTRY
            size_e.refer_to = it
    fe.untyped_ok = fe.next is None and (fe.nullify or size_e is not None)
    cmd.filters.append(fe)
    cmd.sizes.append(size_e)


def _read_for(toks: _Tokens, cmd: Command, line: int) -> None:
    tok = toks.take()
    if tok is None or tok in KEYWORDS:
        raise ConfigError(f"Config error at {line}: expected iteration VAR entry after 'for' keyword.")
    cmd.iter_entry = _chain(tok, ITERATION_ENTRY, line)
    if not toks.take("in"):
        raise ConfigError(f"Config error at {line}: expected token 'in'.")
    tok = toks.take()
    if tok is None or tok in KEYWORDS:
        raise ConfigError(f"Config error at {line}: expected list symbol after 'in' keyword.")
    cmd.list_entry = _chain(tok, LIST_ENTRY, line)
    if toks.take("via"):
        member = toks.take()
        if member is None:
            raise ConfigError(f"Config error at {line}: expected member name after 'via' keyword.")
        last = cmd.list_entry
        while last.next is not None:
            last = last.next
        last.next = _chain(member, LIST_ENTRY, line)
        last.next.flag = (last.next.flag | TRAVERSAL_ENTRY) & ~SYMBOL_ENTRY
    elif toks.take("within"):
        spec = toks.take()
        if spec is None or spec in KEYWORDS:
            raise ConfigError(f"Config error at {line}: expected struct name after 'within' keyword.")
        sname, sep, lh = spec.partition(":")
        if sep:
            if not lh:
                raise ConfigError(f"Config error at {line}: expected list_head member after ':'.")
            cmd.iter_entry.next = _chain(lh, ITERATION_ENTRY, line)
            cmd.iter_entry.next.flag &= ~SYMBOL_ENTRY
        if not sname:
            raise ConfigError(f"Config error at {line}: Invalid token found after 'within' keyword.")
        cmd.iter_entry.type_name = sname
    while True:
        if toks.take("endfor"):
            return
        nxt = toks.peek()
        if nxt is None or nxt[3]:
            raise ConfigError(f"Config error at {toks.line}: No matching 'endfor' found.")
        if toks.take("erase"):
            _read_erase(toks, cmd, toks.line)
        else:
            bad = toks.take()
            raise ConfigError(f"Config error at {toks.line}: Invalid token '{bad}'.")


# --- resolving commands into physical ranges ---------------------------------------------------------

@dataclass
class Range:
    paddr: int
    size: int
    nullify: bool
    fill: int  # byte value for non-nullify ranges ('X')
    erase_idx: int  # 0: not recorded in eraseinfo
    size_idx: int
    vaddr: int = 0


class EraseList:
    """The ranges to erase, sorted by physical address, and the eraseinfo commands they belong to."""

    def __init__(self) -> None:
        self.ranges: list[Range] = []
        self._by_paddr: dict[int, Range] = {}
        self.exprs: list[str] = [""]  # index 0 unused, as in makedumpfile
        self.num_sizes: list[int] = [0]

    def add(self, vaddr: int, paddr: int, size: int, nullify: bool, entry: Entry | None,
            fill: int = 0x58) -> Range | None:
        """Add a range (makedumpfile's insert_filter_info): None when one at ``paddr`` existed (it
        keeps the larger size and this command gets no eraseinfo line for it)."""
        old = self._by_paddr.get(paddr)
        if old is not None:
            old.size = max(old.size, size)
            return None
        idx = 0
        if entry is not None:
            if entry.erase_idx:
                idx = entry.erase_idx
                self.num_sizes[idx] += 1
            else:
                idx = len(self.exprs)
                self.exprs.append(entry.symbol_expr or "")
                self.num_sizes.append(1)
                entry.erase_idx = idx
        r = Range(paddr, size, nullify, fill, idx, self.num_sizes[idx] - 1 if idx else 0, vaddr)
        self._by_paddr[paddr] = r
        self.ranges.append(r)
        return r

    def add_piece(self, vaddr: int, paddr: int, size: int, nullify: bool, like: Range | None) -> None:
        """A further piece of a range that ``like`` started (same eraseinfo line)."""
        old = self._by_paddr.get(paddr)
        if old is not None:
            old.size = max(old.size, size)
            return
        r = Range(paddr, size, nullify, 0x58, like.erase_idx if like else 0, like.size_idx if like else 0, vaddr)
        self._by_paddr[paddr] = r
        self.ranges.append(r)


class Resolver:
    """Turns parsed commands into ``EraseList`` ranges by reading the dump's memory."""

    def __init__(self, syms: KernelSymbols, mmu: Mmu, out: EraseList, msgs: Messages | None = None) -> None:
        self.syms = syms
        self.mmu = mmu
        self.out = out
        self.msgs = msgs
        self.ptr = syms.ptr_size

    def warn(self, text: str) -> None:
        if self.msgs is not None:
            self.msgs.error(text)

    # memory
    def read_ptr(self, va: int) -> int:
        try:
            return int.from_bytes(self.mmu.read(va, self.ptr), "little")
        except DumpfilterError:
            self.warn("Can't read pointer value")
            return 0

    def strlen(self, va: int) -> int:
        try:
            buf = self.mmu.read(va, STRLEN_MAX)
        except DumpfilterError:
            return 0
        n = buf.find(b"\0")
        return STRLEN_MAX if n < 0 else n

    # type facts
    def _symbol_facts(self, name: str) -> TypeFacts | None:
        t = self.syms.var_type(name)
        return base_type(t, self.ptr) if t is not None else None

    def _member_facts(self, struct_name: str, member: str) -> tuple[int, TypeFacts] | None:
        st = self.syms.struct(struct_name)
        if st is None:
            return None
        got = find_member(st, member)
        if got is None:
            return None
        return got[0], base_type(got[1], self.ptr)

    def resolve(self, ce: Entry, base_vaddr: int, base_struct: str | None) -> bool:
        if ce.flag & SYMBOL_ENTRY:
            if not ce.name:
                return False
            addr = self.syms.address(ce.name)
            if not addr:
                raise ConfigError(f"Config error at {ce.line}: Can't find symbol '{ce.name}'.")
            ce.sym_addr = addr
            facts = self._symbol_facts(ce.name)
            if facts is None and ce.untyped_ok:
                # no type (a global BTF does not describe): erase at the symbol itself, as data; with
                # nullify, the symbol is taken to be the pointer
                facts = TypeFacts("void" if ce.nullify else "<untyped>", 0, T_PTR if ce.nullify else T_BASE, 0)
                if ce.nullify:
                    ce.sym_addr = addr
                    ce.type_name, ce.size, ce.type_flag = facts.name, 0, facts.flags
                    ce.vaddr = addr
                    ce.flag |= RESOLVED
                    return True
            if facts is None:
                raise ConfigError(f"Config error at {ce.line}: no type for symbol '{ce.name}' "
                                  f"({self.syms.describe}; give -x VMLINUX)")
            ce.type_name, ce.size, ce.type_flag = facts.name, facts.size, facts.flags
            if facts.flags & T_ARRAY:
                ce.array_length = max(0, facts.array_length)
        elif ce.flag & VAR_ENTRY:
            r = ce.refer_to
            assert r is not None
            ce.vaddr, ce.sym_addr, ce.size, ce.type_flag = r.vaddr, r.sym_addr, r.size, r.type_flag
            if ce.type_name is None:
                ce.type_name = r.type_name
            if ce.next is not None:
                ce.next.flag &= ~RESOLVED
            return True
        else:
            got = self._member_facts(base_struct, ce.name or "") if base_struct else None
            if got is None:
                raise ConfigError(f"Config error at {ce.line}: struct '{base_struct}' has no member with name "
                                  f"'{ce.name}'.")
            ce.offset, facts = got
            ce.sym_addr = base_vaddr + ce.offset
            ce.type_name, ce.size, ce.type_flag = facts.name, facts.size, facts.flags
            if facts.flags & T_ARRAY:
                ce.array_length = max(0, facts.array_length)
        if ce.type_name is None:  # an anonymous type: makedumpfile's DWARF search can't name it either
            if ce.flag & SYMBOL_ENTRY:
                raise ConfigError(f"Config error at {ce.line}: the type of '{ce.name}' has no name.")
            raise ConfigError(f"Config error at {ce.line}: struct '{base_struct}' has no member with name "
                              f"'{ce.name}' (its type has no name).")
        if ce.type_name == "list_head":
            ce.type_flag |= T_LIST_HEAD
            if ce.flag & LIST_ENTRY and ce.next is not None:
                if ce.next.next is not None:
                    raise ConfigError(f"Config error at {ce.line}: Only one traversal entry is allowed for "
                                      "list_head type LIST entry")
                ce.next.flag |= TRAVERSAL_ENTRY
        ce.vaddr = ce.sym_addr
        if ce.size < 0:
            ce.size = 0
        if ce.flag & LIST_ENTRY and ce.next is None:
            if (ce.type_flag & (T_BASE | T_ARRAY)) == T_BASE and ce.type_name != "void":
                return False
            if ce.type_flag & T_LIST_HEAD or (ce.type_flag & (T_STRUCT | T_ARRAY)) == T_STRUCT:
                if not ce.flag & TRAVERSAL_ENTRY:
                    ce.next = _chain("next", LIST_ENTRY, ce.line)
                    ce.next.flag = (ce.next.flag | TRAVERSAL_ENTRY) & ~SYMBOL_ENTRY
            if ce.flag & TRAVERSAL_ENTRY and base_struct != ce.type_name:
                return False
        if (ce.type_flag & (T_ARRAY | T_PTR)) == T_PTR:
            ce.vaddr = self.read_ptr(ce.sym_addr)
            if ce.type_name == "void":
                ce.size = 0
        if ce.type_flag & T_BASE and ce.type_flag & T_PTR and not ce.type_flag & T_ARRAY:
            if ce.type_name == "char":
                ce.size = self.strlen(ce.vaddr)
        if ce.next is None and ce.flag & SIZE_ENTRY:
            if (ce.type_flag & (T_ARRAY | T_BASE)) != T_BASE or ce.size > 8:
                raise ConfigError(f"Config error at {ce.line}: size symbol/member '{ce.name}' is not of base type.")
            try:
                raw = self.mmu.read(ce.vaddr, ce.size)
            except DumpfilterError:
                raise ConfigError("Can't read symbol/member data value") from None
            if ce.size in (1, 2, 4, 8):
                ce.size = int.from_bytes(raw, "little")
        ce.flag |= RESOLVED
        if ce.next is not None:
            ce.next.flag &= ~RESOLVED
        return True

    def symbol_addr(self, ce: Entry, base_vaddr: int, base_struct: str | None) -> int:
        while True:
            if not ce.flag & RESOLVED and not self.resolve(ce, base_vaddr, base_struct):
                return 0
            if ce.next is not None and ce.vaddr:
                ce.next.nullify = ce.nullify
                base_vaddr, base_struct, ce = ce.vaddr, ce.type_name, ce.next
                continue
            if ce.next is None and ce.nullify:
                return ce.sym_addr if ce.type_flag & T_PTR else 0
            return ce.vaddr

    def symbol_size(self, ce: Entry, base_vaddr: int, base_struct: str | None) -> int:
        while True:
            if not ce.flag & RESOLVED and not self.resolve(ce, base_vaddr, base_struct):
                return 0
            if ce.next is not None and ce.vaddr:
                base_vaddr, base_struct, ce = ce.vaddr, ce.type_name, ce.next
                continue
            if ce.type_flag & T_ARRAY:
                if ce.type_flag & T_PTR:
                    return ce.array_length * self.ptr
                return ce.array_length * ce.size
            return ce.size

    def update(self, fe: Entry, se: Entry | None) -> None:
        addr = self.symbol_addr(fe, 0, None)
        if not addr:
            return
        if fe.nullify:
            size = self.ptr
        elif se is not None:
            size = self.symbol_size(se, 0, None)
        else:
            size = self.symbol_size(fe, 0, None)
        if size <= 0:
            return
        try:
            paddr = self.mmu.vtop(addr)
        except DumpfilterError:
            self.warn(f"Can't translate {fe.symbol_expr} ({addr:#x}); not erased")
            return
        self.out.add(addr, paddr, size, fe.nullify, fe)

    # loops
    def _next_list_entry(self, ce: Entry, base_vaddr: int, base_struct: str | None, out: Entry) -> bool:
        while True:
            if not ce.flag & LIST_ENTRY:
                return False
            if not ce.flag & RESOLVED and not self.resolve(ce, base_vaddr, base_struct):
                return False
            nxt = ce.next
            if nxt is None:
                if ce.type_flag & T_ARRAY:
                    if ce.index == ce.array_length:
                        return False
                    if ce.type_flag & T_PTR:
                        va = 0
                        while ce.index < ce.array_length:
                            va = self.read_ptr(ce.vaddr + ce.index * self.ptr)
                            if va:
                                break
                            ce.index += 1
                        if ce.index == ce.array_length:
                            return False
                        out.sym_addr = ce.vaddr + ce.index * self.ptr
                        out.vaddr = va
                        out.size = self.strlen(va) if ce.type_name == "char" else ce.size
                    else:
                        out.sym_addr = ce.vaddr + ce.index * ce.size
                        out.vaddr = out.sym_addr
                        out.size = ce.size
                    ce.index += 1
                else:
                    if ce.vaddr == ce.cmp_addr:
                        return False
                    out.vaddr = ce.vaddr
                    ce.flag &= ~RESOLVED
                return True
            if nxt.next is None and not nxt.type_flag & T_ARRAY:
                if not ce.type_flag & T_LIST_HEAD:
                    if not ce.vaddr or ce.vaddr == nxt.cmp_addr:
                        return False
                    if not nxt.cmp_addr:
                        nxt.cmp_addr = ce.vaddr
                    out.vaddr, out.sym_addr, out.size = ce.vaddr, ce.sym_addr, ce.size
                    ce.sym_addr, ce.vaddr = nxt.sym_addr, nxt.vaddr
                    if ce.vaddr and not self.resolve(nxt, ce.vaddr, ce.type_name):
                        return False
                    return True
                ce.sym_addr, ce.vaddr = nxt.sym_addr, nxt.vaddr
            if ce.vaddr:
                base_vaddr, base_struct, ce = ce.vaddr, ce.type_name, nxt
                continue
            return False

    def _resolve_list(self, ce: Entry) -> tuple[str | None, int]:
        base_vaddr, base_struct = 0, None
        while True:
            if not ce.flag & RESOLVED and not self.resolve(ce, base_vaddr, base_struct):
                raise ConfigError(f"Config error at {ce.line}: can't resolve the list '{ce.name}'")
            if ce.next is not None and ce.next.flag & TRAVERSAL_ENTRY and ce.type_flag & T_ARRAY:
                self.warn(f"Warning: line {ce.next.line}: 'via' keyword not required for ArrayVar.")
                ce.next = None
            if ce.type_flag & T_LIST_HEAD and ce.next is not None and ce.next.flag & TRAVERSAL_ENTRY:
                ce.next.cmp_addr = ce.sym_addr
            if ce.next is not None and ce.vaddr:
                base_vaddr, base_struct, ce = ce.vaddr, ce.type_name, ce.next
                continue
            ce.index = 0
            return ce.type_name, ce.type_flag

    def _init_iteration(self, ie: Entry, type_name: str | None, type_flag: int) -> None:
        if type_flag & T_LIST_HEAD:
            if ie.type_name is None:
                raise ConfigError(f"Config error at {ie.line}: Use 'within' keyword to specify "
                                  "StructName:ListHeadMember.")
            if ie.next is None:
                ie.next = _chain("list", ITERATION_ENTRY, ie.line)
                ie.next.flag &= ~SYMBOL_ENTRY
            st = self.syms.struct(ie.type_name)
            if st is None or not st.size:
                raise ConfigError(f"Config error at {ie.line}: Can't find structure: {ie.type_name}.")
            ie.size = st.size
            if not self.resolve(ie.next, 0, ie.type_name):
                raise ConfigError(f"Config error at {ie.line}: can't resolve {ie.type_name}.{ie.next.name}")
            if ie.next.type_name != "list_head":
                raise ConfigError(f"Config error at {ie.next.line}: Member '{ie.next.name}' is not of "
                                  "'list_head' type.")
            ie.type_flag = T_STRUCT
        else:
            if ie.type_name is not None:
                self.warn(f"Warning: line {ie.line}: 'within' keyword not required for ArrayVar/StructVar.")
                ie.next = None
            ie.type_name = type_name
            ie.type_flag = type_flag & ~T_ARRAY

    def process(self, cmd: Command, max_iterations: int = 1 << 20) -> None:
        if cmd.list_entry is None:
            self.update(cmd.filters[0], cmd.sizes[0])
            return
        ie = cmd.iter_entry
        assert ie is not None
        tname, tflag = self._resolve_list(cmd.list_entry)
        self._init_iteration(ie, tname, tflag)
        for _ in range(max_iterations):
            out = Entry(None, 0, 0)
            if not self._next_list_entry(cmd.list_entry, 0, None, out):
                return
            if ie.next is not None:
                ie.next.vaddr = out.vaddr
                ie.vaddr = out.vaddr - ie.next.offset
            else:
                ie.vaddr, ie.sym_addr, ie.size = out.vaddr, out.sym_addr, out.size
            for fe, se in zip(cmd.filters, cmd.sizes):
                self.update(fe, se)
        self.warn(f"Warning: line {cmd.line}: the loop stopped after {max_iterations} iterations")


# --- applying ranges to dumped pages ------------------------------------------------------------------

@dataclass
class Piece:
    off: int  # offset in the page
    size: int
    fill: int  # byte value


class ErasePlan:
    """Which bytes of which dumped pages are erased, and the eraseinfo text that results."""

    def __init__(self, erase: EraseList, page_size: int, dumped: Iterable[int] | None = None,
                 is_dumped=None) -> None:  # noqa: ANN001 - Callable[[int], bool]
        self.page_size = page_size
        self.pieces: dict[int, list[tuple[int, int, int, int]]] = {}  # pfn -> [(start paddr, order, size, fill)]
        ps = page_size
        sizes: dict[int, list[int]] = {i: [0] * erase.num_sizes[i] for i in range(1, len(erase.exprs))}
        erased: set[int] = set()
        order = sorted(erase.ranges, key=lambda r: r.paddr)
        for r in order:
            p, end = r.paddr, r.paddr + r.size
            while p < end:
                pfn = p // ps
                if not is_dumped(pfn):
                    break
                n = min(end, (pfn + 1) * ps) - p
                self.pieces.setdefault(pfn, []).append((p, r.paddr, n, 0 if r.nullify else r.fill))
                if r.erase_idx:
                    erased.add(r.erase_idx)
                    if r.nullify:
                        sizes[r.erase_idx][r.size_idx] = -1
                    else:
                        sizes[r.erase_idx][r.size_idx] += n
                p += n
        for lst in self.pieces.values():
            lst.sort(key=lambda x: (x[0], x[1]))
        self.erased_bytes = sum(n for lst in self.pieces.values() for _, _, n, _ in lst)
        lines = []
        for i in range(1, len(erase.exprs)):
            if i not in erased:
                continue
            tail = ""
            for s in sizes[i]:
                if s > 0:
                    tail = f"size {s}\n"
                elif s == -1:
                    tail = "nullify\n"
                lines.append(f"erase {erase.exprs[i]} {tail}")
        self.eraseinfo = "".join(lines).encode()

    def hook(self, pfns: list[int], pages: memoryview) -> None:
        ps = self.page_size
        get = self.pieces.get
        for i, pfn in enumerate(pfns):
            lst = get(pfn)
            if not lst:
                continue
            base = i * ps - pfn * ps
            for start, _o, n, fill in lst:
                o = base + start
                pages[o:o + n] = bytes((fill,)) * n

    def pfn_span(self) -> tuple[int, int] | None:
        if not self.pieces:
            return None
        return min(self.pieces), max(self.pieces) + 1


def dumped_test(bitmaps: DumpBitmaps):  # noqa: ANN201 - Callable[[int], bool]
    """A pfn → dumped? test over a dump's 2nd bitmaps (one cycle unpacked at a time)."""
    cache: dict[int, Bitmap] = {}
    cycles = bitmaps.cycles

    def test(pfn: int) -> bool:
        for c in cycles:
            if c.start <= pfn < c.end:
                b = cache.get(c.start)
                if b is None:
                    cache.clear()
                    b = c.bitmaps()[1]
                    cache[c.start] = b
                return bool(b.test(pfn - c.start))
        return False

    return test


def resolve_config(text: str, syms: KernelSymbols, mmu: Mmu, msgs: Messages | None,
                   out: EraseList | None = None) -> EraseList:
    """Parse and resolve a makedumpfile.conf: the ranges it erases in this dump."""
    out = out if out is not None else EraseList()
    res = Resolver(syms, mmu, out, msgs)
    per_module: dict[str, Resolver | None] = {}
    for cmd in parse_config(text):
        r: Resolver | None = res
        if cmd.module is not None:
            if cmd.module not in per_module:
                msyms = syms.module(cmd.module)
                per_module[cmd.module] = Resolver(msyms, mmu, out, msgs) if msyms is not None else None
                if msyms is None and msgs is not None:  # makedumpfile: no module debuginfo, next section
                    msgs.msg(f"Module section [{cmd.module}]: the module is not loaded or its symbols can't be "
                             "read; skipping to the next section.")
            r = per_module[cmd.module]
        if r is not None:
            r.process(cmd)
    return out


_ = struct  # kept for readers of raw values
