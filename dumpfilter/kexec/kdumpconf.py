"""/etc/kdump.conf, read the way kdump-utils reads it, with every error naming its line.

Sources: kdump-utils ``kdump.conf.5`` (the directives), ``kdump-lib-initramfs.sh``
``kdump_get_conf_val`` (how a line is split), ``kdumpctl`` ``parse_config`` / ``_set_config`` /
``check_*_config`` (what is rejected) and ``mkdumprd`` ``verify_core_collector`` (``-F`` for raw and
ssh targets).

Line syntax, as kdump-utils: blank lines and lines whose first non-blank is ``#`` are skipped; the
first word is the directive, the rest (trimmed) its value; a ``#`` in the value starts a comment;
one pair of surrounding double quotes is removed. kdumpctl rejects a directive given twice and a
second dump target, and so do we.

Differences from kdumpctl, each stricter in a way kdumpctl would only notice later (or never):
unknown collectors are rejected unless given as an absolute path; fs targets must be a device path,
``UUID=``, ``LABEL=``, ``PARTUUID=`` or ``PARTLABEL=``; ``nfs`` must be ``host:/path``; booleans
must be 0/1 or yes/no. ``nfs4`` is accepted as ``nfs`` with a warning (kdumpctl rejects it).
"""
from __future__ import annotations

import difflib
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DumpfilterError

DEFAULT_PATH = "/var/crash"
DEFAULT_SSHKEY = "/root/.ssh/kdump_id_rsa"
DEFAULT_COLLECTOR = "pydumpfile -l -d 31"
DEFAULT_STREAM_COLLECTOR = "pydumpfile -F -l -d 31"  # raw and ssh targets write to stdout

FS_TYPES = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "minix", "virtiofs"})
NFS_TYPES = frozenset({"nfs", "nfs4"})
FAILURE_ACTIONS = ("reboot", "halt", "poweroff", "shell", "dump_to_rootfs")
FINAL_ACTIONS = ("reboot", "halt", "poweroff")
#: makedumpfile-compatible collectors: they need -F to write a stream for raw/ssh targets.
FLATTENING_COLLECTORS = frozenset({"makedumpfile", "pydumpfile"})
KNOWN_COLLECTORS = FLATTENING_COLLECTORS | {"cp", "scp", "cat", "dd"}
DEVICE_PREFIXES = ("UUID=", "LABEL=", "PARTUUID=", "PARTLABEL=")

_SIMPLE = (
    "path",
    "core_collector",
    "sshkey",
    "kdump_pre",
    "kdump_post",
    "kdump_emergency",
    "extra_bins",
    "extra_modules",
    "failure_action",
    "default",
    "final_action",
    "dracut_args",
    "force_rebuild",
    "force_no_rebuild",
    "fence_kdump_args",
    "fence_kdump_nodes",
    "auto_reset_crashkernel",
)
_TARGETS = ("raw", "nfs", "nfs4", "ssh", *sorted(FS_TYPES))
_DEPRECATED = {
    "net": "use 'nfs' or 'ssh'",
    "options": "use KDUMP_COMMANDLINE_APPEND in /etc/sysconfig/kdump",
    "link_delay": "dracut waits for the network itself",
    "disk_timeout": "dracut waits for disks itself",
    "debug_mem_level": "use rd.memdebug= in KDUMP_COMMANDLINE_APPEND",
    "blacklist": "use rd.driver.blacklist= in KDUMP_COMMANDLINE_APPEND",
}
KNOWN_DIRECTIVES = frozenset(_SIMPLE) | frozenset(_TARGETS)


class KdumpConfError(DumpfilterError):
    """kdump.conf is wrong; the message starts with ``FILE:LINE:``."""


@dataclass(frozen=True)
class Target:
    kind: str  # "raw", "fs", "nfs" or "ssh"
    fstype: str  # "raw", "ext4", "xfs", "nfs", "nfs4", "ssh", …
    spec: str  # /dev/sdb1, UUID=…, LABEL=…, host:/export, user@host
    line: int
    from_dracut_args: bool = False


@dataclass(frozen=True)
class KdumpConfig:
    """The parsed file. ``target is None``: dump to ``path`` on whatever is mounted there."""

    target: Target | None = None
    path: str = DEFAULT_PATH
    core_collector: str = DEFAULT_COLLECTOR
    core_collector_is_default: bool = True
    sshkey: str = DEFAULT_SSHKEY
    kdump_pre: str | None = None
    kdump_post: str | None = None
    kdump_emergency: str | None = None
    extra_bins: tuple[str, ...] = ()
    extra_modules: tuple[str, ...] = ()
    failure_action: str = "reboot"
    final_action: str = "reboot"
    dracut_args: tuple[str, ...] = ()
    force_rebuild: bool = False
    force_no_rebuild: bool = False
    fence_kdump_args: str | None = None
    fence_kdump_nodes: tuple[str, ...] = ()
    auto_reset_crashkernel: bool = True
    warnings: tuple[str, ...] = field(default=())

    @property
    def target_kind(self) -> str:
        """"raw", "fs", "nfs", "ssh", or "local" when no target is given."""
        return self.target.kind if self.target else "local"

    @property
    def target_spec(self) -> str | None:
        return self.target.spec if self.target else None

    @property
    def collector_argv(self) -> list[str]:
        return shlex.split(self.core_collector)

    def summary(self) -> list[str]:
        t = self.target
        where = f"{t.fstype} {t.spec}" + (" (from dracut_args --mount)" if t.from_dracut_args else "") if t else "local"
        lines = [
            f"target:           {where}",
            f"path:             {self.path}" + (" (ignored for raw)" if self.target_kind == "raw" else ""),
            f"core_collector:   {self.core_collector}" + (" (default)" if self.core_collector_is_default else ""),
            f"failure_action:   {self.failure_action}",
            f"final_action:     {self.final_action}",
        ]
        if self.target_kind == "ssh":
            lines.append(f"sshkey:           {self.sshkey}")
        for name in ("kdump_pre", "kdump_post", "kdump_emergency", "fence_kdump_args"):
            value = getattr(self, name)
            if value:
                lines.append(f"{name + ':':<18}{value}")
        for name in ("extra_bins", "extra_modules", "dracut_args", "fence_kdump_nodes"):
            value = getattr(self, name)
            if value:
                lines.append(f"{name + ':':<18}{shlex.join(value)}")
        if self.force_rebuild or self.force_no_rebuild:
            lines.append(f"rebuild:          {'always' if self.force_rebuild else 'never'}")
        lines.append(f"auto_reset_crashkernel: {'yes' if self.auto_reset_crashkernel else 'no'}")
        return lines


def _split_line(raw: str) -> tuple[str, str] | None:
    """kdump_get_conf_val(): (directive, value) or None for a blank or comment line."""
    line = raw.strip()
    if not line or line.startswith("#"):
        return None
    parts = line.split(None, 1)
    opt, val = parts[0], (parts[1] if len(parts) > 1 else "")
    if "#" in val:
        val = val.split("#", 1)[0].rstrip()
    if len(val) >= 2 and val.startswith('"') and val.endswith('"'):
        val = val[1:-1]
    return opt, val


class _Parser:
    def __init__(self, name: str) -> None:
        self.name = name
        self.seen: dict[str, int] = {}
        self.values: dict[str, str] = {}
        self.target: Target | None = None
        self.warnings: list[str] = []

    def err(self, line: int, msg: str) -> KdumpConfError:
        return KdumpConfError(f"{self.name}:{line}: {msg}")

    def warn(self, line: int, msg: str) -> None:
        self.warnings.append(f"{self.name}:{line}: {msg}")

    def set_target(self, line: int, target: Target) -> None:
        if self.target is not None:
            raise self.err(
                line,
                f"a second dump target '{target.fstype} {target.spec}' (the first, "
                f"'{self.target.fstype} {self.target.spec}', is on line {self.target.line}); only one is allowed",
            )
        self.target = target

    def feed(self, line: int, opt: str, val: str) -> None:
        if opt in _DEPRECATED:
            raise self.err(line, f"'{opt}' is deprecated and no longer supported: {_DEPRECATED[opt]}")
        if opt not in KNOWN_DIRECTIVES:
            close = difflib.get_close_matches(opt, sorted(KNOWN_DIRECTIVES), n=1, cutoff=0.75)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise self.err(line, f"unknown directive '{opt}'{hint}")
        if not val:
            raise self.err(line, f"'{opt}' needs a value")
        key = "failure_action" if opt == "default" else opt
        if opt == "default":
            self.warn(line, "'default' is the obsolete name of 'failure_action'")
        if opt in _TARGETS:
            self.set_target(line, self.parse_target(line, opt, val))
            return
        if key in self.seen:
            raise self.err(line, f"'{key}' given twice (first on line {self.seen[key]})")
        self.seen[key] = line
        self.values[key] = val
        if key == "dracut_args":
            self.parse_dracut_args(line, val)

    def parse_target(self, line: int, opt: str, val: str) -> Target:
        if len(val.split()) != 1:
            raise self.err(line, f"'{opt}' takes one argument, got {val!r}")
        if opt == "ssh":
            user, _, host = val.partition("@")
            if not user or not host:
                raise self.err(line, f"ssh target must be 'user@host', got {val!r}")
            return Target("ssh", "ssh", val, line)
        if opt in NFS_TYPES:
            if opt == "nfs4":
                self.warn(line, "'nfs4' is not a kdump-utils directive (kdumpctl rejects it); use 'nfs'")
            if not _is_nfs_spec(val):
                raise self.err(line, f"{opt} target must be 'host:/path', got {val!r}")
            return Target("nfs", opt, val, line)
        if opt == "virtiofs":
            return Target("fs", opt, val, line)  # a virtiofs tag, not a device
        if not (val.startswith("/") or val.startswith(DEVICE_PREFIXES)):
            raise self.err(
                line, f"{opt} target must be a device path, UUID=, LABEL=, PARTUUID= or PARTLABEL=, got {val!r}"
            )
        if val.startswith(DEVICE_PREFIXES) and val.endswith("="):
            raise self.err(line, f"{opt} target {val!r} is missing its value")
        return Target("raw" if opt == "raw" else "fs", opt, val, line)

    def parse_dracut_args(self, line: int, val: str) -> None:
        try:
            argv = shlex.split(val)
        except ValueError as e:
            raise self.err(line, f"dracut_args: {e}") from None
        mounts = [i for i, a in enumerate(argv) if a == "--mount" or a.startswith("--mount=")]
        if len(mounts) > 1:
            raise self.err(line, "dracut_args: more than one --mount (only one dump target is allowed)")
        if not mounts:
            return
        i = mounts[0]
        spec = argv[i].split("=", 1)[1] if argv[i].startswith("--mount=") else (argv[i + 1] if i + 1 < len(argv) else "")
        fields = spec.split()
        if len(fields) < 3:
            raise self.err(line, f"dracut_args: --mount needs \"DEVICE MOUNTPOINT FSTYPE [OPTIONS]\", got {spec!r}")
        device, fstype = fields[0], fields[2]
        kind = "nfs" if fstype.startswith("nfs") else "fs"
        self.set_target(line, Target(kind, fstype, device, line, from_dracut_args=True))

    def line_of(self, key: str) -> int:
        return self.seen.get(key, 0)

    def boolean(self, key: str, words: tuple[str, str]) -> bool | None:
        val = self.values.get(key)
        if val is None:
            return None
        if val not in words:
            raise self.err(self.line_of(key), f"'{key}' must be {words[0]} or {words[1]}, got {val!r}")
        return val == words[1]

    def finish(self) -> KdumpConfig:
        v = self.values
        for key, allowed in (("failure_action", FAILURE_ACTIONS), ("final_action", FINAL_ACTIONS)):
            if key in v and v[key] not in allowed:
                raise self.err(self.line_of(key), f"'{key}' must be one of {', '.join(allowed)}, got {v[key]!r}")
        force_rebuild = bool(self.boolean("force_rebuild", ("0", "1")))
        force_no_rebuild = bool(self.boolean("force_no_rebuild", ("0", "1")))
        if force_rebuild and force_no_rebuild:
            raise self.err(
                max(self.line_of("force_rebuild"), self.line_of("force_no_rebuild")),
                "force_rebuild and force_no_rebuild cannot both be 1",
            )
        auto_reset = self.boolean("auto_reset_crashkernel", ("no", "yes"))
        if v.get("failure_action") == "dump_to_rootfs" and self.target is None:
            self.warn(self.line_of("failure_action"), "dump_to_rootfs only makes sense with a non-root dump target")
        kind = self.target.kind if self.target else "local"
        collector = v.get("core_collector")
        if collector is not None:
            self.check_collector(collector, kind)
        elif kind in ("raw", "ssh"):
            collector = DEFAULT_STREAM_COLLECTOR
        if self.target and self.target.kind == "raw" and "path" in v:
            self.warn(self.line_of("path"), "'path' is ignored for a raw target")
        return KdumpConfig(
            target=self.target,
            path=v.get("path", DEFAULT_PATH),
            core_collector=collector or DEFAULT_COLLECTOR,
            core_collector_is_default="core_collector" not in v,
            sshkey=v.get("sshkey", DEFAULT_SSHKEY),
            kdump_pre=v.get("kdump_pre"),
            kdump_post=v.get("kdump_post"),
            kdump_emergency=v.get("kdump_emergency"),
            extra_bins=tuple(v.get("extra_bins", "").split()),
            extra_modules=tuple(v.get("extra_modules", "").split()),
            failure_action=v.get("failure_action", "reboot"),
            final_action=v.get("final_action", "reboot"),
            dracut_args=tuple(shlex.split(v["dracut_args"])) if "dracut_args" in v else (),
            force_rebuild=force_rebuild,
            force_no_rebuild=force_no_rebuild,
            fence_kdump_args=v.get("fence_kdump_args"),
            fence_kdump_nodes=tuple(v.get("fence_kdump_nodes", "").split()),
            auto_reset_crashkernel=True if auto_reset is None else auto_reset,
            warnings=tuple(self.warnings),
        )

    def check_collector(self, collector: str, kind: str) -> None:
        line = self.line_of("core_collector")
        try:
            argv = shlex.split(collector)
        except ValueError as e:
            raise self.err(line, f"core_collector: {e}") from None
        if not argv:
            raise self.err(line, "'core_collector' needs a command")
        name = argv[0].rsplit("/", 1)[-1]
        if name not in KNOWN_COLLECTORS:
            if not argv[0].startswith("/"):
                close = difflib.get_close_matches(name, sorted(KNOWN_COLLECTORS), n=1, cutoff=0.6)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise self.err(
                    line,
                    f"unknown core_collector '{name}'{hint}; use one of {', '.join(sorted(KNOWN_COLLECTORS))} "
                    "or an absolute path",
                )
            self.warn(line, f"custom core_collector {argv[0]}: it must behave like the one it replaces")
        if name in FLATTENING_COLLECTORS and kind in ("raw", "ssh") and not _has_flag(argv[1:], "F"):
            raise self.err(line, f"the {kind} dump target needs '{name} -F' (the dump is written to standard output)")
        if name == "scp" and kind != "ssh":
            raise self.err(line, "'scp' as core_collector only works with an ssh target")
        if kind == "raw" and name not in FLATTENING_COLLECTORS:
            self.warn(line, f"with '{name}' on a raw target the vmcore must be recovered by hand")


def _has_flag(args: list[str], letter: str) -> bool:
    """Is ``-F`` among the options, alone or in a cluster like ``-lF``?"""
    for a in args:
        if a == "--":
            break
        if a.startswith("-") and not a.startswith("--") and letter in a[1:]:
            return True
    return False


def _is_nfs_spec(val: str) -> bool:
    if val.startswith("["):  # [fe80::1]:/export
        host, sep, rest = val[1:].partition("]")
        return bool(host) and sep == "]" and rest.startswith(":/")
    host, sep, path = val.partition(":")
    return bool(host) and sep == ":" and path.startswith("/")


def parse_text(text: str, name: str = "kdump.conf") -> KdumpConfig:
    """Parse kdump.conf contents; errors read ``{name}:{line}: …``."""
    parser = _Parser(name)
    for number, raw in enumerate(text.splitlines(), start=1):
        split = _split_line(raw)
        if split is not None:
            parser.feed(number, *split)
    return parser.finish()


def parse_file(path: str | Path) -> KdumpConfig:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise KdumpConfError(f"{path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise KdumpConfError(f"{path}: not a text file") from None
    return parse_text(text, str(path))
