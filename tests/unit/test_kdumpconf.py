"""kdump.conf as kdump-utils reads it (kdump.conf.5, kdumpctl parse_config), errors with line numbers."""
from __future__ import annotations

from pathlib import Path

import pytest

from dumpfilter.errors import DumpfilterError
from dumpfilter.kexec.kdumpconf import (
    DEFAULT_COLLECTOR,
    DEFAULT_STREAM_COLLECTOR,
    KdumpConfError,
    parse_file,
    parse_text,
)

FULL = """\
# kdump.conf with every directive
auto_reset_crashkernel no
xfs LABEL=crash   # a trailing comment
path /var/crash/dumps
core_collector "makedumpfile -l --message-level 7 -d 31"
sshkey /root/.ssh/other_key

kdump_pre /usr/local/bin/pre.sh
kdump_post /usr/local/bin/post.sh
kdump_emergency /usr/local/bin/emergency.sh
extra_bins /usr/bin/lsblk /usr/bin/lspci
extra_modules mlx5_core   nvme
failure_action dump_to_rootfs
final_action poweroff
dracut_args --omit-drivers "nouveau radeon"
force_rebuild 1
force_no_rebuild 0
fence_kdump_args -p 7410 -f auto -c 0 -i 10
fence_kdump_nodes node1 node2
"""


def err(text: str) -> str:
    with pytest.raises(KdumpConfError) as info:
        parse_text(text)
    msg = str(info.value)
    assert "\n" not in msg and isinstance(info.value, DumpfilterError)
    return msg


def test_every_directive() -> None:
    c = parse_text(FULL)
    assert c.target is not None
    assert (c.target_kind, c.target.fstype, c.target_spec, c.target.line) == ("fs", "xfs", "LABEL=crash", 3)
    assert c.path == "/var/crash/dumps"
    assert c.core_collector == "makedumpfile -l --message-level 7 -d 31"  # quotes removed
    assert c.collector_argv == ["makedumpfile", "-l", "--message-level", "7", "-d", "31"]
    assert not c.core_collector_is_default
    assert c.sshkey == "/root/.ssh/other_key"
    assert (c.kdump_pre, c.kdump_post, c.kdump_emergency) == (
        "/usr/local/bin/pre.sh",
        "/usr/local/bin/post.sh",
        "/usr/local/bin/emergency.sh",
    )
    assert c.extra_bins == ("/usr/bin/lsblk", "/usr/bin/lspci")
    assert c.extra_modules == ("mlx5_core", "nvme")
    assert (c.failure_action, c.final_action) == ("dump_to_rootfs", "poweroff")
    assert c.dracut_args == ("--omit-drivers", "nouveau radeon")
    assert (c.force_rebuild, c.force_no_rebuild) == (True, False)
    assert c.fence_kdump_args == "-p 7410 -f auto -c 0 -i 10"
    assert c.fence_kdump_nodes == ("node1", "node2")
    assert c.auto_reset_crashkernel is False
    assert c.warnings == ()
    summary = "\n".join(c.summary())
    assert "xfs LABEL=crash" in summary and "poweroff" in summary


def test_defaults() -> None:
    c = parse_text("# nothing but a comment\n\n   \n")
    assert c.target is None and c.target_kind == "local" and c.target_spec is None
    assert c.path == "/var/crash"
    assert c.core_collector == DEFAULT_COLLECTOR == "pydumpfile -l -d 31"
    assert c.core_collector_is_default
    assert (c.failure_action, c.final_action) == ("reboot", "reboot")
    assert c.sshkey == "/root/.ssh/kdump_id_rsa"
    assert c.auto_reset_crashkernel is True
    assert not c.force_rebuild and not c.force_no_rebuild


@pytest.mark.parametrize("target", ["ssh kdump@backup.example.com", "raw /dev/vg/kdump"])
def test_stream_targets_default_to_flattened_output(target: str) -> None:
    c = parse_text(target)
    assert c.core_collector == DEFAULT_STREAM_COLLECTOR
    assert "-F" in c.collector_argv


@pytest.mark.parametrize(
    "line, kind, fstype, spec",
    [
        ("ext4 /dev/sdb1", "fs", "ext4", "/dev/sdb1"),
        ("ext2 UUID=03138356-5e61-4ab3-b58e-27507ac41937", "fs", "ext2", "UUID=03138356-5e61-4ab3-b58e-27507ac41937"),
        ("ext3 LABEL=kdump", "fs", "ext3", "LABEL=kdump"),
        ("btrfs /dev/mapper/vg-crash", "fs", "btrfs", "/dev/mapper/vg-crash"),
        ("minix /dev/sdc", "fs", "minix", "/dev/sdc"),
        ("virtiofs hostshare", "fs", "virtiofs", "hostshare"),
        ("raw /dev/sdb2", "raw", "raw", "/dev/sdb2"),
        ("nfs my.server.com:/export/tmp", "nfs", "nfs", "my.server.com:/export/tmp"),
        ("nfs [fd00::1]:/export", "nfs", "nfs", "[fd00::1]:/export"),
        ("ssh user@my.server.com", "ssh", "ssh", "user@my.server.com"),
    ],
)
def test_targets(line: str, kind: str, fstype: str, spec: str) -> None:
    t = parse_text(line).target
    assert t is not None and (t.kind, t.fstype, t.spec) == (kind, fstype, spec)


def test_nfs4_is_accepted_with_a_warning() -> None:
    c = parse_text("nfs4 server:/export")
    assert c.target_kind == "nfs" and c.target is not None and c.target.fstype == "nfs4"
    assert any("kdump.conf:1:" in w and "nfs4" in w for w in c.warnings)


def test_dracut_args_mount_is_the_target() -> None:
    c = parse_text('dracut_args --mount "host:/srv/crash /mnt nfs4 defaults"\npath /dumps')
    t = c.target
    assert t is not None and (t.kind, t.fstype, t.spec, t.from_dracut_args) == ("nfs", "nfs4", "host:/srv/crash", True)


def test_default_is_the_old_name_of_failure_action() -> None:
    c = parse_text("default shell")
    assert c.failure_action == "shell"
    assert any("obsolete" in w for w in c.warnings)
    assert "given twice" in err("failure_action halt\ndefault shell")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("path /var/crash\ncore_colector makedumpfile -l", "kdump.conf:2: unknown directive 'core_colector' (did you mean 'core_collector'?)"),
        ("\n\nfinal_acton reboot", "kdump.conf:3: unknown directive 'final_acton' (did you mean 'final_action'?)"),
        ("frobnicate yes", "kdump.conf:1: unknown directive 'frobnicate'"),
        ("xfs /dev/sda1\nnfs server:/export", "kdump.conf:2: a second dump target"),
        ("ssh a@b\n\nraw /dev/sdb", "kdump.conf:3: a second dump target"),
        ('ext4 /dev/sda1\ndracut_args --mount "h:/e /mnt nfs defaults"', "kdump.conf:2: a second dump target"),
        ('dracut_args --mount "a /m ext4" --mount "b /n xfs"', "kdump.conf:1: dracut_args: more than one --mount"),
        ('dracut_args --mount "onlydevice"', "kdump.conf:1: dracut_args: --mount needs"),
        ("failure_action explode", "kdump.conf:1: 'failure_action' must be one of"),
        ("\nfinal_action shell", "kdump.conf:2: 'final_action' must be one of reboot, halt, poweroff"),
        ("force_rebuild yes", "kdump.conf:1: 'force_rebuild' must be 0 or 1"),
        ("force_no_rebuild 2", "kdump.conf:1: 'force_no_rebuild' must be 0 or 1"),
        ("force_rebuild 1\nforce_no_rebuild 1", "kdump.conf:2: force_rebuild and force_no_rebuild cannot both be 1"),
        ("auto_reset_crashkernel maybe", "kdump.conf:1: 'auto_reset_crashkernel' must be no or yes"),
        ("path /a\npath /b", "kdump.conf:2: 'path' given twice (first on line 1)"),
        ("path", "kdump.conf:1: 'path' needs a value"),
        ('path ""', "kdump.conf:1: 'path' needs a value"),
        ("path # only a comment", "kdump.conf:1: 'path' needs a value"),
        ("ssh backup.example.com", "kdump.conf:1: ssh target must be 'user@host'"),
        ("nfs server", "kdump.conf:1: nfs target must be 'host:/path'"),
        ("nfs server:relative", "kdump.conf:1: nfs target must be 'host:/path'"),
        ("ext4 sda1", "kdump.conf:1: ext4 target must be a device path"),
        ("xfs UUID=", "kdump.conf:1: xfs target 'UUID=' is missing its value"),
        ("raw /dev/sdb /dev/sdc", "kdump.conf:1: 'raw' takes one argument"),
        ("net server:/export", "kdump.conf:1: 'net' is deprecated"),
        ("link_delay 10", "kdump.conf:1: 'link_delay' is deprecated"),
        ("core_collector makedumpfle -l", "kdump.conf:1: unknown core_collector 'makedumpfle' (did you mean 'makedumpfile'?)"),
        ("ssh u@h\ncore_collector makedumpfile -l -d 31", "kdump.conf:2: the ssh dump target needs 'makedumpfile -F'"),
        ("core_collector pydumpfile -l\nraw /dev/sdb", "kdump.conf:1: the raw dump target needs 'pydumpfile -F'"),
        ("nfs h:/e\ncore_collector scp", "kdump.conf:2: 'scp' as core_collector only works with an ssh target"),
        ("core_collector 'unterminated", "kdump.conf:1: core_collector:"),
    ],
)
def test_errors_name_the_line(text: str, expected: str) -> None:
    assert err(text).startswith(expected)


def test_flattening_flag_may_be_clustered() -> None:
    c = parse_text("ssh u@h\ncore_collector makedumpfile -lF --message-level 7 -d 31")
    assert c.core_collector.startswith("makedumpfile -lF")
    assert parse_text("raw /dev/sdb\ncore_collector pydumpfile -F -z -d 31").target_kind == "raw"


def test_fs_target_collector_with_F_is_accepted() -> None:
    # kdump.sh strips -F for fs targets, so it is not an error there
    assert parse_text("ext4 /dev/sda1\ncore_collector makedumpfile -F -l").core_collector == "makedumpfile -F -l"


def test_other_collectors() -> None:
    assert parse_text('core_collector "cp --sparse=always"').collector_argv == ["cp", "--sparse=always"]
    assert parse_text("ssh u@h\ncore_collector scp").core_collector == "scp"
    raw_cat = parse_text("raw /dev/sdb\ncore_collector cat")
    assert any("recovered by hand" in w for w in raw_cat.warnings)
    custom = parse_text("core_collector /usr/local/bin/mycollector --fast")
    assert custom.core_collector == "/usr/local/bin/mycollector --fast"
    assert any("custom core_collector" in w for w in custom.warnings)
    assert parse_text("core_collector /usr/sbin/makedumpfile -l -d 31").warnings == ()


def test_hash_inside_a_value_starts_a_comment_like_kdump_utils() -> None:
    assert parse_text("path /var/crash#not-a-dir").path == "/var/crash"
    assert parse_text("   # indented comment\n\tpath\t/x  ").path == "/x"


def test_parse_file_names_the_file(tmp_path: Path) -> None:
    conf = tmp_path / "kdump.conf"
    conf.write_text("path /var/crash\n\ncore_colector makedumpfile\n")
    with pytest.raises(KdumpConfError, match=rf"^{conf}:3: unknown directive"):
        parse_file(conf)
    conf.write_text(FULL)
    assert parse_file(conf).final_action == "poweroff"
    with pytest.raises(KdumpConfError, match="cannot read"):
        parse_file(tmp_path / "missing.conf")
