"""Cutting documents into segments for backtranslation: cleaning, segmenting and the corpus stream.

A segment is a candidate output: the text under one heading (Markdown or HTML), or a window of
paragraphs for plain text, within character bounds, cleaned of navigation and boilerplate lines.
Documents are read by `synth.generators.documents`; offsets are character positions in the
document's text (for HTML, in its extracted text).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator

from synth.generators.documents import Block, Segment, Skipped, read_documents
from synth.schemas import BacktranslationConfig

# -- cleaning and segmenting -----------------------------------------------------------------------

_BOILERPLATE = re.compile(
    r"^(home|menu|search|skip to (main )?content|log ?in|sign ?(in|up)|subscribe( now)?|share( this)?|"
    r"cookies?( policy| settings)?|privacy policy|terms( of (use|service))?|all rights reserved.*|"
    r"(copyright|©).*|back to top|next|previous|read more|click here.*|advertisement|follow us.*)$",
    re.IGNORECASE,
)
_NAV_LINE = re.compile(r"^\s*(\S+( \S+){0,3}\s*[|•·»>]\s*){2,}\S+( \S+){0,3}\s*$")
_MD_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_URL = re.compile(r"https?://\S+")


def clean_lines(text: str) -> str:
    """The text without navigation and boilerplate lines."""
    kept = [ln for ln in text.splitlines() if not (_BOILERPLATE.match(ln.strip()) or _NAV_LINE.match(ln))]
    return "\n".join(kept).strip()


def segment_problem(text: str, config: BacktranslationConfig) -> str | None:
    """Why a cleaned segment is not a usable output, or None."""
    if len(text) < config.min_chars:
        return f"shorter than {config.min_chars} characters"
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if len(lines) >= 4 and sum(len(ln.split()) < 4 for ln in lines) / len(lines) > config.max_short_line_share:
        return "too many short lines"
    letters = [c for c in text if c.isalpha()]
    if letters and sum(c.isupper() for c in letters) / len(letters) > config.max_upper_share:
        return "mostly capitals"
    symbols = sum(not (c.isalnum() or c.isspace()) for c in text)
    if symbols / len(text) > config.max_symbol_share:
        return "mostly symbols"
    link_chars = sum(len(m.group(0)) for m in _MD_LINK.finditer(text)) + sum(
        len(m.group(0)) for m in _URL.finditer(text)
    )
    if link_chars / len(text) > config.max_link_share:
        return "mostly links"
    return None


def _windows(blocks: list[Block], max_chars: int) -> Iterator[list[Block]]:
    """Consecutive blocks grouped up to `max_chars` (a single longer block stands alone)."""
    group: list[Block] = []
    size = 0
    for block in blocks:
        if group and size + len(block.text) + 2 > max_chars:
            yield group
            group, size = [], 0
        group.append(block)
        size += len(block.text) + 2
    if group:
        yield group


def segment(
    doc: str, blocks: Iterable[Block], config: BacktranslationConfig
) -> Iterator[Segment | tuple[Segment, str]]:
    """Segments of one document; a dropped one comes as (segment, reason)."""
    heading = ""
    section: list[Block] = []

    def emit(parts: list[Block], title: str) -> Iterator[Segment | tuple[Segment, str]]:
        for group in _windows(parts, config.max_chars):
            text = clean_lines("\n\n".join(b.text for b in group))
            last = group[-1]
            seg = Segment(doc, group[0].start, last.start + len(last.text), title, text)
            if len(text) > config.max_chars:
                yield seg, f"longer than {config.max_chars} characters"
            elif problem := segment_problem(text, config):
                yield seg, problem
            else:
                yield seg

    for block in blocks:
        if block.heading:
            yield from emit(section, heading)
            section, heading = [], block.text
        else:
            section.append(block)
    yield from emit(section, heading)


def corpus_segments(config: BacktranslationConfig) -> Iterator[str | Skipped | tuple[Segment, str] | Segment]:
    """The corpus of `config.docs`, streamed in order: each document's name as it is opened, a
    `Skipped` document (unreadable, binary, not UTF-8 part way through), a dropped segment as
    (segment, reason) (the cleaning rules, or an exact repeat of an earlier segment: case and
    whitespace folded), and the usable segments, at most `config.max_segments` of them."""
    seen: set[bytes] = set()  # 16-byte digests: memory grows with the corpus's distinct segments only
    taken = 0
    limit = config.max_segments
    for item in read_documents(config.docs, config.text_field):
        if limit is not None and taken >= limit:
            return
        if isinstance(item, Skipped):
            yield item
            continue
        name, _, blocks = item
        yield name
        try:
            for seg in segment(name, blocks, config):
                if isinstance(seg, tuple):
                    yield seg
                    continue
                digest = hashlib.blake2b(" ".join(seg.text.split()).lower().encode(), digest_size=16).digest()
                if digest in seen:
                    yield seg, "exact duplicate"
                    continue
                seen.add(digest)
                if limit is not None and taken >= limit:
                    break
                taken += 1
                yield seg
        except UnicodeDecodeError:
            yield Skipped(name, "not UTF-8 text")
