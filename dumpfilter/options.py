"""Command-line parsing shared by ``pydumpfile`` and ``pydumpfile bench``: an argparse parser whose
errors are one-line usage errors, and the value parsers makedumpfile's options need."""
from __future__ import annotations

import argparse

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

from .errors import UsageError
from .sizes import SizeError, parse_size


class ArgParser(argparse.ArgumentParser):
    """argparse that raises UsageError (one line, exit 1) instead of printing usage and exiting 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"Commandline parameter is invalid: {message}")


def limit_size(text: str) -> int:
    """``-L SIZE`` and ``--max-size``: a positive size with an optional K/M/G/T/P/E suffix."""
    try:
        v = parse_size(text)
    except SizeError:
        v = 0
    if v <= 0:
        raise UsageError(f"Limit size({text}) is invalid.")
    return v


def decimal(text: str, what: str) -> int:
    """A decimal integer option; ``what`` names it in makedumpfile's message."""
    try:
        return int(text, 10)
    except ValueError:
        raise UsageError(f"{what}({text}) is invalid.") from None
