"""Shared parts of the property-based tests (tests/unit/test_properties*.py) and of the long fuzzing run
(tests/fuzz): the bound every input must respect, the settings, and byte-level mutations.

The property: whatever the input, a reader or parser returns a result or raises a ``DumpfilterError``
(one clear line for the CLI), never another exception, within ``MEMORY_BOUND`` bytes allocated above
what was allocated before (tracemalloc: Python objects, numpy arrays) and ``TIME_BOUND`` seconds of CPU
time (CPU, not wall-clock time, so that a loaded machine does not fail the property; a wait that burns no
CPU is caught by a wall-clock bound of ``WALL_FACTOR`` times as much). An
address-space limit around each call turns a runaway allocation into a failure instead of an
out-of-memory machine.

``PYDUMPFILE_FUZZ_EXAMPLES=N`` turns every property into a fuzzing target with N random examples
(not derandomized); without it each property runs its small fixed number of examples, derandomized,
so CI is deterministic."""
from __future__ import annotations

import os
import resource
import signal
import time
import tracemalloc
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from hypothesis import HealthCheck, event, settings
from hypothesis.errors import InvalidArgument
from hypothesis import strategies as st

from dumpfilter.errors import DumpfilterError

FUZZ = int(os.environ.get("PYDUMPFILE_FUZZ_EXAMPLES") or 0)
MEMORY_BOUND = 64 << 20
TIME_BOUND = float(os.environ.get("PYDUMPFILE_PROPERTY_SECONDS") or 10)
WALL_FACTOR = 10
ADDRESS_SPACE_MARGIN = 3 << 30  # the safety net over the current address space

T = TypeVar("T")


def prop_settings(examples: int) -> settings:
    """``examples`` in CI (derandomized, no example database: the same inputs on every run);
    PYDUMPFILE_FUZZ_EXAMPLES of them, random, when fuzzing."""
    return settings(max_examples=FUZZ or examples, derandomize=not FUZZ, database=None, deadline=None,
                    suppress_health_check=list(HealthCheck), print_blob=bool(FUZZ))


class Overtime(BaseException):
    """Raised by the timer inside the code under test (a BaseException: no ``except Exception`` in the
    package can swallow it)."""


def _vm_size() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def bounded(fn: Callable[..., T], *args: Any, **kw: Any) -> T | DumpfilterError:
    """``fn(*args, **kw)``, or the DumpfilterError it raised. Any other exception propagates (the
    property fails); so does going over the memory or the time bound."""
    def alarm(signum: int, frame: object) -> None:
        what = "CPU" if signum == signal.SIGPROF else "wall-clock"
        raise Overtime(f"{getattr(fn, '__name__', fn)} took more than {TIME_BOUND} s of {what} time")

    old_handler = signal.signal(signal.SIGALRM, alarm)
    old_prof = signal.signal(signal.SIGPROF, alarm)
    old_as = resource.getrlimit(resource.RLIMIT_AS)
    limit = _vm_size() + ADDRESS_SPACE_MARGIN
    if old_as[0] == resource.RLIM_INFINITY or old_as[0] > limit:
        resource.setrlimit(resource.RLIMIT_AS, (limit, old_as[1]))
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    t0 = time.process_time()
    signal.setitimer(signal.ITIMER_PROF, TIME_BOUND)
    signal.setitimer(signal.ITIMER_REAL, TIME_BOUND * WALL_FACTOR)
    try:
        try:
            result: T | DumpfilterError = fn(*args, **kw)
        except DumpfilterError as e:
            result = e
            str(e)  # the message itself must be printable
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGALRM, old_handler)
        signal.signal(signal.SIGPROF, old_prof)
        resource.setrlimit(resource.RLIMIT_AS, old_as)
        peak = tracemalloc.get_traced_memory()[1] - base
        if not tracing:
            tracemalloc.stop()
    took = time.process_time() - t0
    assert peak <= MEMORY_BOUND, f"{peak >> 20} MiB allocated (bound {MEMORY_BOUND >> 20} MiB)"
    assert took <= TIME_BOUND, f"took {took:.1f} s of CPU time"
    try:  # the share of inputs refused, in --hypothesis-show-statistics
        event(f"{getattr(fn, '__name__', 'call')}: {'refused' if isinstance(result, DumpfilterError) else 'ok'}")
    except InvalidArgument:  # not inside a property
        pass
    return result


def keep_input(name: str, data: bytes) -> None:
    """When fuzzing, the input about to be tried, in $PYDUMPFILE_FUZZ_DIR/NAME (default /tmp): what
    to look at when the process dies (a native crash) or a failure is not shrunk (a time-out)."""
    if FUZZ:
        path = os.path.join(os.environ.get("PYDUMPFILE_FUZZ_DIR") or "/tmp", name)
        with open(path, "wb") as f:
            f.write(data)


def run_cli(argv: Sequence[str]) -> int | str:
    """The pydumpfile command in this process, without the CLI's catch-all: a DumpfilterError or any
    other exception propagates (``bounded`` tells them apart)."""
    from dumpfilter.cli import parse_args
    from dumpfilter.pipeline import run
    from dumpfilter.report import Messages

    job = parse_args(["--message-level", "0", *argv])
    if isinstance(job, str):
        return job
    return run(job, Messages(0))


# --- mutations -------------------------------------------------------------------------------------

INTERESTING = [0, 1, 2, 3, 4, 7, 8, 12, 16, 63, 64, 0x7F, 0x80, 0xFF, 0x100, 0xFFF, 0x1000, 0x1001, 0x7FFF,
               0x8000, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 1 << 32, 1 << 40, 1 << 46, 1 << 47,
               1 << 51, 1 << 52, 1 << 62, (1 << 63) - 1, 1 << 63, (1 << 64) - 1]


def int_values(size: int, original: int = 0) -> st.SearchStrategy[int]:
    """Values for a ``size``-byte integer field: boundary values, the original nudged, anything."""
    mask = (1 << (8 * size)) - 1
    return st.one_of(
        st.sampled_from(INTERESTING).map(lambda v: v & mask),
        st.integers(-64, 64).map(lambda d: (original + d) & mask),
        st.integers(0, mask),
    )


@st.composite
def mutated(draw: st.DrawFn, data: bytes, fields: Sequence[tuple[int, int]] = (), max_changes: int = 6,
            span: tuple[int, int] | None = None) -> bytes:
    """``data`` with 1..max_changes changes: a known integer field (offset, size) set to an interesting
    value, or a byte, a bit, an integer or a run of random bytes anywhere in ``span`` (default: all)."""
    buf = bytearray(data)
    lo, hi = span or (0, len(buf))
    kinds = ["byte", "bit", "int", "chunk"] + ["field"] * 3 * bool(fields)
    for _ in range(draw(st.integers(1, max_changes))):
        kind = draw(st.sampled_from(kinds))
        if kind == "field":
            off, size = draw(st.sampled_from(list(fields)))
            orig = int.from_bytes(buf[off : off + size], "little")
            buf[off : off + size] = draw(int_values(size, orig)).to_bytes(size, "little")
            continue
        pos = draw(st.integers(lo, max(lo, hi - 1)))
        if kind == "byte":
            buf[pos] = draw(st.integers(0, 255))
        elif kind == "bit":
            buf[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "int":
            size = draw(st.sampled_from([2, 4, 8]))
            pos = min(pos, len(buf) - size)
            orig = int.from_bytes(buf[pos : pos + size], "little")
            buf[pos : pos + size] = draw(int_values(size, orig)).to_bytes(size, "little")
        else:
            chunk = draw(st.binary(min_size=1, max_size=64))
            buf[pos : pos + len(chunk)] = chunk
            del buf[len(data) :]
    return bytes(buf)


@st.composite
def mutated_text(draw: st.DrawFn, text: str, values: Sequence[str] = ()) -> str:
    """``text`` (KEY=VALUE or directive lines) with lines changed, dropped, duplicated or added; values
    replaced by boundary numbers, garbage or ``values``."""
    lines = text.split("\n")
    junk = st.one_of(
        st.sampled_from(["", "0", "-1", "0x", "ffffffffffffffff", "10000000000000000", "-9223372036854775809",
                         "99999999999999999999999999", "+5", " 12", "1e3", "0x1000", "4096", "65536", "\0",
                         "\udcff", "1" * 40, *values]),
        st.integers(-(1 << 70), 1 << 70).map(str),
        st.integers(0, 1 << 70).map(lambda v: f"{v:x}"),
        st.text(max_size=20),
    )
    for _ in range(draw(st.integers(1, 6))):
        if not lines:
            lines.append("")
        i = draw(st.integers(0, len(lines) - 1))
        kind = draw(st.sampled_from(["value", "value", "value", "drop", "dup", "add", "raw"]))
        key, eq, _ = lines[i].partition("=")
        if kind == "value":
            lines[i] = f"{key}{eq or '='}{draw(junk)}" if key else lines[i]
        elif kind == "drop":
            del lines[i]
        elif kind == "dup":
            lines.insert(draw(st.integers(0, len(lines))), lines[i])
        elif kind == "add":
            lines.insert(i, f"{draw(st.sampled_from([ln.partition('=')[0] for ln in lines] or ['X']))}={draw(junk)}")
        else:
            lines[i] = draw(st.text(max_size=60))
    return "\n".join(lines)
