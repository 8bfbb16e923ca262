"""``pykdumpctl capture`` / ``save-raw`` end to end: the real collector on a synthetic vmcore (whose
``--dump-dmesg`` fails: no printk ring) and a real sshd on loopback. The dmesg path on a real vmcore
(built under QEMU) is in tests/real/test_capture_real.py; both share tests/capture_lib.py.

Reboot/halt/poweroff/shell never run: every run sets PYKDUMPCTL_ACTION_CMD to a recorder (and the
vmcore is never /proc/vmcore, so capture would refuse the real ones anyway).
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from dumpfilter.kexec import capture as cap
from fixtures.synthetic import SynthSpec, generate
from tests.capture_lib import (CTL, TIMEOUT, Ctl, check_vmcore, ctl, dump_dirs, log_order,  # noqa: F401 (ctl, sshd: fixtures)
                               one_dump_dir, script, ssh_capture, sshd)
from tests.helpers import PYDUMPFILE, KdumpFile


# --- fixtures ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("capture") / "vmcore", SynthSpec())


@pytest.fixture(scope="module")
def direct(synth, tmp_path_factory) -> bytes:
    """What `pydumpfile -l -d 31 VMCORE OUT` writes: the reference for every saved vmcore."""
    out = tmp_path_factory.mktemp("direct") / "dump"
    r = subprocess.run(PYDUMPFILE + ["-l", "-d", "31", synth.path, str(out)], capture_output=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    return out.read_bytes()


# --- local and file-system targets ----------------------------------------------------------------------


def test_local_target_end_to_end(ctl, synth, direct, tmp_path):
    root = tmp_path / "root"
    r = ctl.capture("path /var/crash\n", synth.path, "--target-root", root)
    assert r.returncode == 0, r.stderr
    d = one_dump_dir(root / "var/crash")
    assert d.name.startswith(cap.host_ip() + "-")
    # --dump-dmesg fails on the synthetic core (no printk ring): logged, and the vmcore is saved anyway
    assert sorted(p.name for p in d.iterdir()) == ["kexec-dmesg.log", "vmcore"]
    check_vmcore(d / "vmcore", synth, direct)
    log_order(r.stderr, "kdump: saving to ", "kdump: saving vmcore-dmesg.txt to", "kdump: saving vmcore-dmesg.txt failed",
              "kdump: saving vmcore\n", "--num-threads=", "kdump: saving vmcore complete", "kdump: Executing final action reboot")
    assert ctl.actions == ["reboot"]
    assert "kdump: saving vmcore complete" in (d / "kexec-dmesg.log").read_text()


def test_incomplete_dump_kept_and_failure_action(ctl, synth, tmp_path):
    root = tmp_path / "root"
    post = script(tmp_path / "post", f'echo "$1" > {tmp_path}/post-status\n')
    conf = (f"core_collector pydumpfile -l -d 1 -L 4M\nfailure_action halt\nfinal_action poweroff\n"
            f"kdump_post {post}\n")
    r = ctl.capture(conf, synth.path, "--target-root", root)
    assert r.returncode == 1
    d = one_dump_dir(root / "var/crash")
    assert not (d / "vmcore").exists()
    kd = KdumpFile.load(str(d / "vmcore-incomplete"))
    assert kd.status & 0x8  # marked incomplete inside the file
    assert "kdump: saving vmcore failed, exitcode:1" in r.stderr
    assert "kdump: Executing failure action halt" in r.stderr
    assert ctl.actions == ["halt"]  # no final action after reboot/halt/poweroff
    assert (tmp_path / "post-status").read_text().strip() == "1"


def test_kdump_pre_failure_means_no_dump(ctl, synth, tmp_path):
    root = tmp_path / "root"
    pre = script(tmp_path / "pre", f"echo ran > {tmp_path}/pre-ran\nexit 3\n")
    post = script(tmp_path / "post", f"echo ran > {tmp_path}/post-ran\n")
    r = ctl.capture(f"kdump_pre {pre}\nkdump_post {post}\nfailure_action poweroff\n", synth.path, "--target-root", root)
    assert r.returncode == 1
    assert (tmp_path / "pre-ran").exists() and not (tmp_path / "post-ran").exists()
    assert dump_dirs(root / "var/crash") == []
    assert "exited with 3 status" in r.stderr and "kdump_pre script exited with non-zero status!" in r.stderr
    assert ctl.actions == ["poweroff"]


def test_kdump_post_runs_after_the_dump_with_status(ctl, synth, direct, tmp_path):
    root = tmp_path / "root"
    order = tmp_path / "order"
    pre = script(tmp_path / "pre", f"echo pre >> {order}\n")
    body = f'echo "$(basename "$0") $1 $(find {root} -name vmcore | wc -l)" >> {order}\n'
    post = script(tmp_path / "post", body)
    hooks = tmp_path / "hooks"
    script(hooks / "post.d" / "10-hook", body)
    script(hooks / "pre.d" / "10-failing", "exit 1\n")  # pre.d failures are only logged
    r = ctl.capture(f"kdump_pre {pre}\nkdump_post {post}\n", synth.path, "--target-root", root, "--hooks-dir", hooks)
    assert r.returncode == 0, r.stderr
    # post.d first, then kdump_post, both after the vmcore was renamed, both with status 0
    assert order.read_text().splitlines() == ["pre", "10-hook 0 1", "post 0 1"]
    assert "10-failing exited with 1 status" in r.stderr
    check_vmcore(one_dump_dir(root / "var/crash") / "vmcore", synth, direct)


def test_failure_action_shell_then_final_action(ctl, synth, tmp_path):
    root = tmp_path / "root"
    emergency = script(tmp_path / "emergency", f"echo ran > {tmp_path}/emergency-ran\n")
    conf = f"core_collector /bin/false\nfailure_action shell\nfinal_action halt\nkdump_emergency {emergency}\n"
    r = ctl.capture(conf, synth.path, "--target-root", root)
    assert r.returncode == 1
    assert (tmp_path / "emergency-ran").exists()
    assert ctl.actions == ["shell", "halt"]


@pytest.mark.parametrize("collector", ["cp", "cat", "dd bs=1M"])
def test_copying_collectors(ctl, synth, tmp_path, collector):
    root = tmp_path / "root"
    r = ctl.capture(f"core_collector {collector}\n", synth.path, "--target-root", root)
    assert r.returncode == 0, r.stderr
    d = one_dump_dir(root / "var/crash")
    assert (d / "vmcore").read_bytes() == Path(synth.path).read_bytes()
    if collector == "cp":
        assert "cp --sparse=always" in r.stderr


def fake_mount(ctl: Ctl, rc: int) -> Path:
    log = ctl.tmp / "mount.log"
    script(ctl.fakebin / "mount", f'echo "mount $*" >> {log}\nexit {rc}\n')
    script(ctl.fakebin / "umount", f'echo "umount $*" >> {log}\nexit 0\n')
    return log


@pytest.mark.parametrize("directive,spec", [
    ("nfs", "server.example:/export"),
    ("nfs4", "server.example:/export"),
    ("ext4", "UUID=0123abcd-0000-4000-8000-000000000000"),
    ("xfs", "LABEL=crash"),
])
def test_mounted_targets(ctl, synth, direct, directive, spec):
    """The mount command (a fake `mount` records it and mounts nothing, so the dump lands in the mount point)."""
    log = fake_mount(ctl, 0)
    r = ctl.capture(f"{directive} {spec}\npath /dumps\n", synth.path)
    assert r.returncode == 0, r.stderr
    lines = log.read_text().splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"mount -t {directive} {spec} "), lines
    mnt = Path(lines[0].split()[-1])
    assert mnt.parent == ctl.tmp / "tmp" and mnt.name.startswith("pykdumpctl-mnt-")
    assert lines[1] == f"umount {mnt}"
    check_vmcore(one_dump_dir(mnt / "dumps") / "vmcore", synth, direct)


def test_dump_to_rootfs_after_mount_failure(ctl, synth, direct, tmp_path):
    log = fake_mount(ctl, 32)
    rootfs = tmp_path / "rootfs"
    conf = "ext4 /dev/pykdumpctl-no-such-disk\npath /crash\nfailure_action dump_to_rootfs\nfinal_action poweroff\n"
    r = ctl.capture(conf, synth.path, env={cap.ROOTFS_ENV: str(rootfs)})
    assert r.returncode == 0, r.stderr  # a vmcore was saved, on the root fs
    assert log.read_text().startswith("mount -t ext4 /dev/pykdumpctl-no-such-disk ")
    log_order(r.stderr, "failed, exitcode:32", "Executing failure action dump_to_rootfs", "dump_to_rootfs",
              "saving vmcore complete", "Executing final action poweroff")
    check_vmcore(one_dump_dir(rootfs / "crash") / "vmcore", synth, direct)
    assert ctl.actions == ["poweroff"]


def test_bad_config_runs_default_failure_action(ctl, synth):
    r = ctl.capture("no_such_directive 1\n", synth.path)
    assert r.returncode == 1
    assert "unknown directive" in r.stderr
    assert ctl.actions == ["reboot"]


def test_real_actions_refused_outside_kdump_kernel(ctl, synth, tmp_path):
    """Without an action command, reboot only runs in a kdump kernel (vmcore is /proc/vmcore). Fake
    reboot/halt/poweroff on PATH record a call, should the guard ever fail."""
    called = tmp_path / "real-action-called"
    for name in ("reboot", "halt", "poweroff"):
        script(ctl.fakebin / name, f'echo "{name} $*" >> {called}\n')
    env = {k: v for k, v in ctl.env.items() if k != cap.ACTION_ENV}
    r = subprocess.run(CTL + ["capture", "--config", str(ctl.conf("core_collector /bin/false\n")), "--vmcore",
                              synth.path, "--target-root", str(tmp_path / "root")],
                       capture_output=True, text=True, timeout=TIMEOUT, env=env, stdin=subprocess.DEVNULL)
    assert r.returncode == 1
    assert "not in a kdump kernel" in r.stderr and "not running 'reboot -f'" in r.stderr
    assert not called.exists()


# --- raw target and save-raw ----------------------------------------------------------------------------


def test_raw_target_then_save_raw(ctl, synth, direct, tmp_path):
    raw = tmp_path / "raw.img"
    size = 32 << 20
    raw.write_bytes(bytes(range(256)) * (size // 256))  # old data after the stream must not matter
    r = ctl.capture(f"raw {raw}\npath /ignored\n", synth.path)
    assert r.returncode == 0, r.stderr
    assert "vmcore-dmesg" not in r.stderr  # no dmesg for raw targets
    assert "pydumpfile -F -l -d 31" in r.stderr
    assert raw.stat().st_size == size and raw.read_bytes()[:12] == b"makedumpfile"
    assert ctl.actions == ["reboot"]

    saved = tmp_path / "saved"
    r = ctl.run("save-raw", raw, "--path", saved)
    assert r.returncode == 0, r.stderr
    d = one_dump_dir(saved)
    assert sorted(p.name for p in d.iterdir()) == ["vmcore"]
    check_vmcore(d / "vmcore", synth, direct)
    assert raw.read_bytes()[:512] == bytes(512)  # header wiped: saved once
    r = ctl.run("save-raw", raw, "--path", saved)
    assert r.returncode == 0 and "no dump found" in r.stderr
    assert len(dump_dirs(saved)) == 1


def test_raw_target_collector_failure(ctl, synth, tmp_path):
    raw = tmp_path / "raw.img"
    raw.write_bytes(bytes(1 << 20))
    r = ctl.capture(f"raw {raw}\ncore_collector /bin/false\nfailure_action halt\n", synth.path)
    assert r.returncode == 1 and "collector 1" in r.stderr
    assert ctl.actions == ["halt"]
    r = ctl.run("save-raw", raw, "--path", tmp_path / "saved")
    assert r.returncode == 0 and "no dump found" in r.stderr


def test_save_raw_path_from_config(ctl, synth, tmp_path):
    raw = tmp_path / "raw.img"
    raw.write_bytes(b"")
    assert ctl.capture(f"raw {raw}\n", synth.path).returncode == 0
    saved = tmp_path / "from-conf"
    conf = tmp_path / "other.conf"
    conf.write_text(f"raw {raw}\npath {saved}\n")
    r = ctl.run("save-raw", raw, "--config", conf, "--keep")
    assert r.returncode == 0, r.stderr
    assert (one_dump_dir(saved) / "vmcore").exists()
    assert raw.read_bytes()[:12] == b"makedumpfile"  # --keep


# --- unit pieces ----------------------------------------------------------------------------------------


def test_collector_commands():
    V, D = "/proc/vmcore", "/d/vmcore-incomplete"
    assert cap.file_command(["pydumpfile", "-F", "-l", "-d", "31"], V, D, nproc=4) == (
        ["pydumpfile", "-l", "-d", "31", "--num-threads=4", V, D], None)
    assert cap.file_command(["makedumpfile", "-lF", "-d", "31"], V, D, nproc=1) == (
        ["makedumpfile", "-l", "-d", "31", V, D], None)
    assert cap.file_command(["pydumpfile", "-E", "-d", "31"], V, D, nproc=8)[0] == ["pydumpfile", "-E", "-d", "31", V, D]
    assert cap.file_command(["pydumpfile", "-d", "31", "--num-threads", "2"], V, D, nproc=8)[0][-4:-2] == ["--num-threads", "2"]
    assert cap.file_command(["cp"], V, D) == (["cp", "--sparse=always", V, D], None)
    assert cap.file_command(["cp", "--sparse=auto"], V, D) == (["cp", "--sparse=auto", V, D], None)
    assert cap.file_command(["cat"], V, D) == (["cat", V], D)
    assert cap.file_command(["dd", "bs=1M"], V, D) == (["dd", "bs=1M", f"if={V}", f"of={D}"], None)
    assert cap.file_command(["scp"], V, D) == (["cp", "--sparse=always", V, D], None)
    assert cap.stream_command(["pydumpfile", "-F", "-l", "-d", "31"], V) == ["pydumpfile", "-F", "-l", "-d", "31", V]
    assert cap.stream_command(["makedumpfile", "-l"], V) == ["makedumpfile", "-F", "-l", V]
    assert cap.stream_command(["dd"], V) == ["dd", f"if={V}"]
    assert cap.stream_command(["cp", "--sparse=always"], V) == ["cp", V, "/dev/stdout"]


def test_host_ip_from_routes(tmp_path, monkeypatch):
    root = tmp_path / "sysroot"
    (root / "proc/net").mkdir(parents=True)
    monkeypatch.setenv("DUMPFILTER_SYSROOT", str(root))
    assert cap.host_ip() == "127.0.0.1"  # no routes at all
    (root / "proc/net/route").write_text(
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
        "lo\t00000000\t0100007F\t0003\t0\t0\t0\t00000000\t0\t0\t0\n")
    assert cap.host_ip() == "127.0.0.1"  # lo's own address, through SIOCGIFADDR
    (root / "proc/cmdline").write_text("ro kdumpnic=pykdumpctl-no-such-nic\n")
    assert cap.host_ip() == "127.0.0.1"  # kdumpnic wins; it has no address: the fallback
    assert re.match(r"^127\.0\.0\.1-\d{4}-\d\d-\d\d-\d\d:\d\d:\d\d$", cap.dump_dir_name())
    assert cap.dump_dir_name("10.0.0.1", 0).startswith("10.0.0.1-19")


# --- ssh to a real sshd on loopback ---------------------------------------------------------------------


def test_ssh_remote_rearranges_with_pydumpfile(ctl, sshd, synth, direct, tmp_path):
    sshd.remote_pydumpfile(True)
    remote = tmp_path / "remote"
    r = ssh_capture(ctl, sshd, synth.path, remote)
    assert r.returncode == 0, r.stderr
    d = one_dump_dir(remote)
    assert sorted(p.name for p in d.iterdir()) == ["kexec-dmesg.log", "vmcore"]
    assert (d / "vmcore").stat().st_mode & 0o077 == 0  # umask 0077 on the remote side
    check_vmcore(d / "vmcore", synth, direct)
    log_order(r.stderr, "kdump: saving to root@127.0.0.1:", "saving vmcore-dmesg.txt failed",
              "has pydumpfile: the stream is rearranged there", "pydumpfile -R", "saving vmcore complete",
              "Executing final action reboot")
    assert ctl.actions == ["reboot"]


def test_ssh_stores_flat_without_remote_pydumpfile(ctl, sshd, synth, direct, tmp_path):
    sshd.remote_pydumpfile(False)
    remote = tmp_path / "remote"
    r = ssh_capture(ctl, sshd, synth.path, remote)
    assert r.returncode == 0, r.stderr
    d = one_dump_dir(remote)
    assert sorted(p.name for p in d.iterdir()) == ["kexec-dmesg.log", "vmcore.flat"]
    assert "storing the flattened stream as vmcore.flat" in r.stderr
    out = tmp_path / "rearranged"
    with open(d / "vmcore.flat", "rb") as f:
        rr = subprocess.run(PYDUMPFILE + ["-R", str(out)], stdin=f, capture_output=True, timeout=TIMEOUT)
    assert rr.returncode == 0, rr.stderr
    check_vmcore(out, synth, direct)


def test_ssh_receiver_forced_flat(ctl, sshd, synth, tmp_path):
    sshd.remote_pydumpfile(True)
    remote = tmp_path / "remote"
    r = ssh_capture(ctl, sshd, synth.path, remote, "", "--ssh-receiver", "flat")
    assert r.returncode == 0, r.stderr
    assert (one_dump_dir(remote) / "vmcore.flat").exists()


@pytest.mark.parametrize("receiver", [True, False])
def test_ssh_collector_dies_mid_stream(ctl, sshd, synth, tmp_path, receiver):
    """Both ends of the pipe are checked: a truncated stream is never renamed to vmcore/vmcore.flat."""
    sshd.remote_pydumpfile(receiver)
    # a flattening collector (its name is pydumpfile) that stops after 1 MiB and fails
    broken = script(tmp_path / "broken" / "pydumpfile",
                    f'{sys.executable} -m dumpfilter "$@" | head -c 1048576\nexit 1\n')
    remote = tmp_path / "remote"
    post = script(tmp_path / "post", f'echo "$1" > {tmp_path}/post-status\n')
    r = ssh_capture(ctl, sshd, synth.path, remote, f"core_collector {broken} -F -l -d 31\nkdump_post {post}\n"
                    "failure_action poweroff\n")
    assert r.returncode == 1
    d = one_dump_dir(remote)
    names = {p.name for p in d.iterdir()}
    assert not names & {"vmcore", "vmcore.flat"}, names
    if not receiver:
        assert "vmcore-incomplete.flat" in names
    assert "saving vmcore failed" in r.stderr and "(collector 1," in r.stderr
    assert (tmp_path / "post-status").read_text().strip() == "1"
    assert ctl.actions == ["poweroff"]


def test_ssh_scp_collector(ctl, sshd, synth, tmp_path):
    remote = tmp_path / "remote"
    r = ssh_capture(ctl, sshd, synth.path, remote, "core_collector scp\n")
    assert r.returncode == 0, r.stderr
    assert (one_dump_dir(remote) / "vmcore").read_bytes() == Path(synth.path).read_bytes()


def test_ssh_unknown_host_key_is_refused(ctl, sshd, synth, tmp_path):
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    remote = tmp_path / "remote"
    r = ssh_capture(ctl, sshd, synth.path, remote, known_hosts=empty)
    assert r.returncode == 1
    assert "mkdir -p" in r.stderr and "failed, exitcode:255" in r.stderr
    assert not remote.exists()
    assert ctl.actions == ["reboot"]
