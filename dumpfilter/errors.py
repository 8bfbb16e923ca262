"""Typed errors. The CLI turns every DumpfilterError into one line on stderr and an exit code."""
from __future__ import annotations


class DumpfilterError(Exception):
    """Base class: a clear, one-line, user-facing message."""

    exit_code = 1


class InputError(DumpfilterError):
    """The input file is not what it claims to be (bad magic, truncated, inconsistent)."""


class VmcoreinfoError(DumpfilterError):
    """A VMCOREINFO key the operation needs is missing or malformed."""


class KernelDataError(DumpfilterError):
    """Kernel memory read through VMCOREINFO does not make sense (bad pointer, loop, …)."""


class OutputError(DumpfilterError):
    """The output cannot be created or written."""


class NoSpaceError(OutputError):
    """ENOSPC or the -L size limit was reached; the output was marked incomplete.

    ``written``: how many bytes of the failed write did reach the file."""

    def __init__(self, message: str, written: int = 0) -> None:
        super().__init__(message)
        self.written = written


class UsageError(DumpfilterError):
    """Invalid command line."""


class WrongReleaseError(DumpfilterError):
    """A -i VMCOREINFO file's OSRELEASE differs from the vmcore's (makedumpfile's exit code 2)."""

    exit_code = 2


class Interrupted(DumpfilterError):
    """SIGINT/SIGTERM arrived; the output was marked incomplete."""
