"""Man pages from the ``--help`` texts: pydumpfile.8, pykexec.8 and pykdumpctl.8.

The page is made from exactly what ``--help`` prints (argparse's ``format_help()`` for pykexec and
pykdumpctl and each pykdumpctl command, cli.USAGE for pydumpfile), read as argparse lays it out: a
``usage:`` block (SYNOPSIS), description paragraphs (DESCRIPTION), then sections such as
``options:`` whose items are a tag at a small indent and a text in a column (OPTIONS, …), then an
epilog (NOTES). Commands of a parser with subcommands get one subsection each under COMMANDS.

    python -m dumpfilter.manpage [DIR]     write the three pages into DIR (default .)

setup.py (build_support.man_pages) runs this at build time; the pages install under share/man/man8.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from . import __version__

SECTION = 8
MANUAL = "System Administration"
WIDE = 100000  # argparse wraps nothing at this width (it would break words at hyphens); roff fills
SEE_ALSO = {
    "pydumpfile": ["pykdumpctl", "pykexec", "makedumpfile", "crash"],
    "pykexec": ["pykdumpctl", "pydumpfile", "kexec"],
    "pykdumpctl": ["pykexec", "pydumpfile", "kdump.conf"],
}
_ITEM_INDENT = 8  # an item's tag starts within this many columns; deeper lines continue its text


def esc(text: str) -> str:
    """Text for a roff line: backslashes, hyphens as minus signs, no control character first."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + text if text.startswith((".", "'")) else text


@contextmanager
def _columns(n: int) -> Iterator[None]:
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(n)
    try:
        yield
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old


def help_text(parser: argparse.ArgumentParser) -> str:
    """``parser.format_help()`` without line wrapping."""
    with _columns(WIDE):
        return parser.format_help()


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse keeps no public list of its subcommands
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


# ------------------------------------------------------------------------------------------- parsing


def _blocks(text: str) -> list[list[str]]:
    """Paragraphs: runs of non-blank lines."""
    out: list[list[str]] = []
    cur: list[str] = []
    for line in text.splitlines():
        if line.strip():
            cur.append(line.rstrip())
        elif cur:
            out.append(cur)
            cur = []
    if cur:
        out.append(cur)
    return out


def _is_heading(block: list[str]) -> bool:
    first = block[0]
    return not first.startswith(" ") and first.endswith(":") and not first.startswith("usage:")


def _items(lines: list[str]) -> list[tuple[str, str]]:
    """(tag, text) of a section's items; a line indented deeper than an item's tag continues its text.
    Items without text (argparse's bare ``COMMAND``) are left out."""
    items: list[tuple[str, list[str]]] = []
    for line in lines:
        indent = len(line) - len(line.lstrip())
        if indent <= _ITEM_INDENT or not items:
            m = re.match(r"\s*(\S(?:.*?\S)?)(?:\s{2,}(\S.*))?$", line)
            assert m is not None  # a non-blank line
            items.append((m.group(1), [m.group(2)] if m.group(2) else []))
        else:
            items[-1][1].append(line.strip())
    return [(tag, " ".join(text)) for tag, text in items if text]


class Help(NamedTuple):
    usage: list[str]  # the forms of the command line, without "usage:"
    description: list[str]  # paragraphs
    sections: list[tuple[str, list[tuple[str, str]]]]  # (title, [(tag, text)])
    notes: list[str]  # paragraphs after the sections (argparse's epilog)


def parse_help(text: str) -> Help:
    blocks = _blocks(text)
    usage: list[str] = []
    if blocks and blocks[0][0].startswith("usage:"):
        for line in blocks.pop(0):
            line = line.strip()
            usage.append(line[len("usage:"):].strip() if line.startswith("usage:") else line)
    h = Help(usage, [], [], [])
    for block in blocks:
        if _is_heading(block):
            h.sections.append((block[0][:-1], _items(block[1:])))
        elif h.sections and block[0].startswith(" "):  # a section's items after a blank line
            h.sections[-1][1].extend(_items(block))
        else:
            (h.notes if h.sections else h.description).append(" ".join(line.strip() for line in block))
    return h


# ------------------------------------------------------------------------------------------- roff


def _tag(tag: str) -> str:
    """Options bold, their arguments italic: ``-d DL[,DL...]`` → ``\\fB\\-d\\fR \\fIDL[,DL...]\\fR``."""
    words = re.split(r"(\s+|,\s*)", tag)
    out = []
    for w in words:
        if not w.strip(", "):
            out.append(esc(w))
        elif w.startswith("-"):
            out.append(f"\\fB{esc(w)}\\fR")
        else:
            out.append(f"\\fI{esc(w)}\\fR")
    return "".join(out)


def _sections(h: Help, top: bool) -> list[str]:
    """Each section with its items as tagged paragraphs; a top-level section is a .SH of its own."""
    lines: list[str] = []
    for title, items in h.sections:
        if not items:
            continue
        lines += [f'.SH "{esc(title.upper())}"'] if top else [".PP", f"\\fB{esc(title)}:\\fR"]
        for tag, text in items:
            lines += [".TP", _tag(tag), esc(text)]
    return lines


def _synopsis(usage: list[str]) -> list[str]:
    out: list[str] = []
    for i, line in enumerate(usage):
        if i and line.split()[:1] == usage[0].split()[:1]:
            out.append(".br")  # each form of the command on its own line
        out.append(esc(line))
    return out


def _paragraphs(paras: list[str], first_pp: bool) -> list[str]:
    out: list[str] = []
    for i, para in enumerate(paras):
        out += ([".PP"] if i or first_pp else []) + [esc(para)]
    return out


def render(prog: str, help_: str, commands: dict[str, str] | None = None, date: str = "") -> str:
    """The roff page of PROG from its help text (and its commands' help texts)."""
    h = parse_help(help_)
    summary = h.description[0].split(". ")[0].rstrip(".") if h.description else prog
    if summary[1:2].islower():  # "Create a …" → "create a …", "VMCORE …" stays
        summary = summary[:1].lower() + summary[1:]
    out = [
        f'.TH "{prog.upper()}" "{SECTION}" "{date}" "{prog} {__version__}" "{MANUAL}"',
        ".nh",  # no hyphenation: option names stay whole
        ".ad l",  # ragged right, as --help
        ".SH NAME",
        f"{esc(prog)} \\- {esc(summary)}",
        ".SH SYNOPSIS",
        *_synopsis(h.usage),
    ]
    if h.description:
        out += [".SH DESCRIPTION", *_paragraphs(h.description, False)]
    out += _sections(h, top=True)
    if commands:
        out.append(".SH COMMANDS")
        for name, text in commands.items():
            sub = parse_help(text)
            out += [f".SS {esc(name)}", *_synopsis(sub.usage), *_paragraphs(sub.description, True),
                    *_sections(sub, top=False), *_paragraphs(sub.notes, True)]
    if h.notes:
        out += [".SH NOTES", *_paragraphs(h.notes, False)]
    see = SEE_ALSO.get(prog, [])
    if see:
        out += [".SH SEE ALSO", ",\n".join(f"\\fB{esc(name)}\\fR({5 if name == 'kdump.conf' else SECTION})"
                                           for name in see)]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------- the pages


def _pydumpfile() -> str:
    from .cli import PROG, USAGE

    return render(PROG, USAGE)


def _from_parser(make: Callable[[], argparse.ArgumentParser]) -> str:
    parser = make()
    commands = {name: help_text(sub) for name, sub in subcommands(parser).items()}
    return render(parser.prog, help_text(parser), commands or None)


def _pykexec() -> str:
    from .kexec.loader import _parser

    return _from_parser(_parser)


def _pykdumpctl() -> str:
    from .kexec.pykdumpctl import _parser

    return _from_parser(_parser)


PAGES: dict[str, Callable[[], str]] = {"pydumpfile": _pydumpfile, "pykexec": _pykexec, "pykdumpctl": _pykdumpctl}


def pages() -> dict[str, str]:
    """{file name: roff text} of every page."""
    return {f"{name}.{SECTION}": make() for name, make in PAGES.items()}


def write_pages(outdir: Path) -> list[Path]:
    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in pages().items():
        path = outdir / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    for path in write_pages(Path(args[0] if args else ".")):
        print(path)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
