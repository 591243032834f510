"""Reading user-supplied text files with errors that name the file and line.

Every line reader here drops a leading byte-order mark and refuses control characters
(`synth.text`): a NUL or an escape sequence in an input would reach a prompt unseen.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from synth.text import BOM, control_problem, value_control_problem

# json.loads turns a valid escaped pair into one character, so a surrogate left in a string is an
# unpaired one ("\ud800"): Python accepts it, but it is not Unicode text and cannot be written.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _open_error(path: Path, error: type[ValueError], e: OSError) -> ValueError:
    if isinstance(e, FileNotFoundError):
        return error(f"{path}: no such file")
    if isinstance(e, IsADirectoryError):
        return error(f"{path}: is a directory, expected a file")
    return error(f"{path}: cannot read: {e.strerror or e}")


def read_utf8(path: Path, error: type[ValueError]) -> str:
    """The file's text; a missing file, a directory or non-UTF-8 bytes raise `error` naming it
    (and the line of the first bad byte). The text is decoded as it is read, without a second
    copy of the file's bytes."""
    try:
        with open(path, encoding="utf-8", errors="strict", newline="") as f:
            return f.read()
    except UnicodeDecodeError:
        pass
    except OSError as e:
        raise _open_error(path, error, e) from None
    # Find the first bad line again, streaming, to name it.
    for _number, _line in utf8_lines(path, error):
        pass
    raise error(f"{path}: not UTF-8 text")  # pragma: no cover - utf8_lines has raised


def utf8_lines(path: Path, error: type[ValueError]) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line of a UTF-8 file, streamed one line at a time.

    Lines end at "\\n" only (a JSON string may hold U+2028 and the like), the line ending is
    removed, and bytes that are not UTF-8 raise `error` as "file:LINE: not UTF-8 text (byte N)".
    A byte-order mark that opens the file is dropped; any other control character but tab (and
    the CR of a CRLF ending) raises `error` as "file:LINE: control character U+NNNN at column N".
    """
    for number, _, line in utf8_lines_from(path, error):
        yield number, line


def utf8_lines_from(
    path: Path, error: type[ValueError], offset: int = 0, first: int = 1
) -> Iterator[tuple[int, int, str]]:
    """(line number, byte offset, text) of each line as `utf8_lines` reads it, starting at byte
    `offset`, which is the start of line `first` (an offset this reader gave)."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below; a generator holds it across yields
    except OSError as e:
        raise _open_error(path, error, e) from None
    with f:
        f.seek(offset)
        for number, raw in enumerate(f, start=first):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise error(f"{path}:{number}: not UTF-8 text (byte {offset + e.start})") from None
            start, offset = offset, offset + len(raw)
            if number == 1:
                text = text.removeprefix(BOM)
            line = text.removesuffix("\n").removesuffix("\r")
            if problem := control_problem(line):
                raise error(f"{path}:{number}: {problem}; only text, tabs and line breaks are read")
            yield number, start, line


def checked_text(path: Path, error: type[ValueError]) -> str:
    """The whole file as `utf8_lines` reads it, its lines joined by "\\n": a leading byte-order
    mark dropped, bad bytes and control characters raising `error` with the file and line."""
    return "\n".join(line for _, line in utf8_lines(path, error))


def lone_surrogate(value: object) -> bool:
    """Whether a parsed JSON value holds a string (or key) with an unpaired surrogate."""
    if isinstance(value, str):
        return _SURROGATE.search(value) is not None
    if isinstance(value, dict):
        return any(lone_surrogate(k) or lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(lone_surrogate(v) for v in value)
    return False


def json_line(path: Path, number: int, line: str, error: type[ValueError]) -> object:
    """One JSONL line parsed; invalid JSON, unpaired surrogate escapes and escaped control
    characters ("\\u001b") raise `error` as "file:LINE: ..."."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError as e:
        raise error(f"{path}:{number}: invalid JSON: {e.msg} (column {e.colno})") from None
    if lone_surrogate(data):
        raise error(f"{path}:{number}: a JSON string holds an unpaired surrogate escape (such as \\ud800), not text")
    if problem := value_control_problem(data):
        raise error(f"{path}:{number}: a JSON string holds a {problem}; only text, tabs and line breaks are read")
    return data


def json_objects(
    path: Path, error: type[ValueError], expected: str = "a JSON object"
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) of each non-blank line of a JSONL file, parsed as `json_line` parses
    it; a line that holds anything but a JSON object raises `error` as "file:LINE: expected {expected}"."""
    for number, line in utf8_lines(path, error):
        if not line.strip():
            continue
        data = json_line(path, number, line, error)
        if not isinstance(data, dict):
            raise error(f"{path}:{number}: expected {expected}")
        yield number, data
