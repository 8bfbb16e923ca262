"""Python filter plugins (``pydumpfile --extension FILE.py``): the API, version 1.

A plugin is a Python file that defines::

    API_VERSION = 1                      # the version of this API it was written against (required)
    NAME = "share-safe"                  # optional; the file name otherwise
    SYMBOLS = ["init_task"]              # kernel symbols it needs (checked before it runs)
    TYPES = ["struct task_struct"]       # kernel types it needs (checked before it runs)

    def run(ctx):                        # required: called once per dump, before any page is written
        for task in ctx.tasks():
            ctx.erase(task + ctx.offsetof("struct task_struct", "comm"), 16, "task.comm")

``FILE`` may also name a shipped sample: ``erase_comm`` (every task's ``comm``, upstream's
erase_sample) or ``share_safe`` (see ``samples/share_safe.py`` for what it scrubs and what it cannot).

``ctx`` is a ``Context``: ``dump_level``, ``page_size``, ``release``; typed lookups (``symbol``, ``type``, ``sizeof``, ``offsetof``, ``var_type``),
reads of the crashed kernel's memory (``read``, ``read_u8/u16/u32/u64``, ``read_ptr``, ``read_string``,
``vtop``), kernel list walks (``list_for_each``, ``tasks``, ``cpus``, ``per_cpu``), and the two decisions
a plugin can make:

- ``ctx.exclude_pfns(start, end)`` / ``ctx.exclude_vaddr(vaddr, size)``: leave those pages out of the
  dump (counted as "Extension filter pages" in the report);
- ``ctx.erase(vaddr, size, label, nullify=False)``: overwrite those bytes with 'X' (or zeros) in the
  written pages, recorded in the dump's eraseinfo as ``erase LABEL size N`` (one line per call, calls
  with the same label grouped, as makedumpfile's config loops are).

Symbols and types come from the dump's own kallsyms and BTF, or from ``-x VMLINUX``; a plugin does not
care which. Plugins run in the order given and compose: every exclusion and erasure is applied, and
overlapping erasures at the same address keep the larger size. A plugin that raises stops the dump
with one line naming it (a plugin that cannot scrub what it promised must not let the dump out).

Compatibility promise: a plugin declaring ``API_VERSION = 1`` keeps working while this package
supports version 1 (``SUPPORTED_VERSIONS``); new methods may be added to ``Context`` without a new
version, changed or removed ones need one.
"""
from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterator

from ..errors import DumpfilterError
from ..kernel.symbols import KernelSymbols, SymbolError
from ..kernel.symbols.types import CType

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..filter.erase import EraseList
    from ..kernel.arch import Mmu

API_VERSION = 1
SUPPORTED_VERSIONS = (1,)


class PluginError(DumpfilterError):
    pass


class Plugin:
    """A loaded plugin file."""

    def __init__(self, path: str, name: str, api_version: int, symbols: list[str], types: list[str],
                 run: Callable[[Context], None]) -> None:
        self.path, self.name, self.api_version = path, name, api_version
        self.symbols, self.types, self.run = symbols, types, run


SAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "samples")


def find_plugin(name: str) -> str:
    """A plugin's file: ``name`` itself, or a shipped sample (``erase_comm``, ``share_safe``)."""
    if os.path.isfile(name):
        return name
    sample = os.path.join(SAMPLES, name.replace("-", "_").removesuffix(".py") + ".py")
    return sample if os.path.isfile(sample) else name


def load_plugin(path: str) -> Plugin:
    """Load a plugin file; refuse it if it does not declare a supported API_VERSION and a run()."""
    path = find_plugin(path)
    if not os.path.isfile(path):
        raise PluginError(f"Can't open the extension {path}: no such file")
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(f"pydumpfile_extension_{name}", path)
    if spec is None or spec.loader is None:
        raise PluginError(f"Can't load the extension {path}: not a Python file")
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)
    except Exception as e:  # noqa: BLE001 - any error in a plugin's top level is the plugin's
        raise PluginError(f"extension {path} failed to load: {type(e).__name__}: {e}") from None
    ver = getattr(mod, "API_VERSION", None)
    if ver not in SUPPORTED_VERSIONS:
        raise PluginError(f"extension {path}: API_VERSION {ver!r} is not supported "
                          f"(supported: {', '.join(map(str, SUPPORTED_VERSIONS))})")
    run = getattr(mod, "run", None)
    if not callable(run):
        raise PluginError(f"extension {path} defines no run(ctx)")
    return Plugin(path, str(getattr(mod, "NAME", name)), int(ver), list(getattr(mod, "SYMBOLS", [])),
                  list(getattr(mod, "TYPES", [])), run)


class Context:
    """What a plugin sees of the dump (see the module doc). One per plugin run."""

    api_version = API_VERSION

    def __init__(self, plugin: Plugin, syms: KernelSymbols, mmu: Mmu, page_size: int, max_mapnr: int,
                 erase: EraseList, excluded: list[tuple[int, int]], release: str | None, nr_cpus: int,
                 log: Callable[[str], None], dump_level: int = 0) -> None:
        self.plugin = plugin
        self.syms = syms
        self.mmu = mmu
        self.page_size = page_size
        self.max_mapnr = max_mapnr
        self.release = release
        self.nr_cpus = nr_cpus
        self.dump_level = dump_level  # the -d level of this run (bit 8: user pages are left out)
        self._erase = erase
        self._excluded = excluded
        self._labels: dict[str, object] = {}
        self._log = log
        self.erased_calls = 0

    # --- lookups -----------------------------------------------------------------------------------
    def symbol(self, name: str) -> int:
        """Run-time address of a kernel symbol."""
        return self.syms.need_address(name)

    def has_symbol(self, name: str) -> bool:
        return self.syms.address(name) is not None

    def type(self, spec: str) -> CType:
        """A type by C spelling (``struct task_struct``, ``char *``, ``u64``)."""
        return self.syms.need_type(spec)

    def sizeof(self, spec: str) -> int:
        return self.syms.sizeof(spec)

    def offsetof(self, struct_spec: str, member_path: str) -> int:
        """Byte offset of ``a.b.c`` inside the struct (anonymous unions and structs looked into)."""
        return self.syms.offsetof(struct_spec, member_path)

    def has_member(self, struct_spec: str, member_path: str) -> bool:
        try:
            self.syms.offsetof(struct_spec, member_path)
            return True
        except SymbolError:
            return False

    def var_type(self, name: str) -> CType | None:
        return self.syms.var_type(name)

    def modules(self) -> list[str]:
        """Names of the loaded modules whose symbols can be read (from the dump; [] with -x)."""
        return self.syms.modules()

    def module(self, name: str) -> KernelSymbols | None:
        """Symbol and type lookups of a loaded module (its kallsyms and BTF, then the kernel's):
        ``.address(sym)``, ``.var_type(sym)``, ``.lookup_type(spec)``, ``.offsetof(spec, member)``."""
        return self.syms.module(name)

    # --- memory ------------------------------------------------------------------------------------
    def read(self, vaddr: int, size: int) -> bytes:
        return self.mmu.read(vaddr, size)

    def read_u8(self, vaddr: int) -> int:
        return self.mmu.read(vaddr, 1)[0]

    def read_u16(self, vaddr: int) -> int:
        return int.from_bytes(self.mmu.read(vaddr, 2), "little")

    def read_u32(self, vaddr: int) -> int:
        return int.from_bytes(self.mmu.read(vaddr, 4), "little")

    def read_u64(self, vaddr: int) -> int:
        return int.from_bytes(self.mmu.read(vaddr, 8), "little")

    def read_ptr(self, vaddr: int) -> int:
        return int.from_bytes(self.mmu.read(vaddr, self.syms.ptr_size), "little")

    def read_string(self, vaddr: int, limit: int = 1024) -> bytes:
        """The NUL-terminated string at ``vaddr`` (at most ``limit`` bytes, without the NUL)."""
        out = bytearray()
        while len(out) < limit:
            chunk = self.mmu.read(vaddr + len(out), min(256, limit - len(out), self.page_size - (vaddr + len(out)) % self.page_size))
            n = chunk.find(b"\0")
            if n >= 0:
                out += chunk[:n]
                break
            out += chunk
        return bytes(out)

    def vtop(self, vaddr: int) -> int:
        return self.mmu.vtop(vaddr)

    # --- walks -------------------------------------------------------------------------------------
    def list_for_each(self, head: int, struct_spec: str, member: str, limit: int = 1 << 20) -> Iterator[int]:
        """Addresses of the structs linked through ``member`` (a list_head) on the list at ``head``."""
        off = self.offsetof(struct_spec, member)
        seen = 0
        node = self.read_ptr(head)
        while node and node != head and seen < limit:
            yield node - off
            node = self.read_ptr(node)
            seen += 1

    def tasks(self) -> Iterator[int]:
        """Every task_struct: init_task and the task list (threads of each group included)."""
        init = self.symbol("init_task")
        yield init
        for leader in self.list_for_each(init + self.offsetof("struct task_struct", "tasks"), "struct task_struct", "tasks"):
            yield leader
            if self.has_member("struct task_struct", "thread_node") and self.has_member("struct task_struct", "signal"):
                sig = self.read_ptr(leader + self.offsetof("struct task_struct", "signal"))
                if sig and self.has_member("struct signal_struct", "thread_head"):
                    head = sig + self.offsetof("struct signal_struct", "thread_head")
                    for t in self.list_for_each(head, "struct task_struct", "thread_node"):
                        if t != leader:
                            yield t

    def cpus(self) -> range:
        """CPU numbers with a per-cpu area (0 .. nr_cpu_ids-1)."""
        n = self.read_u32(self.symbol("nr_cpu_ids")) if self.has_symbol("nr_cpu_ids") else self.nr_cpus
        return range(min(n, 8192))

    def per_cpu(self, symbol: str, cpu: int) -> int:
        """Address of per-cpu variable ``symbol`` on ``cpu``."""
        base = self.symbol("__per_cpu_offset")
        return (self.symbol(symbol) + self.read_u64(base + 8 * cpu)) & ((1 << 64) - 1)

    # --- decisions ---------------------------------------------------------------------------------
    def exclude_pfns(self, start: int, end: int) -> None:
        """Leave pfns [start, end) out of the dump."""
        start, end = max(0, start), min(end, self.max_mapnr)
        if start < end:
            self._excluded.append((start, end))

    def exclude_vaddr(self, vaddr: int, size: int) -> None:
        """Leave out the pages holding [vaddr, vaddr+size) of kernel memory."""
        ps = self.page_size
        va = vaddr - vaddr % ps
        while va < vaddr + size:
            pfn = self.mmu.vtop(va) // ps
            self.exclude_pfns(pfn, pfn + 1)
            va += ps

    def erase(self, vaddr: int, size: int, label: str, nullify: bool = False) -> None:
        """Erase ``size`` bytes at kernel address ``vaddr`` ('X', or zeros with ``nullify``), recorded
        in eraseinfo as ``erase LABEL size N``. The range is translated page by page."""
        from ..filter.erase import Entry

        if size <= 0:
            return
        ent = self._labels.get(label)
        if ent is None:
            ent = Entry(label, 0, 0)
            ent.symbol_expr = label
            self._labels[label] = ent
        assert isinstance(ent, Entry)
        ps = self.page_size
        va, end = vaddr, vaddr + size
        first = None
        while va < end:  # virtually contiguous, so each page is translated on its own
            n = min(end, va - va % ps + ps) - va
            pa = self.mmu.vtop(va)
            if va == vaddr:
                first = self._erase.add(va, pa, n, nullify, ent)
            else:
                self._erase.add_piece(va, pa, n, nullify, first)
            va += n
        self.erased_calls += 1

    def log(self, text: str) -> None:
        self._log(f"extension {self.plugin.name}: {text}")


__all__ = ["API_VERSION", "Context", "Plugin", "PluginError", "SUPPORTED_VERSIONS", "load_plugin"]
