"""share-safe: scrub what an administrator would not hand to a vendor, keep what a kernel engineer needs.

    pydumpfile -l -d 31 --extension share_safe VMCORE DUMPFILE

What it erases ('X' in the written pages, listed in the dump's eraseinfo):

- the kernel command line: ``saved_command_line`` (the string it points to) and ``boot_command_line``
  (up to its NUL) — they may carry root= devices, IP addresses, passwords of initrd scripts;
- the host and domain name: ``init_uts_ns.name.nodename`` and ``.domainname``;
- key payloads and descriptions of the kernel keyrings: every key of ``key_serial_tree`` whose type is
  ``user`` or ``logon`` has its payload bytes (``user_key_payload.data``, ``datalen`` bytes) and its
  description erased; for keys of other types (keyrings, asymmetric, encrypted, trusted, ...) the
  description only;
- every task's command line and environment: they live in user pages (``mm->arg_start..env_end``),
  so the plugin refuses to run unless the dump level drops user pages (bit 8, as -d 31 does).

What it can NOT scrub (say so to whoever receives the dump):

- secrets in slab memory it does not know: dm-crypt/fscrypt master keys in crypto contexts, TLS
  session keys (kTLS), socket buffers (network payloads), pipe and tty buffers, kernel-side copies of
  user data in flight (e.g. write() buffers being copied), BPF maps;
- file contents in the page cache when the dump level keeps cache pages (use -d with bits 2 and 4);
- anonymous user memory when the dump level keeps user pages (use -d with bit 8: -d 31 drops it);
- names: task ``comm``, file names in dentries, mount sources and network addresses in sockets stay.
"""
API_VERSION = 1
NAME = "share_safe"
SYMBOLS = ["init_uts_ns"]
TYPES = ["struct uts_namespace", "struct new_utsname"]


def _erase_string(ctx, va, label, limit=4096):
    if va:
        n = len(ctx.read_string(va, limit))
        if n:
            ctx.erase(va, n, label)


def _rb_walk(ctx, root):
    """Nodes of an rb tree (in order), iteratively; rb_node is {parent_color, right, left}."""
    stack, node, seen = [], ctx.read_ptr(root), 0
    while (stack or node) and seen < 1 << 20:
        while node:
            stack.append(node)
            node = ctx.read_ptr(node + 16)  # rb_left
        node = stack.pop()
        yield node
        seen += 1
        node = ctx.read_ptr(node + 8)  # rb_right


def _keys(ctx):
    if not ctx.has_symbol("key_serial_tree") or not ctx.has_member("struct key", "serial_node"):
        return 0
    off_node = ctx.offsetof("struct key", "serial_node")
    off_type = ctx.offsetof("struct key", "type")
    off_desc = ctx.offsetof("struct key", "description")
    off_payload = ctx.offsetof("struct key", "payload")
    off_kt_name = ctx.offsetof("struct key_type", "name")
    off_len = ctx.offsetof("struct user_key_payload", "datalen")
    off_data = ctx.offsetof("struct user_key_payload", "data")
    n = 0
    for node in _rb_walk(ctx, ctx.symbol("key_serial_tree")):
        key = node - off_node
        ktype = ctx.read_ptr(key + off_type)
        tname = ctx.read_string(ctx.read_ptr(ktype + off_kt_name), 64) if ktype else b""
        _erase_string(ctx, ctx.read_ptr(key + off_desc), "key.description")
        if tname in (b"user", b"logon"):
            upayload = ctx.read_ptr(key + off_payload)
            if upayload:
                ctx.erase(upayload + off_data, ctx.read_u16(upayload + off_len), "key.payload")
        n += 1
    return n


def _check_user_pages(ctx):
    """argv and the environment live in user pages: only a dump level that drops them is share-safe."""
    if not ctx.dump_level & 8:
        raise RuntimeError("share_safe needs dump level bit 8 (user pages excluded, e.g. -d 31): task command "
                           "lines and environments live in user pages")


def run(ctx):
    _check_user_pages(ctx)
    if ctx.has_symbol("saved_command_line"):
        _erase_string(ctx, ctx.read_ptr(ctx.symbol("saved_command_line")), "saved_command_line")
    if ctx.has_symbol("boot_command_line"):
        _erase_string(ctx, ctx.symbol("boot_command_line"), "boot_command_line")
    uts = ctx.symbol("init_uts_ns") + ctx.offsetof("struct uts_namespace", "name")
    for field in ("nodename", "domainname"):
        va = uts + ctx.offsetof("struct new_utsname", field)
        n = len(ctx.read_string(va, 65))
        if n:
            ctx.erase(va, n, f"init_uts_ns.name.{field}")
    keys = _keys(ctx)
    ctx.log(f"kernel command line, host name and {keys} keys scrubbed")
