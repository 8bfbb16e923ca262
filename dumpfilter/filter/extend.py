"""What ``--config``, ``--extension`` and ``--keep-debuggable`` change in a plan, after the dump level
filter has made the bitmaps and before any page is written (called once by ``plan.build_plan``):

1. plugins run (``dumpfilter.plugins``): pfn ranges they exclude leave the 2nd bitmap ("Extension
   filter pages"), byte ranges they erase join the erase list;
2. the debuggability check (``kernel/debuggable.py``): pages crash and drgn need that the level left
   out are put back (``--keep-debuggable``, counted as kept) or listed as missing;
3. the config file is resolved (``filter/erase.py``) into the same erase list;
4. the erase list becomes one page hook over the pages that are dumped, and the eraseinfo text
   (the input's, when refiltering, then the new lines).

Symbols and types are opened once, lazily: ``-x VMLINUX`` if given, else kallsyms and BTF from the dump.
"""
from __future__ import annotations

import struct

from ..codec.hooks import PageHook
from ..errors import DumpfilterError
from ..record import dataclass, field

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..filter import DumpBitmaps
    from ..job import DumpJob
    from ..kernel.symbols import KernelSymbols
    from ..kernel.vmcoreinfo import VmcoreInfo
    from ..report import Messages
    from ..source.base import DumpSource


@dataclass
class ExtensionResult:
    hooks: tuple[PageHook, ...] = ()
    eraseinfo: bytes = b""
    extension_pages: int = 0  # excluded by plugins
    kept_pages: int = 0  # put back by --keep-debuggable
    missing: list[tuple[str, str]] = field(default_factory=list)  # (label, why) not in the dump
    erased_bytes: int = 0


def wanted(job: DumpJob, level: int) -> bool:
    """Whether a plan needs this stage: filters or plugins asked for, or pages crash/drgn need may have
    been excluded (levels that classify struct pages)."""
    from . import KERNEL_LEVEL_BITS

    return bool(job.config or job.extensions or job.keep_debuggable
                or (job.check_debuggable and level & KERNEL_LEVEL_BITS))


def open_kernel_symbols(src: DumpSource, vi: VmcoreInfo, vmlinux: str | None) -> KernelSymbols:
    from ..kernel.arch import for_machine
    from ..kernel.symbols import open_symbols

    return open_symbols(for_machine(src.elf_machine).mmu(src, vi), vi, vmlinux)


def apply_extensions(job: DumpJob, src: DumpSource, vi: VmcoreInfo | None, bitmaps: DumpBitmaps,
                     msgs: Messages, level: int = 0) -> ExtensionResult:
    res = ExtensionResult()
    old_erase = src.info.eraseinfo if src.format == "kdump" else b""
    if vi is None:
        if job.config or job.extensions:
            raise DumpfilterError(f"{src.path} has no VMCOREINFO: --config and --extension need the kernel's symbols")
        return res
    from ..kernel.arch import for_machine
    from .erase import EraseList, ErasePlan, dumped_test, resolve_config

    mmu = for_machine(src.elf_machine).mmu(src, vi)
    syms: KernelSymbols | None = None

    def symbols() -> KernelSymbols:
        nonlocal syms
        if syms is None:
            syms = open_kernel_symbols(src, vi, job.vmlinux)
        return syms

    erase = EraseList()
    # 1. plugins
    if job.extensions:
        from ..plugins import Context, PluginError, load_plugin

        excluded: list[tuple[int, int]] = []
        for path in job.extensions:
            plugin = load_plugin(path)
            s = symbols()
            for name in plugin.symbols:
                if s.address(name) is None:
                    raise PluginError(f"extension {plugin.name}: symbol {name} not found ({s.describe})")
            for spec in plugin.types:
                if s.lookup_type(spec) is None:
                    raise PluginError(f"extension {plugin.name}: type {spec} not found ({s.describe})")
            ctx = Context(plugin, s, mmu, src.page_size, src.max_mapnr, erase, excluded,
                          vi.osrelease, src.nr_cpus, msgs.msg, level)
            try:
                plugin.run(ctx)
            except DumpfilterError as e:
                raise PluginError(f"extension {plugin.name} failed: {e}") from None
            except Exception as e:  # noqa: BLE001 - a plugin's bug stops the dump in one line
                raise PluginError(f"extension {plugin.name} failed: {type(e).__name__}: {e}") from None
            msgs.debug(f"extension {plugin.name}: {len(excluded)} pfn ranges excluded so far, "
                       f"{ctx.erased_calls} erasures")
        if excluded:
            res.extension_pages = bitmaps.exclude(excluded)
    # 2. debuggability
    if job.keep_debuggable or job.check_debuggable:
        from ..kernel.debuggable import missing, needed_pages

        try:
            s2: KernelSymbols | None = symbols()
        except (DumpfilterError, ValueError) as e:
            msgs.debug(f"debuggability check without kernel symbols: {e}")
            s2 = None
        try:
            needs = needed_pages(src, vi, s2)
        except (DumpfilterError, ValueError, IndexError, OverflowError, struct.error) as e:
            # advisory: a corrupt dump's kernel data must not cost the dump itself
            msgs.msg(f"The debuggability check could not run: {e}")
            needs = []
        test = dumped_test(bitmaps)
        if job.keep_debuggable:
            want = sorted({p for n in needs if n.error is None for p in n.pfns if not test(p)})
            if want:
                res.kept_pages = bitmaps.include(want)
                test = dumped_test(bitmaps)
        res.missing = missing(needs, test)
    # 3. the config file
    if job.config:
        try:
            with open(job.config, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError as e:
            raise DumpfilterError(f"Can't open config file({job.config}). {e.strerror}") from None
        resolve_config(text, symbols(), mmu, msgs, out=erase)
    # 4. the hook and eraseinfo
    if erase.ranges:
        plan = ErasePlan(erase, src.page_size, is_dumped=dumped_test(bitmaps))
        span = plan.pfn_span()
        if span is not None:
            res.hooks = (PageHook(span[0], span[1], plan.hook, "erase"),)
        res.eraseinfo = old_erase + plan.eraseinfo
        res.erased_bytes = plan.erased_bytes
        msgs.debug(f"erase filters: {len(erase.ranges)} ranges, {plan.erased_bytes} bytes in dumped pages")
    else:
        res.eraseinfo = old_erase
    return res
