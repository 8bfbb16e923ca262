"""``pykdumpctl save-raw``: the next boot's ``kdumpctl save_raw``, which saves a dump that
``pykdumpctl capture`` left on a ``raw`` target (a flattened stream written with ``dd``)."""
from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

from ..layouts import FLAT_HEADER_SIZE, FLAT_SIGNATURE
from .collector import child_env, exec_argv
from .session import Log
from .system import dump_dir_name, fsync_dir, fsync_path


def save_raw(device: str, path: str, *, keep: bool = False, log: Log | None = None,
             ip: str | None = None, now: float | None = None) -> int:
    """Rearrange the flattened stream on DEVICE into ``PATH/$HOST_IP-$DATE/vmcore`` (kdumpctl save_raw).

    No stream (wrong signature) is not an error: exit 0, nothing written. After a successful save the
    stream's first 512 bytes are zeroed (as kdumpctl does) so the next boot does not save it again,
    unless ``keep``.
    """
    log = log or Log()
    try:
        with open(device, "rb") as f:
            head = f.read(FLAT_HEADER_SIZE)
    except OSError as e:
        log(f"cannot read {device}: {e.strerror or e}")
        return 1
    if head[: len(FLAT_SIGNATURE)] != FLAT_SIGNATURE:
        log(f"no dump found on {device}")
        return 0
    coredir = Path(path) / dump_dir_name(ip, now)
    try:
        coredir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        log(f"failed to create {coredir}: {e.strerror or e}")
        return 1
    part, final = coredir / "vmcore-incomplete", coredir / "vmcore"
    argv = ["pydumpfile", "-R", str(part)]
    log(f"saving the dump on {device} to {coredir}/")
    log(f"running {shlex.join(argv)} < {device}")
    with open(device, "rb") as f:
        rc = subprocess.run(exec_argv(argv), stdin=f, env=child_env()).returncode
    if rc != 0 or not part.exists():
        log(f"saving vmcore failed, exitcode:{rc}" + (f"; the partial dump is kept as {part}" if part.exists() else ""))
        return 1
    fsync_path(part)
    os.replace(part, final)
    fsync_dir(coredir)
    log(f"Dump saved to {final}")
    if not keep:
        fd = os.open(device, os.O_WRONLY)
        try:
            os.pwrite(fd, bytes(512), 0)  # kdumpctl: dd if=/dev/zero of=DEV bs=1b count=1 (no truncation here)
            os.fsync(fd)
        finally:
            os.close(fd)
        log(f"wiped the dump header on {device}")
    return 0
