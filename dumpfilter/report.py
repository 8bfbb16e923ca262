"""Messages, the progress line and the statistics report, as makedumpfile prints them (§5.4–5.6)."""
from __future__ import annotations

import json
import sys
import time

TYPE_CHECKING = False  # typing is not imported at run time
if TYPE_CHECKING:
    from typing import Protocol, TextIO

    class Log(Protocol):
        """Where the lower layers send what the user should see: ``msg`` at message level 2, ``debug``
        with -D (message level 8). ``Messages`` is one."""

        debugging: bool  # debug() prints: build the text only then

        def msg(self, text: str) -> None: ...
        def debug(self, text: str) -> None: ...

from .stats import Stats

ML_PROGRESS = 1
ML_COMMON = 2
ML_ERROR = 4
ML_DEBUG = 8
ML_REPORT = 16
DEFAULT_LEVEL = 7


class Messages:
    """Routes messages by level: progress and errors to stderr; the rest to stdout (stderr with -F)."""

    def __init__(self, level: int = DEFAULT_LEVEL, flat: bool = False, progress: bool | None = None) -> None:
        self.level = level
        self.debugging = bool(level & ML_DEBUG)
        # the progress line only where someone sees it, unless asked for explicitly
        self.show_progress = bool(level & ML_PROGRESS) and (sys.stderr.isatty() if progress is None else progress)
        self._done: set[str] = set()
        self.out: TextIO = sys.stderr if flat else sys.stdout
        self.err: TextIO = sys.stderr
        self._last = 0.0
        self._spin = 0
        self._progress_open = False

    def msg(self, text: str) -> None:
        if self.level & ML_COMMON:
            self._end_progress()
            print(text, file=self.out, flush=True)

    def debug(self, text: str) -> None:
        if self.level & ML_DEBUG:
            self._end_progress()
            print(text, file=self.out, flush=True)

    def error(self, text: str) -> None:
        if self.level & ML_ERROR:
            self._end_progress()
            print(text, file=self.err, flush=True)

    def _end_progress(self) -> None:
        if self._progress_open:
            print(file=self.err, flush=True)
            self._progress_open = False

    def progress(self, name: str, current: int, end: int, start_time: float | None = None) -> None:
        """``\\rName : [ 45.0 %] |  eta: 3s``; at most once a second, except 100 %."""
        if not self.show_progress or name in self._done:
            return
        now = time.monotonic()
        if current < end and now - self._last < 1.0:
            return
        self._last = now
        p = 1000 if end <= 0 or current >= end else current * 1000 // end
        spinner = "/|\\-"[self._spin % 4]
        self._spin += 1
        eta = " "
        if start_time is not None and 0 < p < 1000:
            elapsed = now - start_time
            eta = "eta: " + _eta(int(elapsed * 1000 / p - elapsed))
        line = f"\r{name:<50}: [{p // 10:3d}.{p % 10} %] {spinner}  {eta:>16}"
        self.err.write(line)
        self._progress_open = True
        if p >= 1000:
            self.err.write("\n")
            self._progress_open = False
            self._done.add(name)
        self.err.flush()

    def report(self, stats: Stats, elf: bool = False) -> None:
        if self.level & ML_REPORT:
            self._end_progress()
            self.out.write(format_report(stats, elf))
            self.out.flush()


def _eta(sec: int) -> str:
    sec = max(sec, 0)
    if sec < 100:
        return f"{sec}s"
    if sec < 100 * 60:
        return f"{sec // 60}m{sec % 60}s"
    if sec < 48 * 3600:
        return f"{sec // 3600}h{sec % 3600 // 60}m"
    if sec < 100 * 86400:
        return f"{sec // 86400}d{sec % 86400 // 3600}h"
    return ">100day"


def format_report(s: Stats, elf: bool = False) -> str:
    """The statistics report of makedumpfile's print_report (formats-cli.md §5.6)."""
    h = lambda v: f"0x{v & 0xFFFFFFFFFFFFFFFF:016x}"  # noqa: E731 - unsigned long long, as printf does
    orig = s.original
    rem = orig - s.excluded
    lines = ["", f"Original pages  : {h(orig)}", f"  Excluded pages   : {h(s.excluded)}"]
    if elf and s.elf_excluded is not None:
        lines.append(f"     in ELF format : {h(s.elf_excluded)}")
    lines += [
        f"    Pages filled with zero  : {h(s.zero)}",
        f"    Non-private cache pages : {h(s.cache)}",
        f"    Private cache pages     : {h(s.cache_private)}",
        f"    User process data pages : {h(s.user)}",
        f"    Free pages              : {h(s.free)}",
        f"    Hwpoison pages          : {h(s.hwpoison)}",
        f"    Offline pages           : {h(s.offline)}",
    ]
    if s.extension is not None:  # makedumpfile 1.8.0's line, when a plugin ran
        lines.append(f"    Extension filter pages  : {h(s.extension)}")
    if s.kept_debuggable:
        lines.append(f"    Kept for debugging      : -{h(s.kept_debuggable)}")
    lines += [
        f"  Remaining pages  : {h(rem)}",
    ]
    shown = rem
    if elf and s.elf_excluded is not None:
        shown = orig - s.elf_excluded
        lines.append(f"     in ELF format : {h(shown)}")
    if orig:
        lines.append(f"  (The number of pages is reduced to {shown * 100 // orig}%.)")
    lines += [
        f"Memory Hole     : {h(s.hole)}",
        "-" * 50,
        f"Total pages     : {h(s.max_mapnr)}",
        f"Write bytes     : {s.write_bytes}",
        "",
        "",
    ]
    return "\n".join(lines)


def write_json(path: str, stats: Stats, extra: dict[str, object]) -> None:
    d = stats.as_dict()
    d.update(extra)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(d, f, indent=2, sort_keys=True)
        f.write("\n")
