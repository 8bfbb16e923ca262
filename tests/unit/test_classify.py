"""Page classification (dump levels 2/4/8/16) on synthetic 6.1 and 6.12 vmcores with real struct pages.

Three independent references for the 2nd bitmap:

* an oracle written here from filtering.md §5 (decision chain §5.4, predicates §5.5, order rule §5.3
  including ``pfn & 511 == 511``, quirks Q1, Q3, Q5, Q6) that reads the struct page bytes the generator
  wrote (``SynthInfo.struct_pages``) and the VMCOREINFO text -- it does not import dumpfilter;
* the generator's ground truth (``SynthInfo.kinds``): what each pfn *is*, turned into "must be
  excluded / must be kept" per level without looking at the chain (checks the oracle itself);
* Debian's makedumpfile 1.7.2 for the 6.1 era only (1.7.2 predates the 6.10/6.12 page-type fixes,
  so it is no reference for 6.12; filtering.md §0.1).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time

import numpy as np
import pytest

from fixtures import synthetic as S
from tests.helpers import REPORT_LINES as COUNT_LINES
from tests.helpers import KdumpFile, error_lines, run

LEVELS = [2, 4, 8, 16, 31, 6, 24]
ERAS = ["kernel61", "kernel612"]
MAKEDUMPFILE = shutil.which("makedumpfile") or (
    "/usr/bin/makedumpfile" if os.path.exists("/usr/bin/makedumpfile") else None
)
U32 = 0xFFFFFFFF
U64 = (1 << 64) - 1
HUGETLB_MARK = U64
COUNTERS = ("free", "cache", "cache_private", "user", "hwpoison", "offline")
REPORT_LINES = {**COUNT_LINES, "hwpoison": "Hwpoison pages", "offline": "Offline pages"}


# ---------------------------------------------------------------------------
# the oracle (filtering.md §5), independent of dumpfilter
# ---------------------------------------------------------------------------


def _vmcoreinfo(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, val = line.partition("=")
        if not sep or not key.startswith(("NUMBER(", "OFFSET(", "SIZE(", "LENGTH(")):
            continue
        out.setdefault(key, int(val, 0) if val.lower().startswith(("0x", "-0x")) else int(val))
    return out


class Params:
    """The keys §5 uses, with makedumpfile's fallbacks for absent ones (§2.6)."""

    def __init__(self, text: str) -> None:
        v = _vmcoreinfo(text)
        self.v = v
        n = lambda k: v.get(f"NUMBER({k})")  # noqa: E731
        o = lambda k: v.get(f"OFFSET({k})")  # noqa: E731
        self.sp = v["SIZE(page)"]
        self.off_flags, self.off_mapping = o("page.flags"), o("page.mapping")
        self.off_mapcount, self.off_private = o("page._mapcount"), o("page.private")
        self.off_ch = o("page.compound_head") if o("page.compound_head") is not None else o("page.compound_info")
        if o("folio._folio_order") is not None:
            self.off_order, self.off_dtor = o("folio._folio_order") - self.sp, o("folio._folio_dtor") - self.sp
        else:
            self.off_order, self.off_dtor = o("page.compound_order"), o("page.compound_dtor")
        self.pg_lru = n("PG_lru") if n("PG_lru") is not None else 5
        self.pg_private = n("PG_private") if n("PG_private") is not None else 11
        self.pg_swapcache = n("PG_swapcache") if n("PG_swapcache") is not None else 15
        self.pg_swapbacked = n("PG_swapbacked")
        if self.pg_swapbacked is None and self.pg_swapcache < self.pg_private:
            self.pg_swapbacked = self.pg_private + 6
        self.pg_slab = n("PG_slab") if n("PG_slab") is not None else 7  # Q1 on 6.10+
        self.pg_hwpoison = n("PG_hwpoison")
        self.head_mask = n("PG_head_mask") if n("PG_head_mask") is not None else 1 << 14
        u = lambda k: None if n(k) is None else n(k) & U32  # noqa: E731
        self.buddy = u("PAGE_BUDDY_MAPCOUNT_VALUE")
        self.offline = u("PAGE_OFFLINE_MAPCOUNT_VALUE")
        self.hugetlb_mc = u("PAGE_HUGETLB_MAPCOUNT_VALUE")
        self.slab_mc = u("PAGE_SLAB_MAPCOUNT_VALUE")
        self.unaccepted = u("PAGE_UNACCEPTED_MAPCOUNT_VALUE")
        self.pg_hugetlb = n("PG_hugetlb")
        self.hugetlb_dtor = n("HUGETLB_PAGE_DTOR")
        self.free_area_len = v.get("LENGTH(zone.free_area)")
        self.buddy_ok = self.buddy is not None and self.off_mapcount is not None and self.off_private is not None
        self.section_pages = 1 << (n("SECTION_SIZE_BITS") - 12)


def _test_bit(nr: int, flags: int) -> bool:
    b = nr & 31
    mask = 0xFFFFFFFF80000000 if b == 31 else 1 << b
    return flags & mask != 0


def first_bitmap(info: S.SynthInfo) -> tuple[np.ndarray, np.ndarray]:
    """(1st bitmap as §4.1: floor at both ends of each PT_LOAD; paddr_to_offset() != 0 per pfn)."""
    ps, n = info.page_size, info.max_mapnr
    bm = np.zeros(n, dtype=bool)
    in_segs = np.zeros(n, dtype=bool)  # file data at the page's first byte: makedumpfile skips others
    for seg in info.loads:
        bm[seg.paddr // ps : min((seg.paddr + seg.memsz) // ps, n)] = True
        if seg.filesz:
            in_segs[-(-seg.paddr // ps) : min(-(-(seg.paddr + seg.filesz) // ps), n)] = True
    return bm, in_segs


def oracle(info: S.SynthInfo, level: int) -> tuple[np.ndarray, dict[str, int]]:
    """Expected 2nd bitmap (kdump-compressed output: zero pages stay in it) and exclusion counters."""
    P = Params(info.vmcoreinfo)
    n = info.max_mapnr
    bm, in_segs = first_bitmap(info)
    counts = dict.fromkeys(COUNTERS, 0)
    if not (level & 30 or P.pg_hwpoison is not None):
        return bm, counts
    raw = info.struct_pages
    assert raw is not None and raw.shape == (n, P.sp)

    def u64(col: int) -> list[int]:
        return raw[:, col : col + 8].copy().view("<u8")[:, 0].tolist()

    def u32(col: int) -> list[int]:
        return raw[:, col : col + 4].copy().view("<u4")[:, 0].tolist()

    flags, mapping = u64(P.off_flags), u64(P.off_mapping)
    mapcount = u32(P.off_mapcount) if P.off_mapcount is not None else [0] * n
    private = u64(P.off_private) if P.off_private is not None else [0] * n
    chead = u64(P.off_ch) if P.off_ch is not None else [0] * n
    zero = bytes(P.sp)

    def is_slab(f: int, mc: int) -> bool:
        return (P.slab_mc is not None and mc == P.slab_mc) or bool(f & (1 << P.pg_slab))

    def is_anon(m: int, f: int, mc: int) -> bool:
        return m & 1 != 0 and not is_slab(f, mc)

    def is_cache(f: int) -> bool:
        return _test_bit(P.pg_lru, f) or (
            (P.pg_swapbacked is None or _test_bit(P.pg_swapbacked, f)) and _test_bit(P.pg_swapcache, f)
        )

    def exclude(lo: int, nr: int, counter: str) -> None:
        hi = min(lo + nr, n)
        bm[lo:hi] = False
        counts[counter] += hi - lo  # Q11: bits cleared, set or not

    for sec_start in range(0, n, P.section_pages):  # every section restarts at its first pfn
        sec_end = min(sec_start + P.section_pages, n)
        pfn = sec_start
        while pfn < sec_end:
            if not in_segs[pfn]:
                pfn += 1
                continue
            f, m, mc, prv = flags[pfn], mapping[pfn], mapcount[pfn], private[pfn]
            order = dtor = 0
            if pfn % 512 != 511 and f & P.head_mask:  # §5.3
                nxt = raw[pfn + 1].tobytes() if pfn + 1 < sec_end else zero  # Q7
                f1 = int.from_bytes(nxt[P.off_flags : P.off_flags + 8], "little")
                if P.hugetlb_mc is not None:
                    order = f1 & 0xFF
                    dtor = HUGETLB_MARK if mc == P.hugetlb_mc else 0
                elif P.pg_hugetlb is not None:
                    order = f1 & 0xFF
                    dtor = HUGETLB_MARK if f1 >> P.pg_hugetlb & 1 else 0
                else:
                    order = nxt[P.off_order] if P.off_order is not None else 0
                    dtor = nxt[P.off_dtor] if P.off_dtor is not None else 0
                if order >= 64 or pfn & ((1 << order) - 1):
                    order = 0  # Q5: dtor stays
            nr, counter = 1 << order, None
            if chead[pfn] & 1:
                pass  # Q3: a tail page is never excluded on its own
            elif level & 16 and P.buddy_ok and not is_slab(f, mc) and mc == P.buddy:
                if P.free_area_len is not None and prv >= P.free_area_len:
                    pfn += 1  # Q6: skipped, not classified any further
                    continue
                nr, counter = 1 << prv, "free"
            elif level & 16 and P.unaccepted is not None and mc == P.unaccepted:
                nr, counter = 1 << (P.free_area_len - 1), "free"
            elif level & 2 and is_cache(f) and not _test_bit(P.pg_private, f) and not is_anon(m, f, mc):
                counter = "cache"
            elif level & 4 and is_cache(f) and not is_anon(m, f, mc):
                counter = "cache_private" if _test_bit(P.pg_private, f) else "cache"
            elif level & 8 and (
                is_anon(m, f, mc) or dtor == HUGETLB_MARK or (P.hugetlb_dtor is not None and dtor == P.hugetlb_dtor)
            ):
                counter = "user"
            elif P.pg_hwpoison is not None and _test_bit(P.pg_hwpoison, f):
                counter = "hwpoison"
            elif P.offline is not None and not is_slab(f, mc) and mc == P.offline:
                counter = "offline"
            if counter is None:
                pfn += 1
                continue
            exclude(pfn, nr, counter)
            pfn += nr
    return bm, counts


# ---------------------------------------------------------------------------
# ground truth: what must happen to each kind, without the chain
# ---------------------------------------------------------------------------


def expected_by_kind(info: S.SynthInfo, era: str, level: int) -> tuple[np.ndarray, np.ndarray]:
    """(must_exclude, must_keep) masks over RAM pfns from SynthInfo.kinds alone."""
    k = info.kinds
    flags = info.struct_pages[:, :8].copy().view("<u8")[:, 0]
    hwp_bit = np.uint64(1 << (23 if era == "kernel61" else 21))
    hwp = (flags & hwp_bit) != 0
    cache2, cache4, user, free = bool(level & 2), bool(level & 4), bool(level & 8), bool(level & 16)
    ex = np.zeros(len(k), dtype=bool)
    keep = np.zeros(len(k), dtype=bool)

    def rule(kind: int, excluded: bool) -> None:
        (ex if excluded else keep)[k == kind] = True

    for kind in (S.KIND_KERNEL, S.KIND_SLAB, S.KIND_SLAB_ODDMAP, S.KIND_MOVABLE, S.KIND_PGTABLE,
                 S.KIND_FS_CHECKED, S.KIND_HEAD511):
        rule(kind, False)
    rule(S.KIND_BUDDY, free)
    rule(S.KIND_BUDDY_PAGE, free)
    rule(S.KIND_SWAPCACHE, cache2 or cache4)
    rule(S.KIND_CACHE_PRIVATE, cache4)
    rule(S.KIND_ANON, user)
    rule(S.KIND_KSM, user)
    rule(S.KIND_OFFLINE, True)
    rule(S.KIND_HWPOISON, True)
    if era == "kernel61":
        rule(S.KIND_ANON_WAITERS, user)
    else:  # Q1: PG_slab absent -> bit 7 (PG_waiters) means "slab": not anon, but LRU cache
        rule(S.KIND_ANON_WAITERS, cache2 or cache4)
    # page cache: without PG_private (all KIND_CACHE pages)
    rule(S.KIND_CACHE, cache2 or cache4)
    # buddy pages with an invalid order: skipped at level 16 (Q6), else only hwpoison counts
    bad = k == S.KIND_BUDDY_BADORDER
    ex[bad & hwp & (not free)] = True
    keep[bad & ~(hwp & (not free))] = True
    # compound pages: the whole range follows the head
    for head, order, kind in info.compounds:
        rng = slice(head, head + (1 << order))
        if kind == S.KIND_THP_HEAD:
            # a hwpoisoned head takes the whole THP with it; a hwpoisoned tail alone stays (Q3)
            (ex if user or hwp[head] else keep)[rng] = True
        elif kind == S.KIND_HUGETLB_HEAD:
            (ex if user else keep)[rng] = True
        elif kind == S.KIND_FOLIO_HEAD:
            private = bool(flags[head] & np.uint64(1 << (13 if era == "kernel61" else 14)))
            (ex if (cache4 or (cache2 and not private)) else keep)[rng] = True
        elif kind == S.KIND_HUGETLB_Q5:  # order reset (misaligned), hugetlb mark kept: head alone
            (ex if user else keep)[head] = True
            keep[head + 1 : head + 4] = True
        else:  # slab, HEAD511
            keep[rng] = True
    assert not (ex & keep).any()
    return ex, keep


# ---------------------------------------------------------------------------
# fixtures and runners
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cores(tmp_path_factory):
    made: dict[str, S.SynthInfo] = {}

    def get(era: str) -> S.SynthInfo:
        if era not in made:
            made[era] = S.generate(tmp_path_factory.mktemp(era) / "vmcore", S.SynthSpec(pages=era, seed=5))
        return made[era]

    return get


@pytest.fixture(params=ERAS)
def core(request, cores):
    return request.param, cores(request.param)


_cache: dict[tuple[str, str, int], object] = {}


def _report(text: str) -> dict[str, int]:
    out = {}
    for key, label in REPORT_LINES.items():
        m = re.search(re.escape(label) + r"\s*:\s*0x([0-9a-f]+)", text)
        assert m, (label, text)
        out[key] = int(m.group(1), 16)
    return out


def ours(info: S.SynthInfo, level: int, tmp: str) -> tuple[KdumpFile, dict[str, int]]:
    key = ("ours", info.path, level)
    if key not in _cache:
        out = os.path.join(tmp, f"ours.d{level}")
        r = run(["-l", "-d", level, "--show-stats", info.path, out], timeout=60)
        assert r.returncode == 0, r.stderr.decode()
        _cache[key] = (KdumpFile.load(out), _report(r.stdout.decode()))
    return _cache[key]  # type: ignore[return-value]


def theirs(info: S.SynthInfo, level: int, tmp: str, exe: str | None = None) -> tuple[KdumpFile, dict[str, int]]:
    exe = exe or MAKEDUMPFILE
    key = (exe, info.path, level)
    if key not in _cache:
        out = os.path.join(tmp, f"mdf.d{level}")
        r = subprocess.run([exe, "-l", "-d", str(level), "--message-level", "23", info.path, out],
                           capture_output=True, text=True, timeout=60, check=False)
        log = (r.stdout + r.stderr).replace("\r", "\n")
        assert r.returncode == 0, log
        _cache[key] = (KdumpFile.load(out), _report(log))
    return _cache[key]  # type: ignore[return-value]


def _diff(a: np.ndarray, b: np.ndarray, info: S.SynthInfo) -> str:
    d = np.flatnonzero(a != b)
    return ", ".join(f"pfn {p:#x} ({S.KIND_NAMES[int(info.kinds[p])]}: {int(a[p])} vs {int(b[p])})" for p in d[:12])


# ---------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------


def test_generated_kinds(core):
    era, info = core
    present = set(np.unique(info.kinds).tolist())
    wanted = set(S.KIND_NAMES) - ({S.KIND_SLAB_ODDMAP} if era == "kernel61" else set())
    assert wanted <= present, sorted(S.KIND_NAMES[k] for k in wanted - present)
    assert set(range(11)) <= {o for _, o in info.buddies}
    v = _vmcoreinfo(info.vmcoreinfo)
    if era == "kernel61":
        assert v["NUMBER(PG_slab)"] == 9 and v["NUMBER(HUGETLB_PAGE_DTOR)"] == 2
        assert v["NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)"] == -129 and v["OFFSET(page.compound_order)"] == 17
    else:
        assert "NUMBER(PG_slab)" not in v and "OFFSET(page.compound_dtor)" not in v
        assert v["NUMBER(PAGE_SLAB_MAPCOUNT_VALUE)"] & U32 == 0xF5000000
        assert v["NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)"] == -268435456 and v["NUMBER(PG_head_mask)"] == 64
    assert v["LENGTH(zone.free_area)"] == 11


@pytest.mark.parametrize("level", LEVELS)
def test_oracle_agrees_with_ground_truth(core, level):
    era, info = core
    bm, _ = oracle(info, level)
    must_ex, must_keep = expected_by_kind(info, era, level)
    ram = info.kinds != S.KIND_NONE
    assert not (bm & must_ex).any(), _diff(bm, ~must_ex, info)
    assert (bm | ~(must_keep & ram))[ram].all(), _diff(bm, must_keep, info)
    # every RAM pfn is covered by the ground truth
    assert (must_ex | must_keep)[ram].all(), np.flatnonzero(ram & ~(must_ex | must_keep))[:10]


@pytest.mark.parametrize("level", LEVELS)
def test_bitmap_matches_oracle(core, level, tmp_path_factory):
    era, info = core
    kd, rep = ours(info, level, str(tmp_path_factory.mktemp("o")))
    bm, counts = oracle(info, level)
    assert kd.max_mapnr == info.max_mapnr
    assert np.array_equal(kd.bitmap2, bm), _diff(kd.bitmap2, bm, info)
    for c in COUNTERS:
        assert rep[c] == counts[c], (c, rep, counts)


@pytest.mark.skipif(MAKEDUMPFILE is None, reason="makedumpfile not installed")
@pytest.mark.parametrize("level", LEVELS)
def test_kernel61_matches_makedumpfile(cores, level, tmp_path_factory):
    # only 6.1: makedumpfile 1.7.2 predates the 6.10/6.12 page-type fixes (filtering.md §0.1)
    info = cores("kernel61")
    tmp = str(tmp_path_factory.mktemp("m"))
    kd, rep = ours(info, level, tmp)
    mkd, mrep = theirs(info, level, tmp)
    assert np.array_equal(kd.bitmap1, mkd.bitmap1)
    assert np.array_equal(kd.bitmap2, mkd.bitmap2), _diff(kd.bitmap2, mkd.bitmap2, info)
    assert rep == mrep


def test_two_sections(tmp_path):
    """Two 128 MiB sections: every section restarts at its own first pfn."""
    for era in ERAS:
        info = S.generate(tmp_path / era, S.SynthSpec(pages=era, seed=11, content="sparse",
                                                      ram=[(0x1000, 0x9FC00), (0x100000, 0xC000000)]))
        assert len(info.vmemmap_blocks) == 2
        os.makedirs(tmp_path / f"o{era}")
        kd, rep = ours(info, 31, str(tmp_path / f"o{era}"))
        bm, counts = oracle(info, 31)
        assert np.array_equal(kd.bitmap2, bm), _diff(kd.bitmap2, bm, info)
        assert {c: rep[c] for c in COUNTERS} == counts
        assert not kd.bitmap2[info.kinds == S.KIND_BUDDY_PAGE].any()


@pytest.mark.parametrize("level", [8, 16, 24, 31])
def test_whole_ranges_excluded(core, level, tmp_path_factory):
    era, info = core
    kd, _ = ours(info, level, str(tmp_path_factory.mktemp("o")))
    if level & 8:
        thps = [(h, o) for h, o, k in info.compounds if k in (S.KIND_THP_HEAD, S.KIND_HUGETLB_HEAD)]
        assert len(thps) >= 5
        for h, o in thps:
            assert not kd.bitmap2[h : h + (1 << o)].any(), (h, o)
    if level & 16:
        assert {o for _, o in info.buddies} >= set(range(11))
        for h, o in info.buddies:
            assert not kd.bitmap2[h : h + (1 << o)].any(), (h, o)
    # quirks visible in the result
    k = info.kinds
    head511 = np.flatnonzero(k == S.KIND_HEAD511)
    assert len(head511) == 1 and head511[0] % 512 == 511 and kd.bitmap2[head511[0]]
    assert kd.bitmap2[k == S.KIND_SLAB_ODDMAP].all()  # 6.2+ struct slab: odd mapping, not anon


def test_kernel612_q1_anon_with_waiters(core, tmp_path_factory):
    era, info = core
    aw = info.kinds == S.KIND_ANON_WAITERS
    kd8, _ = ours(info, 8, str(tmp_path_factory.mktemp("o")))
    kd2, _ = ours(info, 2, str(tmp_path_factory.mktemp("o")))
    if era == "kernel612":  # makedumpfile's PG_slab fallback: bit 7 = "slab" -> cache, not user
        assert kd8.bitmap2[aw].all() and not kd2.bitmap2[aw].any()
    else:
        assert not kd8.bitmap2[aw].any() and kd2.bitmap2[aw].all()


# ---------------------------------------------------------------------------
# bad kernel data
# ---------------------------------------------------------------------------


BAD_DATA = {  # corruption -> what the one error line must say
    "mem_section_root": r"mem_section at 0xffff888[0-9a-f]+: .*virtual address 0xffff88803ff00000 .*outside",
    "struct_pages_random": r"struct pages of pfns 0x0-0x4000 at 0xffffea0000000000 .*page\.compound_head",
    "pgd_loop": r"0xffffea0000000000: page-table loop",
    "pgd_loop_direct": r"mem_section at 0xffff888[0-9a-f]+: .*page-table loop",
}


@pytest.mark.parametrize("corrupt", list(BAD_DATA))
def test_bad_kernel_data(corrupt, tmp_path):
    needle = BAD_DATA[corrupt]
    info = S.generate(tmp_path / "vmcore", S.SynthSpec(pages="kernel61", corrupt=corrupt))
    out = tmp_path / "out"
    t = time.monotonic()
    r = run(["-l", "-d", "31", info.path, out], timeout=30)
    assert time.monotonic() - t < 10
    err = r.stderr.decode()
    assert r.returncode == 1, (r.returncode, err)
    lines = error_lines(err)
    assert len(lines) == 1 and lines[0].startswith("pydumpfile: "), lines
    assert "Traceback" not in err
    assert re.search(needle, lines[0]), lines[0]
    assert not out.exists()
