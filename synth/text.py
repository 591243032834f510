"""Control characters in text: which ones input readers refuse, and how text is shown on a terminal.

Text from users' files becomes prompts and records; text from records is printed by the command
line. Neither may carry control characters: in a prompt a NUL, an escape sequence or a stray
carriage return silently changes what the model is shown, and on a terminal an escape sequence
(ANSI CSI/OSC) in a record would recolour, retitle or rewrite the screen. So readers refuse them
(`control_problem`), and everything that prints record text shows them escaped (`printable`).

Tab and line feed are text; a carriage return is text only as part of a CRLF line ending. A leading
byte-order mark (`BOM`) is an encoding artefact, not text: readers drop it.

This module imports nothing heavy: the error path of the command line uses it.
"""

from __future__ import annotations

import re

BOM = "\ufeff"

# C0 controls but tab and line feed, DEL, and the C1 controls (U+0080-U+009F: U+009B is a CSI
# on terminals that take 8-bit controls).
_SHOWN_ESCAPED = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# What input may not hold: the same, but a carriage return right before a line feed (CRLF).
_REFUSED = re.compile("\r(?!\n)|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def strip_bom(text: str) -> str:
    """`text` without a leading byte-order mark."""
    return text.removeprefix(BOM)


def first_control(text: str) -> int | None:
    """The index of the first character of `text` that input may not hold (see the module's
    docstring), or None."""
    found = _REFUSED.search(text)
    return None if found is None else found.start()


def control_problem(text: str) -> str | None:
    """Why `text` cannot be input, naming the first control character and its column (from 1), or
    None when it holds none."""
    at = first_control(text)
    if at is None:
        return None
    return f"control character U+{ord(text[at]):04X} at column {at + 1}"


def value_control_problem(value: object) -> str | None:
    """What the first string of a parsed JSON value (keys included) holds that input may not, as
    "control character U+NNNN (escaped as \\uNNNN)", or None."""
    if isinstance(value, str):
        at = first_control(value)
        return None if at is None else f"control character U+{ord(value[at]):04X} (escaped as \\u{ord(value[at]):04x})"
    if isinstance(value, dict):
        for key, item in value.items():
            if problem := value_control_problem(key) or value_control_problem(item):
                return problem
    elif isinstance(value, list):
        for item in value:
            if problem := value_control_problem(item):
                return problem
    return None


def printable(text: object) -> str:
    """`text` (anything, as `str`) safe to print on a terminal: every control character but tab and
    line feed is shown as a `\\xNN` escape, so an escape sequence is read, never obeyed."""
    return _SHOWN_ESCAPED.sub(lambda m: f"\\x{ord(m.group(0)):02x}", str(text))
