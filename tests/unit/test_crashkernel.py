"""crashkernel= parsed as kernel/crash_reserve.c does; examples from Documentation/admin-guide/kdump/kdump.rst
and kernel-parameters.txt."""
from __future__ import annotations

import pytest

from dumpfilter.errors import DumpfilterError
from dumpfilter.kexec.crashkernel import (
    CrashkernelError,
    default_low_size,
    estimate,
    estimate_breakdown,
    format_size,
    memparse_at,
    parse_cmdline,
    parse_size,
    reservation,
)

K, M, G, T = 1 << 10, 1 << 20, 1 << 30, 1 << 40
DOC_SPEC = "512M-2G:64M,2G-:128M"  # kdump.rst's example


# --- memparse ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, value",
    [
        ("4096", 4096),
        ("64K", 64 * K),
        ("64k", 64 * K),
        ("512M", 512 * M),
        ("2G", 2 * G),
        ("1t", T),
        ("1P", 1 << 50),
        ("1E", 1 << 60),
        ("0x10M", 16 * M),  # simple_strtoull base 0: hex
        ("010", 8),  # and octal
        ("0", 0),
    ],
)
def test_memparse_suffixes_and_bases(text: str, value: int) -> None:
    assert parse_size(text) == value


def test_memparse_stops_where_the_kernel_stops() -> None:
    assert memparse_at("64M@16M", 0) == (64 * M, 3)
    assert memparse_at("0xZ", 0) == (0, 1)  # "0x" without a hex digit: octal 0, stops at 'x'
    assert memparse_at("089", 0) == (0, 1)  # 8 is not an octal digit
    assert memparse_at("abc", 0) == (0, 0)


@pytest.mark.parametrize("bad", ["", "G", "12Q", "-1G", "1G2", "16E"])
def test_parse_size_rejects(bad: str) -> None:
    with pytest.raises(CrashkernelError):
        parse_size(bad)


def test_format_size() -> None:
    assert [format_size(n) for n in (64 * M, 1536 * M, 2 * G, 4096, 1000, 0)] == ["64M", "1536M", "2G", "4K", "1000", "0"]


# --- the documented examples ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "ram, size",
    [
        (256 * M, 0),  # below 512M: nothing reserved
        (512 * M, 64 * M),  # start is inclusive
        (1 * G, 64 * M),
        (2 * G, 128 * M),  # end is exclusive
        (4 * G, 128 * M),
        (1 * T, 128 * M),  # open-ended last range
    ],
)
def test_kdump_rst_range_example(ram: int, size: int) -> None:
    assert reservation(DOC_SPEC, ram).size == size


def test_range_no_match_says_why() -> None:
    r = reservation(DOC_SPEC, 256 * M)
    assert r.size == 0 and r.total == 0
    assert any("none of the ranges" in n for n in r.notes)
    assert r.describe() == ["nothing is reserved"]


def test_ram_is_rounded_up_to_128m_before_comparing() -> None:
    # memblock size of a "2G" machine is a little under 2G; the kernel rounds it up to 128M.
    assert reservation(DOC_SPEC, 2 * G - 100 * M).size == 128 * M
    assert reservation(DOC_SPEC, 2 * G - 200 * M).size == 64 * M  # 1848M rounds to 1920M
    assert reservation(DOC_SPEC, 400 * M).size == 64 * M  # 400M rounds to 512M


def test_simple_size_at_offset() -> None:
    r = reservation("64M@16M", 4 * G)
    assert (r.size, r.offset, r.high, r.low_size) == (64 * M, 16 * M, False, 0)
    assert r.notes == ()
    assert "fixed physical address 0x1000000" in r.describe()[0]


def test_simple_size_auto_placed_gets_fallback_low_on_x86_64() -> None:
    r = reservation("256M", 8 * G)
    assert (r.size, r.offset, r.high) == (256 * M, 0, False)
    assert r.fallback_low_size == 256 * M
    assert "otherwise above 4G plus 256M below 4G" in r.describe()[0]


def test_range_syntax_with_offset() -> None:
    r = reservation(DOC_SPEC + "@16M", 1 * G)
    assert (r.size, r.offset) == (64 * M, 16 * M)


def test_ranges_after_the_match_are_not_parsed() -> None:
    assert reservation("512M-2G:64M,2G-:xyz", 1 * G).size == 64 * M
    with pytest.raises(CrashkernelError, match="memory value expected"):
        reservation("512M-2G:64M,2G-:xyz", 4 * G)


def test_high_alone_gets_the_x86_64_default_low() -> None:
    r = reservation("1G,high", 8 * G)
    assert (r.size, r.high, r.low_size) == (1 * G, True, 256 * M)
    assert r.total == 1 * G + 256 * M


def test_high_default_low_is_128m_on_arm64() -> None:
    assert reservation("1G,high", 8 * G, arch="aarch64").low_size == 128 * M


def test_high_with_explicit_low_and_zero_low() -> None:
    r = reservation("crashkernel=512M,high crashkernel=128M,low", 8 * G)
    assert (r.size, r.high, r.low_size) == (512 * M, True, 128 * M)
    r0 = reservation("crashkernel=512M,high crashkernel=0,low", 8 * G)
    assert r0.low_size == 0 and "no block below 4G" in r0.describe()[0]


def test_plain_wins_over_high_and_low() -> None:
    r = parse_cmdline("root=/dev/sda crashkernel=1G,high crashkernel=256M crashkernel=128M,low", 8 * G)
    assert (r.size, r.high, r.low_size) == (256 * M, False, 0)
    assert any("ignored" in n for n in r.notes)


def test_low_alone_reserves_nothing() -> None:
    with pytest.raises(CrashkernelError, match=",high"):
        reservation("128M,low", 8 * G)


def test_last_crashkernel_wins() -> None:
    assert parse_cmdline("crashkernel=64M quiet crashkernel=128M", 4 * G).size == 128 * M


def test_swiotlb_raises_the_x86_64_default_low() -> None:
    # 262144 slabs of 2 KiB = 512M; the default low is max(swiotlb + 8M, 256M)
    r = parse_cmdline("crashkernel=1G,high swiotlb=262144", 8 * G)
    assert r.low_size == 520 * M
    assert default_low_size("x86_64", "swiotlb=noforce") == 256 * M
    assert default_low_size("riscv64") == 128 * M
    assert default_low_size("ppc64le") == 0


def test_cma_suffix() -> None:
    r = parse_cmdline("crashkernel=256M crashkernel=1G,cma", 16 * G)
    assert (r.size, r.cma_size, r.total) == (256 * M, 1 * G, 256 * M + 1 * G)
    with pytest.raises(CrashkernelError):
        parse_cmdline("crashkernel=1G,cma", 16 * G)  # cma needs a main reservation


def test_high_low_not_supported_on_ppc64le() -> None:
    with pytest.raises(CrashkernelError, match="not supported on ppc64le"):
        reservation("1G,high", 8 * G, arch="ppc64le")
    assert reservation("1G", 8 * G, arch="ppc64le").fallback_low_size == 0


def test_unaligned_offset_is_flagged() -> None:
    r = reservation("64M@1M", 4 * G)
    assert r.offset == 1 * M
    assert any("16M-aligned" in n for n in r.notes)


def test_simple_junk_after_offset_is_noted_like_the_kernel_ignores_it() -> None:
    r = reservation("64M@16Mfoo", 4 * G)
    assert (r.size, r.offset) == (64 * M, 16 * M)
    assert any("'foo'" in n for n in r.notes)


@pytest.mark.parametrize(
    "spec, ram, match",
    [
        ("64X", 4 * G, "unrecognized character 'X'"),
        ("abc", 4 * G, "memory value expected"),
        ("512M-2G", 4 * G, "unrecognized character '-'"),  # no ':' → simple syntax
        ("2G-1G:64M", 4 * G, "not above its start"),
        ("512M-2G;64M,2G-:128M", 4 * G, "':' expected"),
        ("512M:64M", 4 * G, "'-' expected"),
        ("1G-:2G", 1 * G, "not smaller than the system RAM"),
        ("8G", 4 * G, "only 4G of RAM"),
        ("0,high", 4 * G, "reserves nothing"),
        ("1G,higher", 4 * G, "unrecognized character ','"),  # not ,high: read as a plain size
        ("1Gx,high", 4 * G, "unrecognized character 'x'"),
        ("512M-2G:64M@", 1 * G, "after '@'"),
    ],
)
def test_rejected_specs(spec: str, ram: int, match: str) -> None:
    with pytest.raises(CrashkernelError, match=match) as info:
        reservation(spec, ram)
    assert isinstance(info.value, DumpfilterError)
    assert "\n" not in str(info.value)


def test_zero_size_reserves_nothing() -> None:
    assert reservation("0", 4 * G).size == 0


def test_no_crashkernel_on_cmdline() -> None:
    with pytest.raises(CrashkernelError, match="no crashkernel="):
        parse_cmdline("root=/dev/sda quiet", 4 * G)


def test_ram_must_be_positive() -> None:
    with pytest.raises(CrashkernelError):
        reservation("64M", 0)


# --- estimate ---------------------------------------------------------------------------------------


def test_estimate_formula_with_given_sizes() -> None:
    e = estimate_breakdown(64 * G, "makedumpfile", kernel_size=60 * M, initrd_size=30 * M, modules_size=10 * M)
    working = 16 * M + 64 * G // 16384
    assert e.estimated == 60 * M + 10 * M + 3 * 30 * M + 16 * M + working
    assert e.baseline == 512 * M  # Fedora x86_64 default 64G-:512M
    assert e.recommended == 512 * M


def test_estimate_is_conservative_and_aligned() -> None:
    py = estimate(4 * G)
    mk = estimate(4 * G, "makedumpfile")
    assert py > mk >= 256 * M  # never below the distribution default
    assert py % (16 * M) == 0 and mk % (16 * M) == 0
    assert estimate(4 * T) > estimate(4 * G)  # bitmaps grow with RAM


def test_estimate_small_machine_has_no_baseline() -> None:
    e = estimate_breakdown(1 * G, "pydumpfile")
    assert e.baseline == 0 and e.recommended >= e.estimated


def test_estimate_unknown_collector() -> None:
    with pytest.raises(CrashkernelError, match="unknown collector"):
        estimate(4 * G, "gzip")
