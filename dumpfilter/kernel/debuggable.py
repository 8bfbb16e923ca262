"""Debuggable by construction: the pages crash and drgn need to open a dump at all.

Both tools start by translating kernel addresses through the kernel's page tables, reading the task
of each CPU and its stack, the per-cpu areas, ``init_task``, the IDT (crash reads ``idt_table`` on
x86) and the printk ring. A dump level that excluded one of those pages (makedumpfile issue #21:
``page excluded ... "idt_table"``) gives a file that fails to open, which nobody notices until it is
needed. ``needed_pages`` finds the pages by symbol, architecture-neutrally: every translation is done
by the machine's own ``Mmu`` over a source that records which physical pages the walk read, so the
page-table pages come with the data pages.

What is checked (each item only when the kernel has the symbols it needs; kallsyms from VMCOREINFO,
types from BTF or ``-x``):

- ``page tables``: the tables that translate the kernel image (``_stext``);
- ``idt_table``, ``init_task`` (and its stack), the printk ring (``prb``: descriptors, infos, text);
- ``per-cpu area of CPU n`` for every possible CPU (``__per_cpu_offset[n]`` + the per-cpu section);
- ``current task of CPU n`` and ``kernel stack of CPU n``: ``runqueues.curr`` of each CPU that has a
  PRSTATUS note, and that task's ``stack`` (``sizeof(union thread_union)`` bytes).
"""
from __future__ import annotations


from ..errors import DumpfilterError
from ..record import dataclass, field
from .arch import for_machine

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..source.base import DumpSource
    from .symbols import KernelSymbols
    from .vmcoreinfo import VmcoreInfo

MAX_RANGE = 64 << 20  # no single need is larger than this (a corrupt size must not cost minutes)


@dataclass
class Need:
    label: str  # what it is, by symbol
    pfns: set[int] = field(default_factory=set)
    error: str | None = None  # could not be located in the source


class _Recorder:
    """A DumpSource stand-in that remembers which pfns were read through it."""

    def __init__(self, src: DumpSource) -> None:
        self._src = src
        self.pfns: set[int] = set()

    def __getattr__(self, name: str) -> object:
        return getattr(self._src, name)

    @property
    def can_view(self) -> bool:
        return False

    def phys_view(self, paddr: int, size: int) -> None:
        return None

    def read_phys(self, paddr: int, size: int) -> bytes:
        ps = self._src.page_size
        self.pfns.update(range(paddr // ps, (paddr + max(size, 1) - 1) // ps + 1))
        return self._src.read_phys(paddr, size)


class _Walker:
    def __init__(self, src: DumpSource, vi: VmcoreInfo) -> None:
        self.src = src
        self.vi = vi
        self.arch = for_machine(src.elf_machine)
        self.rec = _Recorder(src)
        self.ps = src.page_size

    def fresh(self):  # noqa: ANN201 - an Mmu over the recorder, without cached translations
        self.rec.pfns = set()
        return self.arch.mmu(self.rec, self.vi)  # a recording DumpSource

    def cover(self, need: Need, va: int, size: int) -> None:
        """Add the data and table pages of kernel range [va, va+size) to ``need``."""
        size = max(1, min(size, MAX_RANGE))
        mmu = self.fresh()
        ps = self.ps
        p = va - va % ps
        while p < va + size:
            need.pfns.add(mmu.vtop(p) // ps)
            p += ps
        need.pfns |= self.rec.pfns

    def read_ptr(self, va: int) -> int:
        return int.from_bytes(self.arch.mmu(self.src, self.vi).read(va, 8), "little")


def needed_pages(src: DumpSource, vi: VmcoreInfo, syms: KernelSymbols | None) -> list[Need]:
    """The pages to open the dump, per item (see the module doc). An item that can't be located in
    ``src`` carries ``error`` (for a dump being verified, that is a missing page)."""
    w = _Walker(src, vi)
    needs: list[Need] = []
    if syms is not None:
        try:
            syms.prefetch(["__start_BTF", "__stop_BTF", "_stext", "idt_table", "init_task", "__per_cpu_offset",
                           "__per_cpu_start", "__per_cpu_end", "nr_cpu_ids", "runqueues"])
        except DumpfilterError:
            pass

    def addr(name: str) -> int | None:
        a = vi.symbol.get(name)
        if a is None and syms is not None:
            try:
                a = syms.address(name)
            except DumpfilterError:
                a = None
        return a

    def size_of(spec: str, default: int) -> int:
        if syms is None:
            return default
        try:
            t = syms.lookup_type(spec)
        except DumpfilterError:
            return default
        return t.size if t is not None and t.size else default

    def off_of(spec: str, member: str) -> int | None:
        if syms is None:
            return None
        try:
            return syms.offsetof(spec, member)
        except DumpfilterError:
            return None

    def item(label: str, va: int | None, size: int) -> Need | None:
        if va is None:
            return None
        n = Need(label)
        try:
            w.cover(n, va, size)
        except DumpfilterError as e:
            n.error = str(e)
        needs.append(n)
        return n

    item("page tables of the kernel image (_stext)", addr("_stext"), 1)
    item("idt_table", addr("idt_table"), size_of("gate_desc[256]", 4096))
    task_size = size_of("struct task_struct", 4096)
    init = addr("init_task")
    item("init_task", init, task_size)
    stack_size = size_of("union thread_union", 4 * w.ps)
    o_stack = off_of("struct task_struct", "stack")
    if init is not None and o_stack is not None:
        try:
            item("kernel stack of init_task", w.read_ptr(init + o_stack), stack_size)
        except DumpfilterError as e:
            needs.append(Need("kernel stack of init_task", error=str(e)))
    prb = vi.symbol.get("prb")
    if prb is not None:
        _printk(w, vi, prb, item, needs)
    # per-cpu areas, and each CPU's current task and stack
    pco, start, end = addr("__per_cpu_offset"), addr("__per_cpu_start"), addr("__per_cpu_end")
    ncpu = 0
    nr_ids = addr("nr_cpu_ids")
    if pco is not None and start is not None and end is not None and 0 < end - start < MAX_RANGE:
        try:
            ncpu = int.from_bytes(w.arch.mmu(src, vi).read(nr_ids, 4), "little") if nr_ids else src.nr_cpus
        except DumpfilterError:
            ncpu = src.nr_cpus
        ncpu = min(ncpu, 8192)
        rq, o_curr = addr("runqueues"), off_of("struct rq", "curr")
        for cpu in range(ncpu):
            try:
                off = w.read_ptr(pco + 8 * cpu)
            except DumpfilterError as e:
                needs.append(Need(f"__per_cpu_offset[{cpu}]", error=str(e)))
                continue
            item(f"per-cpu area of CPU {cpu}", (start + off) & ((1 << 64) - 1), end - start)
            if rq is None or o_curr is None or cpu >= max(src.nr_cpus, 1):
                continue
            try:
                task = w.read_ptr(((rq + off) & ((1 << 64) - 1)) + o_curr)
            except DumpfilterError as e:
                needs.append(Need(f"current task of CPU {cpu}", error=str(e)))
                continue
            if not task:
                continue
            item(f"current task of CPU {cpu} (runqueues.curr)", task, task_size)
            if o_stack is not None:
                try:
                    item(f"kernel stack of CPU {cpu}'s current task", w.read_ptr(task + o_stack), stack_size)
                except DumpfilterError as e:
                    needs.append(Need(f"kernel stack of CPU {cpu}'s current task", error=str(e)))
    return needs


def _printk(w: _Walker, vi: VmcoreInfo, prb: int, item, needs: list[Need]) -> None:  # noqa: ANN001
    O, S = vi.offset, vi.size
    keys = ("printk_ringbuffer.desc_ring", "printk_ringbuffer.text_data_ring", "prb_desc_ring.count_bits",
            "prb_desc_ring.descs", "prb_desc_ring.infos", "prb_data_ring.size_bits", "prb_data_ring.data")
    if any(k not in O for k in keys) or any(k not in S for k in ("printk_ringbuffer", "prb_desc", "printk_info")):
        return
    try:
        rb = w.read_ptr(prb)
        mmu = w.arch.mmu(w.src, vi)
        raw = mmu.read(rb, min(S["printk_ringbuffer"], 4096))
    except DumpfilterError as e:
        needs.append(Need("printk ring (prb)", error=str(e)))
        return
    u = lambda off, n: int.from_bytes(raw[off:off + n], "little")  # noqa: E731
    dr, tr = O["printk_ringbuffer.desc_ring"], O["printk_ringbuffer.text_data_ring"]
    cb, sb = u(dr + O["prb_desc_ring.count_bits"], 4), u(tr + O["prb_data_ring.size_bits"], 4)
    if not (0 <= cb <= 30 and 0 <= sb <= 30):
        needs.append(Need("printk ring (prb)", error=f"implausible ring sizes (count_bits {cb}, size_bits {sb})"))
        return
    item("printk ring (prb)", rb, S["printk_ringbuffer"])
    item("printk ring descriptors", u(dr + O["prb_desc_ring.descs"], 8), S["prb_desc"] << cb)
    item("printk ring infos", u(dr + O["prb_desc_ring.infos"], 8), S["printk_info"] << cb)
    item("printk ring text", u(tr + O["prb_data_ring.data"], 8), 1 << sb)


def missing(needs: list[Need], is_dumped) -> list[tuple[str, str]]:  # noqa: ANN001 - Callable[[int], bool]
    """(label, why) for every need not in the dump: a page left out, or not locatable."""
    out = []
    for n in needs:
        if n.error is not None:
            out.append((n.label, n.error))
            continue
        gone = sorted(p for p in n.pfns if not is_dumped(p))
        if gone:
            more = f" and {len(gone) - 1} more" if len(gone) > 1 else ""
            out.append((n.label, f"page {gone[0]:#x}{more} excluded"))
    return out
