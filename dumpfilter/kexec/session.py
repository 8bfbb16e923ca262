"""What one ``pykdumpctl capture`` run is handed: its options (``CaptureOptions``, with the
``PYKDUMPCTL_*`` overrides), its log (``kdump: …`` lines), the ``Session`` a destination works for, and
``Failed``, the exception of a step whose message is already logged.

The flow is in capture.py, the destinations in targets.py.
"""
from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass, field
from typing import TextIO

from .kdumpconf import KdumpConfig

PROC_VMCORE = "/proc/vmcore"
DEFAULT_CONFIG = "/etc/kdump.conf"
DEFAULT_HOOKS_DIR = "/etc/kdump"

ACTION_ENV = "PYKDUMPCTL_ACTION_CMD"
MOUNT_ROOT_ENV = "PYKDUMPCTL_MOUNT_ROOT"
ROOTFS_ENV = "PYKDUMPCTL_ROOTFS"
SSH_OPTS_ENV = "PYKDUMPCTL_SSH_OPTS"

SSH_RECEIVERS = ("auto", "pydumpfile", "flat")


class Log:
    """``kdump: …`` lines on stderr, kept for kexec-dmesg.log."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream
        self.lines: list[str] = []

    def __call__(self, msg: str) -> None:
        line = f"kdump: {msg}"
        self.lines.append(line)
        print(line, file=self.stream or sys.stderr, flush=True)

    def text(self) -> str:
        return "".join(line + "\n" for line in self.lines)


@dataclass
class CaptureOptions:
    vmcore: str = PROC_VMCORE
    target_root: str | None = None  # the target fs is mounted here already
    rootfs: str = "/"
    hooks_dir: str = DEFAULT_HOOKS_DIR
    ssh_options: list[str] = field(default_factory=list)
    ssh_receiver: str = "auto"
    action_cmd: list[str] | None = None
    ip: str | None = None
    now: float | None = None

    @classmethod
    def from_env(cls, **kw) -> "CaptureOptions":
        """Fill the unset overrides from the PYKDUMPCTL_* environment variables."""
        if kw.get("target_root") is None and os.environ.get(MOUNT_ROOT_ENV):
            kw["target_root"] = os.environ[MOUNT_ROOT_ENV]
        if kw.get("rootfs") is None:
            kw["rootfs"] = os.environ.get(ROOTFS_ENV) or "/"
        if kw.get("action_cmd") is None and os.environ.get(ACTION_ENV):
            kw["action_cmd"] = shlex.split(os.environ[ACTION_ENV])
        env_ssh = shlex.split(os.environ.get(SSH_OPTS_ENV, ""))
        kw["ssh_options"] = [*env_ssh, *(kw.get("ssh_options") or [])]
        return cls(**{k: v for k, v in kw.items() if v is not None})


class Failed(Exception):
    """A step failed; the message is already logged. ``status`` is the dump status for kdump_post."""

    def __init__(self, status: int = 1) -> None:
        super().__init__(status)
        self.status = status


@dataclass
class Session:
    """One capture run as its destination sees it; the destination records where the vmcore went."""

    conf: KdumpConfig
    opts: CaptureOptions
    log: Log
    dirname: str  # $HOST_IP-$DATE
    saved_to: str | None = None

    @property
    def collector(self) -> list[str]:
        return self.conf.collector_argv
