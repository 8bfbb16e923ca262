"""The plugin API's loader and the new command-line flags (issue 14); plugins on real kernels are in
tests/real/test_erase_real.py."""
from __future__ import annotations

import pytest

from dumpfilter.cli import parse_args
from dumpfilter.errors import UsageError
from dumpfilter.plugins import API_VERSION, PluginError, find_plugin, load_plugin


def _plugin(tmp_path, text, name="p.py"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_loads_a_plugin(tmp_path):
    p = load_plugin(_plugin(tmp_path, "API_VERSION = 1\nNAME = 'mine'\nSYMBOLS = ['x']\nTYPES = ['struct y']\n"
                                      "def run(ctx):\n    pass\n"))
    assert (p.name, p.api_version, p.symbols, p.types) == ("mine", API_VERSION, ["x"], ["struct y"])


@pytest.mark.parametrize("text, msg", [
    ("def run(ctx): pass\n", "API_VERSION None is not supported"),
    ("API_VERSION = 99\ndef run(ctx): pass\n", "API_VERSION 99 is not supported"),
    ("API_VERSION = 1\n", "defines no run"),
    ("API_VERSION = 1\ndef run(ctx) pass\n", "failed to load: SyntaxError"),
    ("raise RuntimeError('boom')\n", "failed to load: RuntimeError: boom"),
])
def test_refuses_bad_plugins(tmp_path, text, msg):
    with pytest.raises(PluginError, match=msg):
        load_plugin(_plugin(tmp_path, text))


def test_shipped_samples_are_found():
    for name in ("erase_comm", "share_safe", "share-safe"):
        p = load_plugin(name)
        assert p.api_version == 1 and find_plugin(name).endswith(".py")
    with pytest.raises(PluginError, match="no such file"):
        load_plugin("no_such_plugin")


def test_new_flags(monkeypatch):
    monkeypatch.delenv("PYDUMPFILE_KEEP_DEBUGGABLE", raising=False)
    job = parse_args(["-l", "-d", "31", "--config", "c", "--extension", "a.py", "--extension", "b.py",
                      "-x", "vml", "in", "out"])
    assert job.config == "c" and job.extensions == ["a.py", "b.py"] and job.vmlinux == "vml"
    assert not job.keep_debuggable and job.check_debuggable
    monkeypatch.setenv("PYDUMPFILE_KEEP_DEBUGGABLE", "1")  # as pykdumpctl capture runs the collector
    assert parse_args(["-d", "31", "in", "out"]).keep_debuggable
    assert not parse_args(["-d", "31", "--no-keep-debuggable", "in", "out"]).keep_debuggable
    assert parse_args(["--vtop", "0x10", "in"]).vtop == 16
    job = parse_args(["-g", "out", "-x", "vml"])
    assert job.gen_vmcoreinfo == "out" and job.vmlinux == "vml"
    assert parse_args(["-E", "--config", "c", "in", "out"]).elf  # ELF output carries an ERASEINFO note
    for bad in (["-g", "out"], ["-g", "out", "-x", "v", "in"], ["-x", "v", "-i", "vi", "in", "out"]):
        with pytest.raises(UsageError):
            parse_args(bad)
