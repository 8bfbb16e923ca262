"""pykdumpctl debian enable|disable|status and the makedumpfile wrapper, run by a kdump-config-like
pipeline on a synthetic vmcore. dpkg-divert and the distribution's makedumpfile are shell stand-ins that
record what they were asked; the wrapper is the one `enable` writes, with this interpreter."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import dumpfilter
from dumpfilter.kexec import debian
from dumpfilter.kexec.pykdumpctl import main

#: kdump-config savecore in miniature (kdump-tools 1:1.8.1 as the issue measured it): dmesg first (a
#: failure only warns), then the -F stream through cat, judged by cat's status, renamed dump.STAMP
SAVECORE = """#!/bin/sh
PATH={bindir}:$PATH
VMCORE=$1; DIR=$2; STAMP=202612012359
mkdir -p $DIR
makedumpfile --dump-dmesg $VMCORE $DIR/dmesg.$STAMP || echo "savecore: warning: dmesg failed"
makedumpfile -c -d 31 -F $VMCORE | cat > $DIR/dump-incomplete
ERROR=$?
if [ $ERROR -ne 0 ]; then
    echo "savecore: failed to save vmcore in $DIR"
    exit 1
fi
mv $DIR/dump-incomplete $DIR/dump.$STAMP
echo "savecore: saved vmcore in $DIR"
"""

DPKG_DIVERT = """#!/bin/sh
# dpkg-divert stand-in: --root R, --local --rename --divert D --add|--remove F, --list F
log={log}; db={db}; root=/; action=; divert=
echo "dpkg-divert $*" >> $log
while [ $# -gt 0 ]; do
    case $1 in
        --root) root=$2; shift;;
        --divert) divert=$2; shift;;
        --add|--remove|--list) action=$1; file=$2; shift;;
    esac
    shift
done
case $action in
    --add) mv "$root$file" "$root$divert" && echo "local diversion of $file to $divert" > $db;;
    --remove) rm -f $db; mv "$root$divert" "$root$file";;
    --list) [ -f $db ] && cat $db;;
esac
exit 0
"""


def script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


class Debian:
    def __init__(self, tmp: Path) -> None:
        self.root = tmp / "root"
        self.bindir = self.root / "usr/bin"
        self.real_log = tmp / "real.log"
        self.divert_log = tmp / "divert.log"
        # the distribution's makedumpfile: records its arguments, writes a recognisable output
        script(self.bindir / "makedumpfile", f"""#!/bin/sh
echo "REAL $*" >> {self.real_log}
for last; do :; done
case " $* " in
    *" -F "*) printf REALSTREAM;;
    *) echo REAL > "$last";;
esac
""")
        tools = tmp / "tools"
        script(tools / "dpkg-divert", DPKG_DIVERT.format(log=self.divert_log, db=tmp / "divert.db"))
        self.savecore = script(tmp / "savecore", SAVECORE.format(bindir=self.bindir))
        self.path = f"{tools}{os.pathsep}{os.environ['PATH']}"

    def ctl(self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *argv: str
            ) -> tuple[int, str]:
        monkeypatch.setenv("PATH", self.path)
        rc = main(["debian", *argv, "--root", str(self.root)])
        return rc, capsys.readouterr().out

    def run_savecore(self, vmcore: Path, out: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.savecore), str(vmcore), str(out)], capture_output=True, text=True,
                              timeout=300)

    def real_calls(self) -> list[str]:
        return self.real_log.read_text().splitlines() if self.real_log.exists() else []


@pytest.fixture
def deb(tmp_path: Path) -> Debian:
    return Debian(tmp_path)


def test_translate() -> None:
    assert debian.translate(["-c", "-d", "31", "--non-cyclic", "-F", "/proc/vmcore"]) == [
        "-c", "-d", "31", "-F", "/proc/vmcore"]
    assert debian.translate(["--eppic", "x.c", "-d", "31", "v", "o"]) is None
    assert debian.translate(["--exclude-xen-dom", "v", "o"]) is None


def test_enable_status_disable(deb: Debian, capsys: pytest.CaptureFixture[str],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    rc, out = deb.ctl(capsys, monkeypatch, "status")
    assert rc == 3 and "kdump-tools uses makedumpfile" in out
    rc, out = deb.ctl(capsys, monkeypatch, "enable")
    assert rc == 0 and "wrote the wrapper" in out
    wrapper = (deb.bindir / "makedumpfile").read_text()
    assert debian.MARKER in wrapper and sys.executable in wrapper
    assert (deb.bindir / "makedumpfile.distrib").read_text().startswith("#!/bin/sh\necho \"REAL")
    assert f"--root {deb.root} --local --rename --divert /usr/bin/makedumpfile.distrib --add /usr/bin/makedumpfile" \
        in deb.divert_log.read_text()
    rc, out = deb.ctl(capsys, monkeypatch, "status")
    assert rc == 0 and "kdump-tools uses pydumpfile" in out
    rc, out = deb.ctl(capsys, monkeypatch, "enable")
    assert rc == 0 and "already enabled" in out
    rc, out = deb.ctl(capsys, monkeypatch, "disable")
    assert rc == 0 and "removed the wrapper" in out
    assert (deb.bindir / "makedumpfile").read_text().startswith("#!/bin/sh\necho \"REAL")
    assert not (deb.bindir / "makedumpfile.distrib").exists()
    rc, _ = deb.ctl(capsys, monkeypatch, "status")
    assert rc == 3
    # a wrapper without its diversion is not diverted over
    (deb.bindir / "makedumpfile").write_text(debian.wrapper_text())
    rc = main(["debian", "enable", "--root", str(deb.root)])
    assert rc == 1 and "there is no diversion" in capsys.readouterr().err


def test_savecore_saves_a_dump_our_reader_opens(deb: Debian, synth, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    assert deb.ctl(capsys, monkeypatch, "enable")[0] == 0
    out = tmp_path / "crash"
    r = deb.run_savecore(synth.path, out)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "savecore: saved vmcore" in r.stdout
    # the synthetic core has no printk ring: pydumpfile --dump-dmesg fails, the real makedumpfile is asked
    assert deb.real_calls() == [f"REAL --dump-dmesg {synth.path} {out}/dmesg.202612012359"]
    assert "pydumpfile failed (exit 1); running" in r.stderr
    dump = out / "dump.202612012359"
    rearranged = tmp_path / "dump"
    with open(dump, "rb") as f:
        subprocess.run([sys.executable, "-m", "dumpfilter", "-R", str(rearranged)], stdin=f, check=True,
                       capture_output=True)
    with dumpfilter.open(str(rearranged)) as src:
        for pfn in synth.nonzero_pfns[::997][:10]:
            assert src.read_page(int(pfn)) == synth.page(int(pfn))
    assert not (out / debian.FAILED_NAME).exists()


def test_foreign_option_and_no_python_fall_back(deb: Debian, synth, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    assert deb.ctl(capsys, monkeypatch, "enable")[0] == 0
    wrapper = deb.bindir / "makedumpfile"
    r = subprocess.run([str(wrapper), "--eppic", "x.c", "-d", "31", str(synth.path), str(tmp_path / "o")],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "an option only makedumpfile has; running" in r.stderr
    assert deb.real_calls()[-1] == f"REAL --eppic x.c -d 31 {synth.path} {tmp_path / 'o'}"
    wrapper.write_text(wrapper.read_text().replace(f"PY={sys.executable}", "PY=/nonexistent/python3"))
    r = subprocess.run([str(wrapper), "-c", "-d", "31", "-F", str(synth.path)], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout == "REALSTREAM" and "pydumpfile cannot start" in r.stderr


def test_failure_after_writing_fails_the_pipe(tmp_path: Path) -> None:
    """A collector that dies mid-stream: a marker next to the output, and cat stopped so the pipe fails."""
    bad = script(tmp_path / "bad-collector", "#!/bin/sh\nhead -c 300000 /dev/zero\nsleep 1\nexit 1\n")
    real = script(tmp_path / "real", f"#!/bin/sh\necho called > {tmp_path / 'real.called'}\n")
    out = tmp_path / "crash"
    out.mkdir()
    code = ("import sys\nfrom dumpfilter.kexec.debian import wrap\n"
            f"raise SystemExit(wrap(sys.argv[1:], real={str(real)!r}, collector=[{str(bad)!r}]))")
    (tmp_path / "wrap.py").write_text(code)
    # as kdump-config: the reader is a shell function (a subshell) running cat
    pipeline = (f"compress() {{ cat; }}; {sys.executable} {tmp_path / 'wrap.py'} -c -d 31 -F /proc/vmcore "
                f"| compress > {out}/dump-incomplete; echo status=$?")
    r = subprocess.run(["sh", "-c", pipeline], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, PYTHONPATH=str(Path(dumpfilter.__file__).parents[1])))
    assert "status=0" not in r.stdout, r.stdout + r.stderr  # the reader was stopped: kdump-config sees a failure
    assert "failed (exit 1) after writing 300000 bytes" in r.stderr
    marker = (out / debian.FAILED_NAME).read_text()
    assert "exit 1 after 300000 bytes" in marker and "dump-incomplete" in marker
    assert not (tmp_path / "real.called").exists()  # too late to fall back: the stream was started


def test_failure_before_writing_falls_back(tmp_path: Path) -> None:
    bad = script(tmp_path / "bad-collector", "#!/bin/sh\necho 'cannot open /proc/vmcore' >&2\nexit 1\n")
    real = script(tmp_path / "real", "#!/bin/sh\nprintf REALSTREAM\n")
    code = ("import sys\nfrom dumpfilter.kexec.debian import wrap\n"
            f"raise SystemExit(wrap(sys.argv[1:], real={str(real)!r}, collector=[{str(bad)!r}]))")
    r = subprocess.run([sys.executable, "-c", code, "-c", "-d", "31", "-F", "/proc/vmcore"], capture_output=True,
                       text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(Path(dumpfilter.__file__).parents[1])))
    assert r.returncode == 0 and r.stdout == "REALSTREAM"
    assert "failed before writing (exit 1); running" in r.stderr
