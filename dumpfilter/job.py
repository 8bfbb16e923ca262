"""DumpJob: one run of pydumpfile, as the command line asked for it."""
from __future__ import annotations

from .errors import UsageError
from .record import dataclass, field
from .report import DEFAULT_LEVEL


@dataclass
class DumpJob:
    """One run, as parsed from the command line."""

    vmcore: str | None = None
    dumpfile: str | None = None
    compress: str | None = None
    levels: list[int] = field(default_factory=lambda: [0])
    elf: bool = False
    flat: bool = False
    rearrange: bool = False
    force: bool = False
    limit: int | None = None
    vmcoreinfo_file: str | None = None
    message_level: int = DEFAULT_LEVEL
    dry_run: bool = False
    report_json: str | None = None
    num_threads: int = 0
    non_mmap: bool = False
    explicit_level: bool = False
    cyclic_buffer: int | None = None
    mem_usage: bool = False
    dump_dmesg: bool = False
    partial_dmesg: bool = False
    split: bool = False  # --split VMCORE DUMPFILE1 DUMPFILE2 ...: ``parts`` are the outputs
    splitblock_size: int | None = None  # bytes
    reassemble: bool = False  # --reassemble DUMPFILE1 ... DUMPFILE: ``parts`` are the inputs
    parts: list[str] = field(default_factory=list)
    vmlinux: str | None = None  # -x: symbols and types from a debuginfo vmlinux
    config: str | None = None  # --config: a makedumpfile.conf erase filter
    extensions: list[str] = field(default_factory=list)  # --extension: Python filter plugins
    keep_debuggable: bool = False  # --keep-debuggable: put back pages crash/drgn need to open the dump
    check_debuggable: bool = False  # list such pages the dump level left out
    gen_vmcoreinfo: str | None = None  # -g FILE (with -x)
    vtop: int | None = None  # --vtop VADDR

    @property
    def input(self) -> str:
        """VMCORE's path; every mode but -R has one."""
        if self.vmcore is None:
            raise UsageError("Commandline parameter is invalid: no VMCORE given")
        return self.vmcore

    @property
    def output(self) -> str:
        """DUMPFILE's path (LOGFILE with --dump-dmesg)."""
        if self.dumpfile is None:
            raise UsageError("Commandline parameter is invalid: no DUMPFILE given")
        return self.dumpfile
