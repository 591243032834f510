"""Unlabelled documents for backtranslation: reading them safely (cutting them into segments is
`synth.generators.segments`).

Documents come from a folder (`.txt`, `.md`, `.html`), a JSONL file with a text field, or a Parquet
file with a text column, one at a time, so a corpus never has to fit in memory. Text files are read
line by line and HTML is fed to the parser in pieces, so one huge file is streamed too. Binary
files, non-UTF-8 text, text with control characters (a NUL, an escape sequence: `synth.text`) and
empty documents are skipped with a reason, never a crash; a file is checked whole before any of it
is used, and a byte-order mark that opens it is dropped. A JSONL record is named "file.jsonl:LINE",
so a line with bytes that are not UTF-8, or with a JSON string holding an unpaired surrogate escape
("\\ud800", which no writer can store), is reported by file and line. A source in which no document
is usable is an error saying what it holds (`DocumentError`), raised when it is opened: before any
model loads.

A document is read as blocks (`Block`: a paragraph or a heading), and cut into `Segment`s by
`synth.generators.segments`. Offsets are character positions in the document's text (for HTML, in
its extracted text).
"""

from __future__ import annotations

import codecs
import hashlib
import itertools
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING

from synth.shards.files import lone_surrogate
from synth.text import BOM, first_control

if TYPE_CHECKING:
    import pyarrow.parquet as pq

TEXT_SUFFIXES = {".txt": "text", ".md": "markdown", ".markdown": "markdown", ".html": "html", ".htm": "html"}
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Skipped:
    """A document (or record of a file) that was not used, and why."""

    doc: str
    reason: str


@dataclass(frozen=True)
class Block:
    """A run of text from a document: a paragraph, or a heading when `heading` is true."""

    text: str
    start: int
    heading: bool = False


@dataclass(frozen=True)
class Segment:
    doc: str
    start: int
    end: int
    heading: str
    text: str

    @property
    def key(self) -> str:
        return hashlib.sha256(f"{self.doc}\x1f{self.start}\x1f{self.end}".encode()).hexdigest()[:16]


# -- reading ---------------------------------------------------------------------------------------


def _looks_binary(head: bytes) -> bool:
    return b"\x00" in head


def _control_reason(text: str, at: int, line: int = 1) -> str:
    """The reason a document holding a control character at `at` of `text` is skipped; `line` is
    the line `text` starts on."""
    return f"control character U+{ord(text[at]):04X} at line {line + text.count(chr(10), 0, at)}"


def _file_problem(path: Path) -> str | None:
    """Why a text file is not a usable document, read whole in chunks before any of it is used (so
    no segment of a file that turns out bad reaches a prompt), or None."""
    with open(path, "rb") as f:
        head = f.read(8192)
        if _looks_binary(head):
            return "binary file"
        decoder = codecs.getincrementaldecoder("utf-8")("strict")
        raw, line, blank, carry, first = head, 1, True, "", True
        while True:
            last = not raw
            try:
                text = carry + decoder.decode(raw, final=last)
            except UnicodeDecodeError:
                return "not UTF-8 text"
            if first and text:
                text, first = text.removeprefix(BOM), False
            carry = ""
            if not last and text.endswith("\r"):  # a CRLF may be cut between two chunks
                text, carry = text[:-1], "\r"
            if (at := first_control(text)) is not None:
                return "binary file" if text[at] == "\x00" else _control_reason(text, at, line)
            line += text.count("\n")
            blank = blank and not text.strip()
            if last:
                return "empty document" if blank else None
            raw = f.read(_CHUNK)


def _file_lines(path: Path) -> Iterator[str]:
    """Lines of a UTF-8 file without its byte-order mark, streamed; raises UnicodeDecodeError on bad bytes."""
    with open(path, encoding="utf-8", errors="strict", newline="") as f:
        for number, line in enumerate(f):
            yield line.removeprefix(BOM) if number == 0 else line


def _text_blocks(lines: Iterable[str], markdown: bool) -> Iterator[Block]:
    """Paragraph blocks (and Markdown headings) from lines, with character offsets."""
    offset = 0
    para: list[str] = []
    para_start = 0
    in_fence = False
    for line in lines:
        stripped = line.strip()
        if markdown and stripped.startswith("```"):
            in_fence = not in_fence
        is_heading = markdown and not in_fence and re.match(r"^#{1,6}\s+\S", stripped) is not None
        if (not stripped and not in_fence) or is_heading:
            if para:
                yield Block("".join(para).strip(), para_start)
                para = []
            if is_heading:
                yield Block(stripped.lstrip("#").strip(), offset, heading=True)
        else:
            if not para:
                para_start = offset
            para.append(line)
        offset += len(line)
    if para:
        yield Block("".join(para).strip(), para_start)


_SKIP_TAGS = {"script", "style", "nav", "header", "footer", "aside", "form", "noscript", "svg", "button", "select"}
_BLOCK_TAGS = {
    "p",
    "div",
    "li",
    "pre",
    "blockquote",
    "td",
    "th",
    "tr",
    "section",
    "article",
    "br",
    "dd",
    "dt",
    "table",
    "ul",
    "ol",
}
_HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}


class _HTMLBlocks(HTMLParser):
    """Turns HTML into heading and paragraph blocks, dropping scripts, navigation and the like."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[Block] = []
        self._buf: list[str] = []
        self._skip = 0
        self._heading = False
        self._offset = 0  # position in the extracted text
        self._in_link = 0
        self._link_chars = 0

    def _flush(self) -> None:
        text = " ".join("".join(self._buf).split())
        link_share = self._link_chars / max(1, len(text))
        self._buf, self._link_chars = [], 0
        # A block that is mostly link text is a menu or a list of links, not prose.
        if text and (self._heading or link_share <= 0.6):
            self.blocks.append(Block(text, self._offset, heading=self._heading))
            self._offset += len(text) + 2

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self._tag(tag, 1)

    def handle_endtag(self, tag: str) -> None:
        self._tag(tag, -1)

    def _tag(self, tag: str, step: int) -> None:
        """An opening (`step` 1) or closing (-1) tag: skipped regions and links nest; a heading or
        block boundary ends the block in hand."""
        if tag in _SKIP_TAGS:
            self._skip = max(0, self._skip + step)
        elif tag in _HEADINGS:
            self._flush()
            self._heading = step > 0
        elif tag in _BLOCK_TAGS:
            self._flush()
        elif tag == "a":
            self._in_link = max(0, self._in_link + step)

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        self._buf.append(data)
        if self._in_link:
            self._link_chars += len(data.strip())

    def take(self) -> list[Block]:
        blocks, self.blocks = self.blocks, []
        return blocks


def _html_blocks(path: Path) -> Iterator[Block]:
    parser = _HTMLBlocks()
    # utf-8-sig: a byte-order mark that opens the file is not text
    with open(path, encoding="utf-8-sig", errors="strict") as f:
        while chunk := f.read(_CHUNK):
            parser.feed(chunk)
            yield from parser.take()
    parser.close()
    parser._flush()
    yield from parser.take()


def read_folder(folder: Path) -> Iterator[tuple[str, str, Iterator[Block]] | Skipped]:
    """(document name, kind, its blocks) for every usable file under `folder`, in name order."""
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = str(path.relative_to(folder))
        kind = TEXT_SUFFIXES.get(path.suffix.lower())
        if kind is None:
            yield Skipped(name, f"unsupported file type '{path.suffix or path.name}'")
            continue
        if problem := _file_problem(path):
            yield Skipped(name, problem)
        else:
            blocks = (
                _html_blocks(path) if kind == "html" else _text_blocks(_file_lines(path), markdown=kind == "markdown")
            )
            yield name, kind, blocks


def _parquet_with(path: Path, text_field: str) -> pq.ParquetFile:
    """The Parquet file at `path`, once its schema is known to hold `text_field` (else DocumentError)."""
    import pyarrow.parquet as pq

    try:
        file = pq.ParquetFile(path)
    except (OSError, ValueError) as e:
        raise DocumentError(f"{path}: not a readable Parquet file ({e})") from None
    if text_field not in file.schema_arrow.names:
        raise DocumentError(f"{path}: no '{text_field}' column (columns: {', '.join(file.schema_arrow.names)})")
    return file


def read_records(path: Path, text_field: str) -> Iterator[tuple[str, str, Iterator[Block]] | Skipped]:
    """Documents from the `text_field` of a JSONL or Parquet file, one record at a time."""
    if path.suffix == ".parquet":
        file = _parquet_with(path, text_field)
        row = 0
        for batch in file.iter_batches(columns=[text_field], batch_size=1024):
            for value in batch.column(0).to_pylist():
                row += 1
                yield _record_doc(f"{path.name}:{row}", value)
        return
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            name = f"{path.name}:{number}"
            if number == 1:
                raw = raw.removeprefix(BOM.encode())
            if not raw.strip():
                continue
            try:
                data = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                yield Skipped(name, "not UTF-8 text")
                continue
            except json.JSONDecodeError as e:
                yield Skipped(name, f"invalid JSON: {e.msg}")
                continue
            value = data.get(text_field) if isinstance(data, dict) else None
            if lone_surrogate(value):
                yield Skipped(name, "not UTF-8 text (unpaired surrogate escape)")
                continue
            yield (
                _record_doc(name, value)
                if isinstance(value, str) or value is None
                else Skipped(name, f"'{text_field}' is not text")
            )


def _record_doc(name: str, value: object) -> tuple[str, str, Iterator[Block]] | Skipped:
    if not isinstance(value, str) or not value.strip():
        return Skipped(name, "empty document")
    value = value.removeprefix(BOM)
    if "\x00" in value:
        return Skipped(name, "binary content")
    if (at := first_control(value)) is not None:
        return Skipped(name, _control_reason(value, at))
    kind = "markdown" if re.search(r"^#{1,6}\s", value, re.MULTILINE) else "text"
    return name, kind, _text_blocks(value.splitlines(keepends=True), markdown=kind == "markdown")


class DocumentError(ValueError):
    """A document source that cannot be read at all; the message names it."""


def read_documents(
    source: str | Path, text_field: str = "text"
) -> Iterator[tuple[str, str, Iterator[Block]] | Skipped]:
    """The documents of a folder, JSONL or Parquet file (see `read_folder`, `read_records`), in
    order. Opening the source reads it up to its first usable document, so a source without one
    fails here, saying what it holds ("3 files, none usable: 2 binary, 1 empty"), before any model
    loads."""
    path = Path(source)
    if path.is_dir():
        return _first_usable(path, read_folder(path), "file")
    if not path.exists():
        raise DocumentError(f"{path}: no such file or directory")
    if path.suffix == ".parquet":
        _parquet_with(path, text_field)  # the schema is checked now, before any model loads
    if path.suffix in (".jsonl", ".parquet"):
        return _first_usable(path, read_records(path, text_field), "record")
    raise DocumentError(f"{path}: expected a folder of .txt/.md/.html files, a .jsonl or a .parquet file")


_SHORT = (
    ("empty document", "empty"),
    ("binary", "binary"),
    ("not UTF-8", "not UTF-8"),
    ("control character", "with control characters"),
    ("invalid JSON", "invalid JSON"),
    ("unsupported file type ", "of type "),
)


def _kind(reason: str) -> str:
    """How a skip reason is counted in the error of a source with no usable document."""
    for start, short in _SHORT:
        if reason.startswith(start):
            return short + reason.removeprefix(start) if short == "of type " else short
    return reason


def _first_usable(
    path: Path, items: Iterator[tuple[str, str, Iterator[Block]] | Skipped], unit: str
) -> Iterator[tuple[str, str, Iterator[Block]] | Skipped]:
    """`items`, once one of them is a usable document (those read on the way come first again);
    none: DocumentError naming what was found."""
    seen: list[tuple[str, str, Iterator[Block]] | Skipped] = []
    for item in items:
        seen.append(item)
        if not isinstance(item, Skipped):
            return itertools.chain(seen, items)
    if not seen:
        raise DocumentError(f"{path}: no documents ({'an empty folder' if unit == 'file' else 'no records'})")
    kinds = Counter(_kind(i.reason) for i in seen if isinstance(i, Skipped))
    counted = ", ".join(f"{n} {kind}" for kind, n in kinds.most_common())
    raise DocumentError(f"{path}: {len(seen)} {unit}{'s' if len(seen) > 1 else ''}, none usable: {counted}")
