"""``--dump-dmesg``: the kernel log out of a vmcore, in makedumpfile's text format (filtering.md §8).

Three kernel formats, chosen as makedumpfile chooses them:

* 5.10+: the lockless ring buffer (``SYMBOL(prb)``): a descriptor ring, an info array and a text
  data ring (``dump_lockless_dmesg``/``dump_record`` in makedumpfile's printk.c);
* 3.5 – 5.9: variable-length ``struct printk_log`` records in ``log_buf`` (``dump_dmesg``);
* before 3.5: a plain character ring (``log_end``), copied raw.

Each record becomes ``[%5llu.%06lu] `` (seconds.microseconds), then ``[%8s] `` with ``T<pid>`` or
``C<cpu>`` when the caller-id offset is in VMCOREINFO (makedumpfile ≥ 1.7.5; for 5.10+ kernels
always), then the text with ``\\n`` followed by an indent to the text column, non-printable bytes
as ``\\x%02x`` of the C ``char`` (sign-extended where ``char`` is signed: ``\\xffffffc3``), and a final newline.

Kernel data is never trusted: every loop is bounded by the ring sizes, and an inconsistent ring
ends in a :class:`DmesgError` (one line) instead of a hang. Where makedumpfile itself would loop
for 2^62 steps or read outside its buffers, we do the sensible thing instead (see the comments
marked "differs from makedumpfile").
"""
from __future__ import annotations

import re
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from ..errors import DumpfilterError, KernelDataError
from .vmcoreinfo import VmcoreInfo

MASK64 = (1 << 64) - 1
DESC_FLAGS_SHIFT = 62
DESC_ID_MASK = MASK64 & ~(3 << DESC_FLAGS_SHIFT)
DESC_COMMITTED, DESC_FINALIZED = 1, 2
CALLER_CPU_FLAG = 0x80000000
PID_CHARS_DEFAULT = 8
MAX_SIZE_BITS = 31  # the kernel refuses log_buf_len > 2 GiB (LOG_BUF_LEN_MAX)
MAX_STRUCT = 1 << 16  # bytes: no printk structure is near this; a larger SIZE() is corruption
# Descriptors between tail and head that hold no record (another id, not committed, no data): a real
# ring has a few (records being written, empty messages); a corrupt one may have up to 2^31, each a step
# of the walk. Past this many the ring is taken as corrupt, so the walk stays short.
MAX_SKIPPED = 1 << 16
PLAIN_CHUNK = 1 << 20  # the log is handed on in pieces of about this many bytes


Reader = Callable[[int, int], bytes]
_U64 = struct.Struct("<Q")


class DmesgError(KernelDataError):
    """The kernel log cannot be extracted: missing VMCOREINFO keys, unreadable or corrupt buffers."""


@dataclass
class Record:
    ts_nsec: int
    text: bytes
    caller_id: int | None = None


@dataclass
class DmesgResult:
    """The formatted log; ``error`` is set when the walk stopped at a corruption (the text is then
    what makedumpfile would also have left in the file: every record up to the corruption)."""

    text: bytes
    kind: str  # "lockless", "printk_log" or "plain"
    records: int = 0
    error: DmesgError | None = None


# --- formatting (dump_record / dump_log_entry) ---------------------------------------------------

_SPECIAL = re.compile(rb"[\x00-\x08\x0a\x0e-\x1f\x7f-\xff]")  # "\n" and what !isprint && !isspace


def _escapes(signed_char: bool) -> list[bytes]:
    out = []
    for b in range(256):
        v = (b - 256) & 0xFFFFFFFF if signed_char and b >= 0x80 else b
        out.append(b"\\x%02x" % v)
    return out


_ESC = {True: _escapes(True), False: _escapes(False)}


def prefix(ts_nsec: int, caller_id: int | None) -> bytes:
    ts_nsec &= MASK64
    head = b"[%5d.%06d] " % (ts_nsec // 1_000_000_000, ts_nsec % 1_000_000_000 // 1000)
    if caller_id is not None:
        caller_id &= 0xFFFFFFFF
        cid = b"%c%d" % (b"C"[0] if caller_id & CALLER_CPU_FLAG else b"T"[0], caller_id & ~CALLER_CPU_FLAG)
        head += b"[%*s] " % (PID_CHARS_DEFAULT, cid)
    return head


def format_record(rec: Record, signed_char: bool = True) -> bytes:
    """One record as makedumpfile writes it, including the final newline."""
    head = prefix(rec.ts_nsec, rec.caller_id)
    esc = _ESC[signed_char]
    nl = b"\n" + b" " * len(head)

    def sub(m: re.Match[bytes]) -> bytes:
        b = m.group()[0]
        return nl if b == 0x0A else esc[b]

    return head + _SPECIAL.sub(sub, rec.text) + b"\n"


def format_records(records: Iterable[Record], signed_char: bool = True) -> bytes:
    return b"".join(format_record(r, signed_char) for r in records)


# --- helpers ----------------------------------------------------------------------------------------


def _u(buf: bytes | _Lazy, off: int, size: int, what: str) -> int:
    if off < 0 or off + size > len(buf):
        raise DmesgError(f"{what}: offset {off} is outside the {len(buf)}-byte structure (bad VMCOREINFO?)")
    return int.from_bytes(buf[off : off + size], "little")


def _read(read: Reader, addr: int, size: int, what: str) -> bytes:
    try:
        data = read(addr & MASK64, size)
    except DumpfilterError as e:
        raise DmesgError(f"Can't read {what} ({size} bytes at {addr & MASK64:#x}): {e}") from None
    if len(data) != size:
        raise DmesgError(f"Can't read {what} ({size} bytes at {addr & MASK64:#x}): short read")
    return data


class _Lazy:
    """``size`` bytes of kernel memory at ``addr``, read on demand in blocks and sliced like bytes.

    The ring sizes come from the dump (``size_bits``, ``count_bits``, ``log_buf_len``): a corrupt or
    hostile value may claim gigabytes. Only the blocks a record touches are read, and at most
    ``KEEP`` of them are kept, so memory follows the records, not the claim."""

    BLOCK = 1 << 16
    KEEP = 16

    def __init__(self, read: Reader, addr: int, size: int, what: str) -> None:
        self.read, self.addr, self.size, self.what = read, addr, size, what
        self.blocks: dict[int, bytes] = {}

    def __len__(self) -> int:
        return self.size

    def _block(self, b: int) -> bytes:
        got = self.blocks.get(b)
        if got is None:
            start = b * self.BLOCK
            got = _read(self.read, self.addr + start, min(self.BLOCK, self.size - start), self.what)
            if len(self.blocks) >= self.KEEP:
                self.blocks.pop(next(iter(self.blocks)))
            self.blocks[b] = got
        return got

    def u64(self, off: int) -> int:
        """The little-endian 64-bit value at ``off`` (the walk's fast path: no slice object)."""
        b, o = divmod(off, self.BLOCK)
        if 0 <= off and off + 8 <= self.size and o + 8 <= self.BLOCK:
            blk = self.blocks.get(b)
            if blk is None:
                blk = self._block(b)
            return int(_U64.unpack_from(blk, o)[0])
        return int.from_bytes(self[off : off + 8], "little")

    def __getitem__(self, sl: slice) -> bytes:
        start, stop, _ = sl.indices(self.size)
        if stop <= start:
            return b""
        parts = []
        for b in range(start // self.BLOCK, (stop - 1) // self.BLOCK + 1):
            blk = self._block(b)
            lo = max(start - b * self.BLOCK, 0)
            parts.append(blk[lo : min(stop - b * self.BLOCK, len(blk))])
        return b"".join(parts)


def _need(vi: VmcoreInfo, keys: list[tuple[str, str]], what: str) -> None:
    tables = {"SYMBOL": vi.symbol, "SIZE": vi.size, "OFFSET": vi.offset, "LENGTH": vi.length, "NUMBER": vi.number}
    missing = [f"{t}({n})" for t, n in keys if n not in tables[t] or (t == "SYMBOL" and not tables[t][n])]
    if missing:
        raise DmesgError(f"VMCOREINFO lacks {', '.join(missing)}, needed for {what}")


# --- 5.10+: lockless ring buffer --------------------------------------------------------------------

LOCKLESS_KEYS = [
    ("SYMBOL", "prb"),
    ("SIZE", "printk_ringbuffer"),
    ("OFFSET", "printk_ringbuffer.desc_ring"),
    ("OFFSET", "printk_ringbuffer.text_data_ring"),
    ("OFFSET", "prb_desc_ring.count_bits"),
    ("OFFSET", "prb_desc_ring.descs"),
    ("OFFSET", "prb_desc_ring.infos"),
    ("OFFSET", "prb_desc_ring.head_id"),
    ("OFFSET", "prb_desc_ring.tail_id"),
    ("SIZE", "prb_desc"),
    ("OFFSET", "prb_desc.state_var"),
    ("OFFSET", "prb_desc.text_blk_lpos"),
    ("OFFSET", "prb_data_blk_lpos.begin"),
    ("OFFSET", "prb_data_blk_lpos.next"),
    ("SIZE", "printk_info"),
    ("OFFSET", "printk_info.ts_nsec"),
    ("OFFSET", "printk_info.text_len"),
    ("OFFSET", "prb_data_ring.size_bits"),
    ("OFFSET", "prb_data_ring.data"),
    ("OFFSET", "atomic_long_t.counter"),
]


def _bits(v: int, what: str, limit: int) -> int:
    if not 0 <= v <= limit:
        raise DmesgError(f"the printk ring buffer is corrupt: {what} = {v} (at most {limit} expected)")
    return v


def lockless_records(read: Reader, vi: VmcoreInfo, partial: bool = False) -> list[Record]:
    """The records of the 5.10+ ring, oldest first (dump_lockless_dmesg)."""
    return list(iter_lockless(read, vi, partial))


def iter_lockless(read: Reader, vi: VmcoreInfo, partial: bool = False) -> Iterator[Record]:
    """The records of the 5.10+ ring, oldest first, one at a time (so that a log as large as the
    ring, up to 2 GiB, is never held in memory whole)."""
    _need(vi, LOCKLESS_KEYS, "the lockless printk ring buffer (5.10+)")
    O, S = vi.offset, vi.size
    for key in ("printk_ringbuffer", "prb_desc", "printk_info"):
        if not 0 < S[key] <= MAX_STRUCT:
            raise DmesgError(f"SIZE({key})={S[key]} is not plausible (the VMCOREINFO is corrupt)")
    rb_addr = int.from_bytes(_read(read, vi.symbol["prb"], 8, "the prb pointer"), "little")
    rb = _read(read, rb_addr, S["printk_ringbuffer"], "prb")
    dr = O["printk_ringbuffer.desc_ring"]
    tr = O["printk_ringbuffer.text_data_ring"]
    cnt = O["atomic_long_t.counter"]
    size_bits = _bits(_u(rb, tr + O["prb_data_ring.size_bits"], 4, "prb_data_ring.size_bits"),
                      "prb_data_ring.size_bits", MAX_SIZE_BITS)
    count_bits = _bits(_u(rb, dr + O["prb_desc_ring.count_bits"], 4, "prb_desc_ring.count_bits"),
                       "prb_desc_ring.count_bits", size_bits)
    count, size = 1 << count_bits, 1 << size_bits
    sz_desc, sz_info = S["prb_desc"], S["printk_info"]
    descs = _Lazy(read, _u(rb, dr + O["prb_desc_ring.descs"], 8, "descs"), count * sz_desc, "prb.desc_ring.descs")
    infos = _Lazy(read, _u(rb, dr + O["prb_desc_ring.infos"], 8, "infos"), count * sz_info, "prb.desc_ring.infos")
    text = _Lazy(read, _u(rb, tr + O["prb_data_ring.data"], 8, "data"), size, "prb.text_data_ring")
    tail = _u(rb, dr + O["prb_desc_ring.tail_id"] + cnt, 8, "tail_id")
    head = _u(rb, dr + O["prb_desc_ring.head_id"] + cnt, 8, "head_id")
    if tail & ~DESC_ID_MASK or head & ~DESC_ID_MASK:
        raise DmesgError(f"the printk ring buffer is corrupt: head_id {head:#x} / tail_id {tail:#x} have state bits set")

    # Counting from tail to head must stay inside the ring. makedumpfile walks without a bound
    # (up to 2^62 steps on a corrupt ring); we refuse instead.
    span = (head - tail) & DESC_ID_MASK
    if span >= count:
        raise DmesgError(
            f"the printk ring buffer is corrupt: head_id {head:#x} is {span} descriptors after tail_id {tail:#x}, "
            f"but the ring holds {count}"
        )

    o_state = O["prb_desc.state_var"] + cnt
    o_begin = O["prb_desc.text_blk_lpos"] + O["prb_data_blk_lpos.begin"]
    o_next = O["prb_desc.text_blk_lpos"] + O["prb_data_blk_lpos.next"]
    o_ts, o_len = O["printk_info.ts_nsec"], O["printk_info.text_len"]
    o_cid = O.get("printk_info.caller_id")
    o_seq = O.get("printk_info.seq")
    for off, n, what in ((o_state, 8, "prb_desc.state_var"), (o_begin, 8, "blk_lpos.begin"), (o_next, 8, "blk_lpos.next")):
        _u(descs[:sz_desc], off, n, what)
    for maybe, n, what in ((o_ts, 8, "printk_info.ts_nsec"), (o_len, 2, "printk_info.text_len"),
                           (o_cid, 4, "printk_info.caller_id"), (o_seq, 8, "printk_info.seq")):
        if maybe is not None:
            _u(infos[:sz_info], maybe, n, what)

    if partial and vi.symbol.get("clear_seq"):
        clear_seq = int.from_bytes(_read(read, vi.symbol["clear_seq"], 8, "clear_seq"), "little")
        if "latched_seq" in S and "latched_seq.val" in O:  # 5.13+: two copies, the low bit selects
            addr = vi.symbol["clear_seq"] + O["latched_seq.val"] + (clear_seq & 1) * 8
            clear_seq = int.from_bytes(_read(read, addr, 8, "the latched clear_seq"), "little")
        if o_seq is not None:
            # Records with seq >= clear_seq; seq % count == id % count, so in the normal case this is
            # makedumpfile's ``head - head % count + clear_seq % count``. Differs from makedumpfile
            # when clear_seq % count > head % count (makedumpfile then starts *after* head and walks
            # 2^62 ids) and when the clear point was overwritten (we then keep the whole ring).
            i = (head % count) * sz_info
            head_seq = int.from_bytes(infos[i + o_seq : i + o_seq + 8], "little")
            delta = (head_seq - clear_seq) & MASK64
            if delta >= 1 << 63:  # clear_seq > head_seq: cleared after the last record
                return
            if delta < span:
                tail, span = (head - delta) & DESC_ID_MASK, delta
        else:
            delta = (head % count - clear_seq % count) % count
            if delta < span:
                tail, span = (head - delta) & DESC_ID_MASK, delta

    skipped = 0
    # The live records' data blocks are disjoint parts of the text ring: their bytes (with each block's
    # ID word) add up to at most its size. More means the descriptors point at the same data again and
    # again, which would make the output (and our memory) as large as they like. Twice the size leaves
    # room for a ring caught while its tail was being pushed.
    text_budget = 2 * size
    for k in range(span + 1):
        rid = (tail + k) & DESC_ID_MASK
        idx = rid % count
        d = idx * sz_desc
        sv = descs.u64(d + o_state)
        begin_lpos = next_lpos = 0
        if sv & DESC_ID_MASK == rid and (sv >> DESC_FLAGS_SHIFT) & 3 in (DESC_COMMITTED, DESC_FINALIZED):
            begin_lpos = int.from_bytes(descs[d + o_begin : d + o_begin + 8], "little")
            next_lpos = int.from_bytes(descs[d + o_next : d + o_next + 8], "little")
        begin, nxt = begin_lpos % size, next_lpos % size
        if begin == nxt:
            # desc_miss, a record not committed, or a data-less one (also FAILED_LPOS / NO_LPOS).
            # makedumpfile walks on through any number of them (up to 2^31 on a corrupt ring); we stop.
            skipped += 1
            if skipped > MAX_SKIPPED:
                raise DmesgError(
                    f"the printk ring buffer is corrupt: more than {MAX_SKIPPED} of the {span + 1} descriptors "
                    f"from tail_id {tail:#x} to head_id {head:#x} hold no record"
                )
            continue
        i = idx * sz_info
        tlen = int.from_bytes(infos[i + o_len : i + o_len + 2], "little")
        if begin > nxt:
            if nxt == 0 and (next_lpos - begin_lpos) & MASK64 == size - begin:
                # A block ending exactly at the ring's end. makedumpfile treats it as wrapped and
                # reads from the ring's start (differs from makedumpfile; the kernel does not
                # create such blocks as of 7.x, newer ones might).
                nxt = size
            else:
                begin = 0  # wrapped block: the data is at the start of the ring
        begin += 8  # the block's leading ID word
        if nxt >= begin and nxt - begin < tlen:
            tlen = nxt - begin  # truncated message
        # (when next < begin + 8 makedumpfile reads past the block; we clamp to the ring)
        text_budget -= 8 + max(0, min(tlen, size - begin))
        if text_budget < 0:
            raise DmesgError(
                f"the printk ring buffer is corrupt: its records' text adds up to more than twice the "
                f"{size}-byte text ring (descriptors point at the same data)"
            )
        body = text[begin : begin + tlen]
        ts = int.from_bytes(infos[i + o_ts : i + o_ts + 8], "little")
        cid = int.from_bytes(infos[i + o_cid : i + o_cid + 4], "little") if o_cid is not None else None
        yield Record(ts, body, cid)


# --- 3.5 – 5.9: struct printk_log in log_buf ------------------------------------------------------


def printk_log_records(read: Reader, vi: VmcoreInfo, partial: bool = False) -> tuple[list[Record], DmesgError | None]:
    """The records of a variable-length log_buf, oldest first, and the corruption that stopped the walk."""
    errors: list[DmesgError] = []
    recs = list(iter_printk_log(read, vi, partial, errors))
    return recs, errors[0] if errors else None


def iter_printk_log(read: Reader, vi: VmcoreInfo, partial: bool, errors: list[DmesgError]) -> Iterator[Record]:
    """The records of a variable-length log_buf, oldest first, one at a time; the corruption that
    stopped the walk, if any, is appended to ``errors``."""
    keys = [("SYMBOL", "log_buf"), ("SYMBOL", "log_buf_len"), ("SYMBOL", "log_first_idx"),
            ("SYMBOL", "log_next_idx"), ("SIZE", "printk_log"), ("OFFSET", "printk_log.ts_nsec"),
            ("OFFSET", "printk_log.len"), ("OFFSET", "printk_log.text_len")]
    _need(vi, keys, "the printk_log records of log_buf (3.5 - 5.9)")
    O, sym = vi.offset, vi.symbol
    first_sym = sym["clear_idx"] if partial and sym.get("clear_idx") else sym["log_first_idx"]
    first = int.from_bytes(_read(read, first_sym, 4, "log_first_idx"), "little")
    nxt_idx = int.from_bytes(_read(read, sym["log_next_idx"], 4, "log_next_idx"), "little")
    log_buf = int.from_bytes(_read(read, sym["log_buf"], 8, "log_buf"), "little")
    blen = struct.unpack("<i", _read(read, sym["log_buf_len"], 4, "log_buf_len"))[0]
    hdr = vi.size["printk_log"]
    if not 0 < blen <= 1 << MAX_SIZE_BITS or hdr <= 0 or hdr > min(blen, MAX_STRUCT):
        raise DmesgError(f"the printk log_buf is corrupt: log_buf_len = {blen}")
    for what, off, n in (("ts_nsec", O["printk_log.ts_nsec"], 8), ("len", O["printk_log.len"], 2),
                         ("text_len", O["printk_log.text_len"], 2), ("caller_id", O.get("printk_log.caller_id"), 4)):
        if off is not None and not 0 <= off <= hdr - n:
            raise DmesgError(f"OFFSET(printk_log.{what})={off} lies outside SIZE(printk_log)={hdr}")
    buf = _Lazy(read, log_buf, blen, "log_buf")
    o_ts, o_len, o_tlen = O["printk_log.ts_nsec"], O["printk_log.len"], O["printk_log.text_len"]
    o_cid = O.get("printk_log.caller_id")

    def u16(p: int) -> int:
        return int.from_bytes(buf[p : p + 2], "little")

    def corrupt(why: str, p: int) -> DmesgError:
        return DmesgError(f"the printk log_buf is most likely corrupted: {why} (log_buf = {log_buf:#x}, idx = {p:#x})")

    if first > blen - hdr:
        errors.append(corrupt("log_first_idx outside log_buf", first))
        return
    seen: set[int] = set()
    ptr = first
    while ptr != nxt_idx:
        if ptr in seen:  # makedumpfile's Brent detector: keep each record once, then fail
            errors.append(corrupt("cycle when parsing dmesg detected", ptr))
            return
        seen.add(ptr)
        length = u16(ptr + o_len)
        rec = 0 if length == 0 else ptr  # len 0: wrap marker, the record is at the start
        tlen = u16(rec + o_tlen)
        rec_len = u16(rec + o_len)
        if rec_len >= hdr:
            # log_store() makes len = SIZE(printk_log) + text_len + dict_len + padding: the text lies
            # inside the record. A larger text_len is corruption; makedumpfile prints it (up to 64 KiB
            # of whatever follows, for every record, which makes the log grow without bound); we
            # keep the text within its record.
            tlen = min(tlen, rec_len - hdr)
        ts = int.from_bytes(buf[rec + o_ts : rec + o_ts + 8], "little")
        cid = int.from_bytes(buf[rec + o_cid : rec + o_cid + 4], "little") if o_cid is not None else None
        yield Record(ts, buf[rec + hdr : rec + hdr + tlen], cid)
        step = u16(0 + o_len) if length == 0 else length
        if step < hdr:  # (makedumpfile would go on; this bounds the walk by log_buf_len / SIZE(printk_log))
            errors.append(corrupt(f"record length {step} is shorter than SIZE(printk_log)", rec))
            return
        ptr = rec + step
        if ptr > blen - hdr:
            errors.append(corrupt("index outside log_buf detected", ptr))
            return


# --- before 3.5: plain characters -----------------------------------------------------------------


def _kernel_version(vi: VmcoreInfo) -> tuple[int, int, int] | None:
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", vi.osrelease or "")
    return (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)) if m else None


def plain_log(read: Reader, vi: VmcoreInfo) -> bytes:
    return b"".join(iter_plain_log(read, vi))


def iter_plain_log(read: Reader, vi: VmcoreInfo) -> Iterator[bytes]:
    _need(vi, [("SYMBOL", "log_buf"), ("SYMBOL", "log_buf_len"), ("SYMBOL", "log_end")], "the pre-3.5 log_buf")
    sym = vi.symbol
    ver = _kernel_version(vi)
    wide = ver is not None and ver < (2, 6, 25)  # "static unsigned long log_end" before 2.6.25
    log_end = int.from_bytes(_read(read, sym["log_end"], 8 if wide else 4, "log_end"), "little")
    log_buf = int.from_bytes(_read(read, sym["log_buf"], 8, "log_buf"), "little")
    blen = struct.unpack("<i", _read(read, sym["log_buf_len"], 4, "log_buf_len"))[0]
    if not 0 < blen <= 1 << MAX_SIZE_BITS or blen & (blen - 1):
        raise DmesgError(f"the printk log_buf is corrupt: log_buf_len = {blen}")
    buf = _Lazy(read, log_buf, blen, "log_buf")  # read only as far as the dump holds it
    if log_end < blen:
        spans = [(0, log_end)]
    else:
        idx = log_end & (blen - 1)
        spans = [(idx, blen), (0, idx)]
    for a, b in spans:  # in 1 MiB pieces: log_buf_len may claim 2 GiB
        for p in range(a, b, PLAIN_CHUNK):
            yield buf[p : min(p + PLAIN_CHUNK, b)]


# --- entry point ------------------------------------------------------------------------------------


def extract(read: Reader, vi: VmcoreInfo, partial: bool = False, signed_char: bool = True,
            caller_column: bool = True, write: Callable[[bytes], object] | None = None) -> DmesgResult:
    """The log of the kernel described by ``vi``, read through ``read(vaddr, size)``.

    ``caller_column=False`` leaves out the ``[T<pid>]`` column, i.e. the output of makedumpfile
    before 1.7.5 (used to compare with older makedumpfile builds). With ``write``, the log is handed
    to it in pieces of about 1 MiB as the records are read, and the result's ``text`` is empty: the
    memory then does not grow with the log (which the ring's header may claim to be 2 GiB).
    """
    parts: list[bytes] = []
    held = 0

    def emit(chunk: bytes) -> None:
        nonlocal held
        parts.append(chunk)
        held += len(chunk)
        if write is not None and held >= PLAIN_CHUNK:
            flush()

    def flush() -> None:
        nonlocal held
        if write is not None and parts:
            write(b"".join(parts))
            parts.clear()
            held = 0

    def records(it: Iterable[Record]) -> int:
        n = 0
        for r in it:
            if not caller_column:
                r.caller_id = None
            emit(format_record(r, signed_char))
            n += 1
        return n

    if vi.symbol.get("prb"):
        n = records(iter_lockless(read, vi, partial))
        flush()
        return DmesgResult(b"".join(parts), "lockless", n)
    if not vi.symbol.get("log_buf") or not vi.symbol.get("log_buf_len"):
        raise DmesgError("VMCOREINFO lacks SYMBOL(prb) and SYMBOL(log_buf)/SYMBOL(log_buf_len); no kernel log to extract")
    if not vi.symbol.get("log_end"):
        errors: list[DmesgError] = []
        n = records(iter_printk_log(read, vi, partial, errors))
        flush()
        return DmesgResult(b"".join(parts), "printk_log", n, errors[0] if errors else None)
    for chunk in iter_plain_log(read, vi):
        emit(chunk)
    flush()
    return DmesgResult(b"".join(parts), "plain")


def dump_dmesg(src, vi: VmcoreInfo, partial: bool = False, caller_column: bool = True,  # noqa: ANN001
               write: Callable[[bytes], object] | None = None) -> DmesgResult:
    """The kernel log of an opened dump, read through its architecture's page tables (``write``: as
    for ``extract``)."""
    from .arch import UnsupportedArch, for_machine

    arch = for_machine(src.elf_machine)
    try:
        mmu = arch.mmu(src, vi)
    except UnsupportedArch as e:
        raise DmesgError(f"--dump-dmesg: {e}") from None
    # C `char` is signed on some machines: it changes the \x escapes of bytes >= 0x80
    return extract(mmu.read, vi, partial, signed_char=arch.signed_char, caller_column=caller_column, write=write)
