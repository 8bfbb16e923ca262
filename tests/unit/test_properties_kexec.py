"""Property-based tests of the text parsers of the kdump service: /etc/kdump.conf
(dumpfilter/kexec/kdumpconf.py) and ``crashkernel=`` (dumpfilter/kexec/crashkernel.py), and of
VMCOREINFO text itself. Any text gives a result or a DumpfilterError (one line), within the memory and
time bounds of tests/props.py."""
from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from dumpfilter.errors import DumpfilterError
from dumpfilter.kernel.vmcoreinfo import VmcoreInfo
from dumpfilter.kexec.crashkernel import estimate_breakdown, parse_cmdline, reservation
from dumpfilter.kexec.kdumpconf import parse_text
from tests.props import bounded, mutated_text, prop_settings
from tests.unit.test_kdumpconf import FULL

TARGETS = ["raw /dev/sdb1", "nfs host:/export", "nfs4 host:/x", "ssh root@host", "ext4 UUID=1234", "xfs /dev/vda2",
           "btrfs LABEL=x", "virtiofs tag"]
WORDS = ["path", "core_collector", "sshkey", "kdump_pre", "failure_action", "final_action", "dracut_args",
         "force_rebuild", "default", "net", "options", "#", '"', "'", "\\", "-F", "pydumpfile", "makedumpfile -F -l",
         "scp", "cp", "--mount", "\0", "\udcff", "\t", "1", "yes", "dump_to_rootfs"]


def one_line(result: object) -> None:
    if isinstance(result, DumpfilterError):
        assert "\n" not in str(result), str(result)


def exercise_conf(text: str) -> None:
    c = parse_text(text)
    c.summary()
    c.collector_argv, c.target_kind, c.target_spec  # noqa: B018


@given(text=st.one_of(mutated_text(FULL, WORDS), st.sampled_from(TARGETS).flatmap(
    lambda t: mutated_text(FULL.replace("xfs LABEL=crash", t), WORDS))))
@prop_settings(150)
def test_kdump_conf_mutated(text):
    one_line(bounded(exercise_conf, text))


@given(lines=st.lists(st.tuples(st.sampled_from(WORDS + [t.split()[0] for t in TARGETS]),
                                st.lists(st.sampled_from(WORDS + list(" \"'#=:/@\\x")), max_size=8).map("".join),
                                st.text(max_size=10)), max_size=12))
@prop_settings(150)
def test_kdump_conf_from_words(lines):
    text = "\n".join(f"{a} {b}{c}" for a, b, c in lines)
    one_line(bounded(exercise_conf, text))


NUM = st.one_of(st.sampled_from(["0", "1", "0x", "0x10", "010", "99999999999999999999999", "18446744073709551615",
                                 "18446744073709551616", "-1", ""]), st.integers(0, 1 << 70).map(str))
SUFFIX = st.sampled_from(["", "K", "M", "G", "T", "P", "E", "k", "m", "g", "X", "KB"])
SIZE = st.builds(lambda n, s: n + s, NUM, SUFFIX)


@st.composite
def crashkernel_values(draw) -> str:
    kind = draw(st.sampled_from(["simple", "ranges", "suffix", "junk"]))
    if kind == "simple":
        v = draw(SIZE) + (("@" + draw(SIZE)) if draw(st.booleans()) else "")
    elif kind == "ranges":
        parts = [f"{draw(SIZE)}-{draw(st.one_of(st.just(''), SIZE))}:{draw(SIZE)}" for _ in range(draw(st.integers(1, 4)))]
        v = ",".join(parts) + (("@" + draw(SIZE)) if draw(st.booleans()) else "")
    elif kind == "suffix":
        v = draw(SIZE) + draw(st.sampled_from([",high", ",low", ",cma", ",", ",hig"]))
    else:
        v = draw(st.text(alphabet=st.sampled_from(list("0123456789xKMGTPE,-:@ high low cma")), max_size=40))
    return v


@given(values=st.lists(crashkernel_values(), min_size=1, max_size=4),
       ram=st.one_of(st.sampled_from([1, 1 << 20, 128 << 20, 1 << 30, 64 << 30, (1 << 64) - 1, 1 << 70, 0, -1]),
                     st.integers(1, 1 << 50)),
       arch=st.sampled_from([None, "x86_64", "aarch64", "riscv64", "s390x", "ppc64le", "i686", "mips"]),
       extra=st.sampled_from(["", "quiet ", "crashkernel ", "crashkernel= ", "root=/dev/sda "]))
@prop_settings(200)
@example(values=["99999999999999999999999M"], ram=1 << 30, arch="x86_64", extra="")
def test_crashkernel(values, ram, arch, extra):
    cmdline = extra + " ".join(f"crashkernel={v}" for v in values)
    one_line(bounded(parse_cmdline, cmdline, ram, arch=arch))
    one_line(bounded(reservation, values[0], ram, arch=arch))
    one_line(bounded(estimate_breakdown, ram, arch=arch))


@given(blob=st.one_of(st.binary(max_size=600), mutated_text("OSRELEASE=6.1.0\nPAGESIZE=4096\nSYMBOL(prb)=ffffffff82a622c0\n"
                                                           "SIZE(page)=64\nOFFSET(page.flags)=0\nNUMBER(phys_base)=-1\n"
                                                           "LENGTH(mem_section)=2048\nKERNELOFFSET=1e000000\n"
                                                           "CRASHTIME=1764130000\n").map(
    lambda t: t.encode("utf-8", "surrogateescape"))))
@prop_settings(200)
@example(blob=b"SYMBOL(\x01)=10000000000000000")  # 65 bits: used to reach struct.pack("<Q")
@example(blob=b"SIZE(page)=" + b"1" * 5000)  # int() refuses more than 4300 digits
def test_vmcoreinfo_text(blob):
    def parse(raw: bytes) -> VmcoreInfo:
        vi = VmcoreInfo.parse(raw)
        vi.page_size, vi.crashtime, vi.osrelease, vi.kerneloffset  # noqa: B018
        for table in (vi.symbol, vi.size, vi.offset, vi.length, vi.number):
            for v in table.values():
                # every value a lookup hands out fits the 64-bit fields it ends up in
                assert -(1 << 63) <= v < 1 << 64, v
        return vi

    bounded(parse, blob)
