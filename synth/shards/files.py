"""Reading user-supplied text files with errors that name the file and line."""

from __future__ import annotations

from pathlib import Path


def read_utf8(path: Path, error: type[ValueError]) -> str:
    """The file's text; a missing file, a directory or non-UTF-8 bytes raise `error` naming it."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except IsADirectoryError:
        raise error(f"{path}: is a directory, expected a file") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise error(f"{path}:{line}: not UTF-8 text (byte {e.start})") from None
