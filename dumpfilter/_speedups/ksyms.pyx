# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Scans of the kernel's own symbol tables as read from a dump (kernel/symbols/): BTF type records and
kallsyms names. Both are one sequential pass over a few MiB that Python would take a second for."""
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t



cdef inline uint32_t _u32(const uint8_t[::1] b, Py_ssize_t p) noexcept nogil:
    return b[p] | (<uint32_t>b[p + 1] << 8) | (<uint32_t>b[p + 2] << 16) | (<uint32_t>b[p + 3] << 24)


cdef inline Py_ssize_t _extra(uint32_t kind, uint32_t vlen) noexcept nogil:
    if kind == 1 or kind == 14 or kind == 17:  # INT, VAR, DECL_TAG
        return 4
    if kind == 3:  # ARRAY
        return 12
    if kind == 4 or kind == 5 or kind == 15 or kind == 19:  # STRUCT, UNION, DATASEC, ENUM64
        return 12 * <Py_ssize_t>vlen
    if kind == 6 or kind == 13:  # ENUM, FUNC_PROTO
        return 8 * <Py_ssize_t>vlen
    return 0


def btf_scan(const uint8_t[::1] buf):
    """(offsets, name offsets, kinds) of every BTF type record in ``buf`` (the type section): two
    uint32 memoryviews and a bytearray (no numpy: the capture path never imports it). ValueError if the
    records do not tile the section or a kind is unknown."""
    cdef Py_ssize_t n = buf.shape[0], pos = 0, count = 0, i = 0
    cdef uint32_t info, kind
    with nogil:
        while pos + 12 <= n:
            info = _u32(buf, pos + 4)
            kind = (info >> 24) & 0x1F
            if kind == 0 or kind > 19:
                break
            pos += 12 + _extra(kind, info & 0xFFFF)
            count += 1
    if pos != n:
        raise ValueError(f"BTF type section does not end on a record (at byte {pos} of {n})")
    offs = memoryview(bytearray(4 * count)).cast("I")
    names = memoryview(bytearray(4 * count)).cast("I")
    kinds = bytearray(count)
    cdef uint32_t[::1] o = offs
    cdef uint32_t[::1] nm = names
    cdef uint8_t[::1] k = kinds
    pos = 0
    with nogil:
        for i in range(count):
            info = _u32(buf, pos + 4)
            kind = (info >> 24) & 0x1F
            o[i] = <uint32_t>pos
            nm[i] = _u32(buf, pos)
            k[i] = <uint8_t>kind
            pos += 12 + _extra(kind, info & 0xFFFF)
    return offs, names, kinds


cdef int _token_lengths(const uint8_t[::1] table, const uint16_t[::1] index, Py_ssize_t *tlen) except -1:
    """The length of each of the 256 kallsyms tokens (NUL-terminated in ``table``, at ``index[t]``)."""
    cdef Py_ssize_t t, j, ln, tn = table.shape[0]
    if index.shape[0] < 256:
        raise ValueError("kallsyms_token_index has fewer than 256 entries")
    for t in range(256):
        j = index[t]
        if j >= tn:
            raise ValueError("kallsyms token index beyond the token table")
        ln = 0
        while j + ln < tn and table[j + ln] != 0:
            ln += 1
        tlen[t] = ln
    return 0


cdef inline Py_ssize_t _name_len(const uint8_t[::1] names, Py_ssize_t *pos) noexcept nogil:
    """The token count of the kallsyms name at ``pos[0]`` (one byte, or two when the first has bit 7 set)
    and ``pos[0]`` moved past the length; -1 if the name does not fit in ``names``."""
    cdef Py_ssize_t p = pos[0], nn = names.shape[0], ln
    if p >= nn:
        return -1
    ln = names[p]
    p += 1
    if ln & 0x80:
        if p >= nn:
            return -1
        ln = (ln & 0x7F) | (<Py_ssize_t>names[p] << 7)
        p += 1
    if p + ln > nn:
        return -1
    pos[0] = p
    return ln


def kallsyms_expand(const uint8_t[::1] names, Py_ssize_t count, const uint8_t[::1] table,
                    const uint16_t[::1] index):
    """Expand ``count`` kallsyms names into one blob ``b"\\nTname\\nTname...\\n"`` (T is the type
    letter; a bytearray, not copied). Returns (blob, bytes of ``names`` used). ValueError if ``names`` ends early or a token
    points outside ``table``."""
    cdef Py_ssize_t tlen[256]
    cdef Py_ssize_t i, j, t, pos = 0, total = 1, ln, done = 0, tn = table.shape[0], nn = names.shape[0]
    _token_lengths(table, index, tlen)
    with nogil:
        for i in range(count):
            ln = _name_len(names, &pos)
            if ln < 0:
                pos = nn + 1
                break
            total += 1
            for j in range(pos, pos + ln):
                total += tlen[names[j]]
            pos += ln
            done += 1
    if pos > nn or done < count:
        raise ValueError("kallsyms_names ends before kallsyms_num_syms names")
    out = bytearray(total)
    cdef uint8_t[::1] ob = out
    cdef Py_ssize_t op = 0, used = pos, ln2
    pos = 0
    with nogil:
        for i in range(count):
            ln = names[pos]
            pos += 1
            if ln & 0x80:
                ln = (ln & 0x7F) | (<Py_ssize_t>names[pos] << 7)
                pos += 1
            ob[op] = 10
            op += 1
            for j in range(pos, pos + ln):
                t = names[j]
                for ln2 in range(tlen[t]):
                    ob[op] = table[index[t] + ln2]
                    op += 1
            pos += ln
        ob[op] = 10
    return out, used


def kallsyms_find(const uint8_t[::1] names, Py_ssize_t count, const uint8_t[::1] table,
                  const uint16_t[::1] index, bytes want):
    """(index, type letter) of the first of ``count`` kallsyms names that expands to ``want`` (without
    its type letter), or (-1, 0). Each name is expanded into a small buffer and compared; nothing is
    kept (the whole table expanded is megabytes, the capture kernel's memory is scarce)."""
    return kallsyms_find_many(names, count, table, index, [want])[0]


def u32_find_all(const uint32_t[::1] arr, uint32_t value):
    """Indices i with arr[i] == value."""
    cdef Py_ssize_t i, n = arr.shape[0]
    out = []
    for i in range(n):
        if arr[i] == value:
            out.append(i)
    return out


def kallsyms_next_above(const int32_t[::1] offs, int rule, uint64_t base, uint64_t offs_addr, uint64_t a):
    """The lowest kallsyms address above ``a`` (0 if none), every address computed with ``rule``
    (0: absolute per-cpu, 1: relative base, 2: place-relative; kernel/symbols/kallsyms.py)."""
    cdef Py_ssize_t i, n = offs.shape[0]
    cdef uint64_t v, best = 0
    with nogil:
        for i in range(n):
            if rule == 0:
                v = <uint64_t>offs[i] if offs[i] >= 0 else base - 1 - <uint64_t>(<int64_t>offs[i])
            elif rule == 1:
                v = base + <uint32_t>offs[i]
            else:
                v = offs_addr + 4 * <uint64_t>i + <uint64_t>(<int64_t>offs[i])
            if v > a and (best == 0 or v < best):
                best = v
    return best


def kallsyms_find_many(const uint8_t[::1] names, Py_ssize_t count, const uint8_t[::1] table,
                       const uint16_t[::1] index, list wants):
    """kallsyms_find for several names in one pass: a list of (index, type letter), (-1, 0) when absent."""
    cdef Py_ssize_t tlen[256]
    cdef Py_ssize_t i, j, t, k, q, pos = 0, ln, tn = table.shape[0], nn = names.shape[0], op, nw = len(wants)
    cdef Py_ssize_t left = nw
    cdef uint8_t buf[1024]
    cdef bint ok
    cdef bytes joined = b"".join(wants)
    cdef const uint8_t *wj = joined
    import array
    lens = array.array("q", [len(w) for w in wants])
    offs = array.array("q", [0] * nw)
    res = array.array("q", [-1] * nw)
    lets = bytearray(nw)
    cdef long long[::1] lv = lens
    cdef long long[::1] ov = offs
    cdef long long[::1] rv = res
    cdef uint8_t[::1] letv = lets
    for q in range(1, nw):
        ov[q] = ov[q - 1] + lv[q - 1]
    _token_lengths(table, index, tlen)
    with nogil:
        for i in range(count):
            if left == 0:
                break
            ln = _name_len(names, &pos)
            if ln < 0:
                break
            op = 0
            ok = True
            for j in range(pos, pos + ln):
                t = names[j]
                if op + tlen[t] > 1024:
                    ok = False
                    break
                for k in range(tlen[t]):
                    buf[op] = table[index[t] + k]
                    op += 1
            pos += ln
            if not ok or op == 0:
                continue
            for q in range(nw):
                if rv[q] >= 0 or lv[q] != op - 1:
                    continue
                ok = True
                for k in range(lv[q]):
                    if buf[k + 1] != wj[ov[q] + k]:
                        ok = False
                        break
                if ok:
                    rv[q] = i
                    letv[q] = buf[0]
                    left -= 1
    return [(rv[q], letv[q]) for q in range(nw)]
