"""Debian's kdump-tools with pydumpfile: ``pykdumpctl debian enable|disable|status`` and the wrapper.

kdump-tools' ``kdump-config savecore`` runs ``makedumpfile`` by bare name (on /bin:/usr/bin:/sbin:/usr/sbin):
``makedumpfile --dump-dmesg /proc/vmcore DIR/dmesg.STAMP`` (a failure only warns), then
``makedumpfile $MAKEDUMP_ARGS -F /proc/vmcore | compress > DIR/dump-incomplete`` and renames that to
``dump.STAMP``, judging success by the status of the pipe's last command (``cat`` unless KDUMP_COMPRESSION),
never by the collector's.

``enable`` diverts /usr/bin/makedumpfile (``dpkg-divert --local --rename`` to :data:`DIVERTED`, so package
upgrades install the real one there) and writes a small shell wrapper in its place. The wrapper runs
``python -m dumpfilter.kexec.debian`` (:func:`wrap_main`), which

- translates the arguments (drops ``--non-cyclic``, which pydumpfile does not need) and runs pydumpfile
  with PYDUMPFILE_KEEP_DEBUGGABLE=1, so the dump opens in crash and drgn;
- falls back to the real makedumpfile when pydumpfile cannot start or cannot honour an option
  (``--eppic``, ``-X``, ``-e`` …), or fails before writing a byte: a complete dump is still made;
- for ``-F``, relays pydumpfile's stream to its own standard output (``splice``, no copy in Python) and, if
  pydumpfile fails after writing, makes the failure impossible to take for a saved dump: the stream has no
  end marker (pydumpfile writes it only on success), a ``pydumpfile-FAILED`` file is left next to the
  output, and the pipe's readers (the subshell of kdump-config's ``compress`` function and its ``cat`` or
  compressor, found through /proc) are stopped, so kdump-config sees a failed pipe, keeps
  ``dump-incomplete`` and takes its own fallback (``cp /proc/vmcore``).

If Python itself cannot start, the shell wrapper runs the real makedumpfile.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from ..errors import DumpfilterError

MAKEDUMPFILE = "/usr/bin/makedumpfile"
DIVERTED = "/usr/bin/makedumpfile.distrib"
MARKER = "# pydumpfile: makedumpfile wrapper (pykdumpctl debian enable)"
FAILED_NAME = "pydumpfile-FAILED"
#: makedumpfile options pydumpfile does not need (no value)
DROP = frozenset({"--non-cyclic"})
#: makedumpfile options pydumpfile cannot honour: the real makedumpfile runs instead
FOREIGN = frozenset({"--eppic", "-X", "--exclude-xen-dom", "-e", "--exclude-unused-vm", "--diskset", "--load",
                     "--store", "--fill-excluded-pages"})

WRAPPER = """#!/bin/sh
{marker}
# kdump-tools runs this as makedumpfile; the distribution's makedumpfile is {diverted}.
# `pykdumpctl debian disable` removes this file and the diversion.
PY={python}
# next to this file (also when it is run as /bin/makedumpfile through the /usr merge)
REAL="$(dirname "$0")/{diverted_name}"
if "$PY" -c 'import dumpfilter.kexec.debian' >/dev/null 2>&1; then
    PYDUMPFILE_REAL_MAKEDUMPFILE=$REAL exec "$PY" -m dumpfilter.kexec.debian "$@"
fi
echo "makedumpfile (pydumpfile wrapper): pydumpfile cannot start; running $REAL" >&2
exec "$REAL" "$@"
"""


class DebianError(DumpfilterError):
    pass


# ---------------------------------------------------------------------------------------------
# the wrapper (runs as makedumpfile)


def translate(argv: list[str]) -> list[str] | None:
    """pydumpfile's arguments for a makedumpfile command line, or None: only makedumpfile can do it."""
    out = []
    for a in argv:
        name = a.split("=", 1)[0]
        if name in FOREIGN:
            return None
        if name in DROP:
            continue
        out.append(a)
    return out


def _say(msg: str) -> None:
    print(f"makedumpfile (pydumpfile wrapper): {msg}", file=sys.stderr, flush=True)


def _exec_real(argv: list[str], why: str, real: str) -> int:
    if not os.access(real, os.X_OK):
        _say(f"{why}; and {real} is not there to fall back to")
        return 127
    _say(f"{why}; running {real}")
    os.execv(real, [real, *argv])
    return 127  # pragma: no cover - execv does not return


def _pipe_inode(fd: int) -> str | None:
    try:
        link = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None
    return link if link.startswith("pipe:") else None


def pipe_readers(fd: int = 1, proc: Path = Path("/proc")) -> list[tuple[int, str]]:
    """(pid, its standard output) of every process reading the pipe on our ``fd``: in kdump-config's
    ``makedumpfile … | compress > dump-incomplete`` the shell running the ``compress`` function and its
    ``cat`` (or compressor), whose output is dump-incomplete."""
    pipe = _pipe_inode(fd)
    if pipe is None:
        return []
    me = os.getpid()
    out: list[tuple[int, str]] = []
    for d in proc.iterdir():
        if not d.name.isdigit() or int(d.name) == me:
            continue
        try:
            if os.readlink(d / "fd/0") != pipe:
                continue
            out.append((int(d.name), os.readlink(d / "fd/1")))
        except OSError:
            continue
    return out


def _relay_all(src: int, dst: int) -> int:
    """Copy everything from pipe ``src`` to ``dst`` (splice where the kernel can); returns the byte count."""
    total = 0
    splice = getattr(os, "splice", None)
    while True:
        if splice is not None:
            try:
                n = splice(src, dst, 1 << 20)
            except OSError:
                splice = None
                continue
        else:
            data = os.read(src, 1 << 20)
            n = len(data)
            view = memoryview(data)
            while view:
                view = view[os.write(dst, view):]
        if n == 0:
            return total
        total += n


def mark_failed(reason: str, readers: list[tuple[int, str]]) -> None:
    """Leave the failure where kdump-config's admin looks, and fail the pipe kdump-config checks."""
    if not readers:
        _say("cannot find the reader of the output pipe: the dump file is incomplete (no end marker)")
        return
    files = sorted({out for _, out in readers if out.startswith("/") and os.path.isfile(out)})
    for out in files[:1]:
        marker = Path(out).parent / FAILED_NAME
        try:
            marker.write_text(f"pydumpfile failed: {reason}\n{out} (renamed dump.STAMP by kdump-config) is "
                              "incomplete: its flattened stream has no end marker.\n")
            _say(f"wrote {marker}")
        except OSError as e:
            _say(f"cannot write {marker}: {e.strerror}")
    for pid, _ in readers:
        try:
            os.kill(pid, signal.SIGTERM)
            _say(f"stopped the pipe's reader (pid {pid}) so that kdump-config sees the failure")
        except OSError:
            pass


def _pydumpfile() -> list[str]:
    return [sys.executable, "-m", "dumpfilter"]


def wrap(argv: list[str], *, real: str = DIVERTED, collector: list[str] | None = None) -> int:
    """Run pydumpfile for a makedumpfile command line; see the module docstring."""
    args = translate(argv)
    if args is None:
        return _exec_real(argv, "an option only makedumpfile has", real)
    if any(a in ("-h", "--help", "-v", "--version") for a in args):
        collector = collector or _pydumpfile()
        return subprocess.run([*collector, *args]).returncode
    cmd = [*(collector or _pydumpfile()), *args]
    env = dict(os.environ)
    env.setdefault("PYDUMPFILE_KEEP_DEBUGGABLE", "1")
    flat = any(re.fullmatch(r"-[a-zA-Z]*F[a-zA-Z]*", a) for a in args)
    if not flat:
        out = args[-1] if args and not args[-1].startswith("-") else None
        existed = out is not None and os.path.lexists(out)
        rc = subprocess.run(cmd, env=env).returncode
        if rc == 0:
            return 0
        if out is not None and not existed:  # a partial file would be taken for the result
            try:
                os.unlink(out)
            except OSError:
                pass
        return _exec_real(argv, f"pydumpfile failed (exit {rc})", real)
    r, w = os.pipe()
    try:
        proc = subprocess.Popen(cmd, stdout=w, env=env)
    except OSError as e:
        os.close(r)
        os.close(w)
        return _exec_real(argv, f"pydumpfile cannot start: {e.strerror}", real)
    os.close(w)
    try:
        written = _relay_all(r, 1)
    finally:
        os.close(r)
    rc = proc.wait()
    if rc == 0:
        return 0
    if written == 0:
        return _exec_real(argv, f"pydumpfile failed before writing (exit {rc})", real)
    _say(f"pydumpfile failed (exit {rc}) after writing {written} bytes")
    mark_failed(f"exit {rc} after {written} bytes of the flattened stream", pipe_readers(1))
    return rc


def wrap_main(argv: list[str] | None = None) -> int:
    return wrap(sys.argv[1:] if argv is None else argv, real=os.environ.get("PYDUMPFILE_REAL_MAKEDUMPFILE", DIVERTED))


# ---------------------------------------------------------------------------------------------
# pykdumpctl debian enable|disable|status


def _is_ours(path: Path) -> bool:
    try:
        return MARKER in path.read_text(errors="replace")[:400]
    except OSError:
        return False


def wrapper_text(python: str = sys.executable) -> str:
    return WRAPPER.format(marker=MARKER, diverted=DIVERTED, diverted_name=os.path.basename(DIVERTED),
                          python=shlex.quote(python))


def _divert(root: Path, *args: str) -> int:
    cmd = ["dpkg-divert", *args]
    if str(root) != "/":
        cmd[1:1] = ["--root", str(root)]
    print(shlex.join(cmd))
    if shutil.which("dpkg-divert") is None:
        raise DebianError("dpkg-divert is not installed: this is for Debian and its derivatives")
    return subprocess.run(cmd).returncode


def _diverted(root: Path) -> bool:
    if shutil.which("dpkg-divert") is None:
        return False
    cmd = ["dpkg-divert", *(["--root", str(root)] if str(root) != "/" else []), "--list", MAKEDUMPFILE]
    r = subprocess.run(cmd, capture_output=True, text=True)
    return DIVERTED in r.stdout


def cmd_debian(args: argparse.Namespace) -> int:
    root = Path(args.root or "/")
    target = root / MAKEDUMPFILE.lstrip("/")
    real = root / DIVERTED.lstrip("/")
    if args.action == "status":
        ours = _is_ours(target)
        diverted = _diverted(root)
        print(f"{MAKEDUMPFILE}: {'the pydumpfile wrapper' if ours else 'not the pydumpfile wrapper'}")
        print(f"diversion to {DIVERTED}: {'yes' if diverted else 'no'}"
              + ("" if real.exists() else " (the real makedumpfile is not there)"))
        print(f"kdump-tools uses {'pydumpfile' if ours and diverted else 'makedumpfile'}")
        return 0 if ours and diverted else 3
    if args.action == "enable":
        if _is_ours(target) and _diverted(root):
            print("already enabled")
        elif _is_ours(target):  # diverting now would rename our wrapper into the real one's place
            raise DebianError(f"{target} is the wrapper but there is no diversion: run 'pykdumpctl debian disable' "
                              "and reinstall makedumpfile, then enable again")
        else:
            if not _diverted(root):
                rc = _divert(root, "--local", "--rename", "--divert", DIVERTED, "--add", MAKEDUMPFILE)
                if rc != 0:
                    raise DebianError(f"dpkg-divert failed (exit {rc})")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(wrapper_text())
            target.chmod(0o755)
            print(f"wrote the wrapper {target}; the real makedumpfile is {DIVERTED}")
        print("kdump-config savecore now runs pydumpfile (falling back to makedumpfile if it cannot)")
        return 0
    # disable
    if target.exists() and _is_ours(target):
        target.unlink()
        print(f"removed the wrapper {target}")
    elif target.exists() and not _diverted(root):
        print(f"{target} is not the pydumpfile wrapper: left alone")
    if _diverted(root):
        rc = _divert(root, "--local", "--rename", "--divert", DIVERTED, "--remove", MAKEDUMPFILE)
        if rc != 0:
            raise DebianError(f"dpkg-divert --remove failed (exit {rc})")
    print("kdump-config savecore runs makedumpfile again")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "debian", help="make Debian's kdump-tools (kdump-config) use pydumpfile, or undo it",
        description=f"enable: divert {MAKEDUMPFILE} to {DIVERTED} (dpkg-divert --local --rename) and put a "
        "wrapper in its place that runs pydumpfile with makedumpfile's arguments (falling back to the real "
        "makedumpfile when pydumpfile cannot start or cannot honour an option; a collector failure in "
        f"kdump-config's '-F | cat > dump-incomplete' pipe leaves {FAILED_NAME} next to the dump and fails the "
        "pipe). disable: remove the wrapper and the diversion. status: exit 0 when enabled, 3 when not.")
    p.add_argument("action", choices=("enable", "disable", "status"))
    p.add_argument("--root", metavar="DIR", help="operate on the system image in DIR (dpkg-divert --root)")
    p.set_defaults(func=cmd_debian)


if __name__ == "__main__":  # the wrapper: python -m dumpfilter.kexec.debian MAKEDUMPFILE-ARGS
    raise SystemExit(wrap_main())
