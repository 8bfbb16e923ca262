"""The ``core_collector``'s command line for each kind of target, as kdump.sh builds it, and how it runs.

For file targets a makedumpfile-compatible collector loses ``-F`` and gains ``--num-threads=$(nproc)``
(when nproc > 1 and neither ``-E``, ``-F`` nor ``--num-threads`` is given) and gets ``VMCORE DEST`` as
its last two arguments; ``cp`` gets ``--sparse=always`` unless a ``--sparse`` option is given; ``cat``
writes to DEST through its standard output; ``dd`` gets ``if=VMCORE of=DEST``; any other
(absolute-path) collector gets ``VMCORE DEST``. For stream targets (raw, ssh) the collector gets
``VMCORE`` and writes to standard output (``dd`` gets ``if=VMCORE``, ``cp`` copies to ``/dev/stdout``).
``pydumpfile`` as the first word runs this package's own collector (``python -m dumpfilter`` under the
same interpreter), so capture and collector are one version.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .kdumpconf import FLATTENING_COLLECTORS, _has_flag

#: makedumpfile/pydumpfile short options that take an argument (an F after them is not the flag).
_ARG_LETTERS = set("dLibx")


def collector_name(argv: list[str]) -> str:
    return argv[0].rsplit("/", 1)[-1]


def exec_argv(argv: list[str]) -> list[str]:
    """``pydumpfile …`` → this interpreter's ``python -m dumpfilter …``; anything else as is."""
    if argv and argv[0] == "pydumpfile":
        return [sys.executable, "-m", "dumpfilter", *argv[1:]]
    return list(argv)


def child_env() -> dict[str, str]:
    """The environment for ``python -m dumpfilter``: this package importable even if not installed."""
    env = dict(os.environ)
    # a dump made at capture time must open in crash and drgn: pages they need come back even when the
    # dump level excluded them (pydumpfile --keep-debuggable; --no-keep-debuggable in the collector line
    # turns it off)
    env.setdefault("PYDUMPFILE_KEEP_DEBUGGABLE", "1")
    pkg_parent = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = pkg_parent + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def env_for(argv: list[str]) -> dict[str, str] | None:
    """``child_env()`` for our own collector, the inherited environment for any other."""
    return child_env() if argv[0] == "pydumpfile" else None


def _strip_flat(args: list[str]) -> list[str]:
    """Remove ``-F`` (alone or inside a cluster such as ``-lF``) from makedumpfile-style options."""
    out = []
    for a in args:
        if a == "-F":
            continue
        body = a[1:]
        if a.startswith("-") and not a.startswith("--") and body.isalpha() and "F" in body:
            head = body.split("F", 1)[0]
            if not (set(head) & _ARG_LETTERS):
                body = body.replace("F", "")
                if not body:
                    continue
                a = "-" + body
        out.append(a)
    return out


def _nproc() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover
        return os.cpu_count() or 1


def file_command(argv: list[str], vmcore: str, dest: str, nproc: int | None = None) -> tuple[list[str], str | None]:
    """The collector for a file target: ``(argv, stdout_file)``; stdout_file is set for ``cat``."""
    name = collector_name(argv)
    args = argv[1:]
    if name in FLATTENING_COLLECTORS:
        args = _strip_flat(args)
        n = _nproc() if nproc is None else nproc
        if n > 1 and not _has_flag(args, "E") and not any(a.startswith("--num-threads") for a in args):
            args.append(f"--num-threads={n}")
        return [argv[0], *args, vmcore, dest], None
    if name == "cp":
        if not any(a.startswith("--sparse") for a in args):
            args = ["--sparse=always", *args]
        return [argv[0], *args, vmcore, dest], None
    if name == "scp":  # an ssh collector redirected to the root fs by dump_to_rootfs
        return ["cp", "--sparse=always", vmcore, dest], None
    if name == "cat":
        return [*argv, vmcore], dest
    if name == "dd":
        extra = [] if any(a.startswith("if=") for a in args) else [f"if={vmcore}"]
        return [*argv, *extra, f"of={dest}"], None
    return [*argv, vmcore, dest], None


def stream_command(argv: list[str], vmcore: str) -> list[str]:
    """The collector for a stream target (raw, ssh): it writes to standard output."""
    name = collector_name(argv)
    args = argv[1:]
    if name in FLATTENING_COLLECTORS:
        if not _has_flag(args, "F"):
            args = ["-F", *args]
        return [argv[0], *args, vmcore]
    if name == "dd":
        return [*argv, *([] if any(a.startswith("if=") for a in args) else [f"if={vmcore}"])]
    if name == "cp":
        return ["cp", *(a for a in args if not a.startswith("--sparse")), vmcore, "/dev/stdout"]
    return [*argv, vmcore]


def pipe(producer: list[str], consumer: list[str], *, producer_env=None, consumer_stderr=None) -> tuple[int, int]:
    """``producer | consumer``; both exit codes."""
    p1 = subprocess.Popen(producer, stdout=subprocess.PIPE, env=producer_env)
    try:
        p2 = subprocess.Popen(consumer, stdin=p1.stdout, stderr=consumer_stderr)
    except BaseException:
        p1.kill()
        p1.wait()
        raise
    finally:
        assert p1.stdout is not None
        p1.stdout.close()  # the consumer holds the only read end: p1 sees EPIPE if it dies
    return p1.wait(), p2.wait()
