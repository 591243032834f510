"""Reading Self-Instruct's model replies: numbered task lists, yes/no verdicts, instances, and the
reference code's rules for which instances of a task to keep.

Everything here is a pure function of the reply's text; what cannot be read comes back empty or
None, and the generator turns that into a reject with the raw reply.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

TASK_LINE = re.compile(r"^\s*[*#>\-\s]*(?:task\s*)?(\d{1,3})\s*[:.)：）、]\s*(.*)$", re.IGNORECASE)
_EXAMPLE_HEAD = re.compile(r"^\s*[*#\s]*example\s*\d*\s*[:.：]?\s*[*]*\s*$", re.IGNORECASE | re.MULTILINE)
_FIELD = re.compile(
    r"^\s*[*\s]*(input|output|class label|label)\s*[*]*\s*[:：]\s*[*]*\s*", re.IGNORECASE | re.MULTILINE
)
_NO_INPUT = {"", "none", "n/a", "na", "(none)", "<noinput>", "no input", "(empty)", "empty", "-"}
_NEW_TASK = re.compile(r"^\s*task\s*\d*\s*[:：]", re.IGNORECASE | re.MULTILINE)
_YES_NO = re.compile(r"^\W*(?:(yes|no)\b|(是|否))", re.IGNORECASE)
_LABEL_SPLIT = re.compile(r"^\s*[*\s]*class label\s*[*]*\s*[:：]", re.IGNORECASE | re.MULTILINE)
_INPUT_MARK = re.compile(r"^\s*[*\s]*input\s*[*]*\s*[:：]\s*[*]*", re.IGNORECASE)


def _clean(text: str) -> str:
    return text.strip().strip("*").strip().strip('"').strip()


def parse_task_list(text: str) -> list[str]:
    """New tasks from a reply that continues a numbered list ("Task 9: ...", "9. ...").

    Lines that are not numbered continue the current task until a blank line; text before the
    first numbered line (a preamble) is ignored.
    """
    tasks: list[list[str]] = []
    open_item = False
    for line in text.splitlines():
        if m := TASK_LINE.match(line):
            tasks.append([m.group(2)])
            open_item = True
        elif not line.strip():
            open_item = False
        elif open_item:
            tasks[-1].append(line.strip())
    return [t for t in (_clean(" ".join(parts)) for parts in tasks) if t]


_CLASSIFICATION_YES = frozenset({"Yes", "yes", "YES", "是"})


def parse_is_classification(text: str, question: str = "classification") -> bool:
    """The verdict after "Is it classification?" or, with `question="open-ended"`, after
    "Open-ended:".

    As in the reference code, only an exact answer counts, after stripping whitespace: "Yes" (or
    "yes", "YES"; "是" in Chinese) makes a classification task, and anything else ("No", "Yes.",
    an empty or garbled reply) a generation task, which still gets instances. Asked the inverted
    way, only an exact "no" (or "否") makes a classification task.
    """
    answer = text.strip()
    if question == "classification":
        return answer in _CLASSIFICATION_YES
    return answer in {"No", "no", "NO", "否"}


def _fields(chunk: str) -> dict[str, str]:
    """The `Input:` / `Output:` / `Class label:` fields of one example."""
    found: dict[str, str] = {}
    marks = list(_FIELD.finditer(chunk))
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(chunk)
        key = "label" if m.group(1).lower() in ("class label", "label") else m.group(1).lower()
        found.setdefault(key, chunk[m.end() : end].strip())
    return found


def _examples(text: str) -> list[str]:
    parts = [p for p in _EXAMPLE_HEAD.split(text) if p.strip()]
    return parts or [text]


def _input(value: str) -> str:
    return "" if value.strip().lower() in _NO_INPUT else value.strip()


def _label_instances(text: str) -> list[tuple[str, str]]:
    """Output-first instances, read as the reference code reads them: the text after each
    "Class label:" holds the label on its first line and the input on the lines after it (a
    leading "Input:" marker dropped); a label with nothing after it is an instance with an empty
    input (a task that needs none)."""
    text = _EXAMPLE_HEAD.sub("", text)
    marks = list(_LABEL_SPLIT.finditer(text))
    pairs = []
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        label, _, rest = text[m.end() : end].strip().partition("\n")
        pairs.append((_input(_INPUT_MARK.sub("", rest.strip(), count=1)), _clean(label)))
    return pairs


def parse_instances(text: str, classification: bool) -> list[tuple[str, str]]:
    """(input, output) pairs from an instance-generation reply.

    Input-first replies hold `Input:` then `Output:` per example; a reply without any field markers
    is taken as the output of a task that needs no input. Output-first replies hold
    `Class label:` then the input; the label is the output.
    """
    if m := _NEW_TASK.search(text):
        text = text[: m.start()]
    if classification:
        return _label_instances(text)
    pairs = []
    for chunk in _examples(text):
        f = _fields(chunk)
        if "output" in f:
            pairs.append((_input(f.get("input", "")), f["output"].strip()))
        elif not f and chunk.strip() and len(_examples(text)) == 1:
            pairs.append(("", chunk.strip()))
    return pairs


def instance_reasons(pairs: Sequence[tuple[str, str]], limit: int) -> list[str | None]:
    """Why each (input, output) instance of one task is dropped, or None to keep it.

    The reference code's rules, in its order and comparing texts exactly (after stripping
    whitespace): first each instance on its own (an empty output; an output equal to the input; an
    input or output ending with a colon, an unfinished generation), then, among the instances
    still valid, a non-empty input given different outputs drops every instance of the task (a
    task without input may have several outputs), and an exact repeat of an earlier instance goes.
    At most `limit` instances (the first ones) are kept per task.
    """
    reasons: list[str | None] = []
    for inp, outp in pairs:
        inp, outp = inp.strip(), outp.strip()
        if inp == outp:
            reasons.append("empty output" if not outp else "output equals input")
        elif not outp:
            reasons.append("empty output")
        elif inp.endswith(":") or outp.endswith(":"):
            reasons.append("ends with a colon (unfinished)")
        else:
            reasons.append(None)
    outputs_by_input: dict[str, set[str]] = {}
    for (inp, outp), reason in zip(pairs, reasons, strict=True):
        if reason is None:
            outputs_by_input.setdefault(inp.strip(), set()).add(outp.strip())
    conflict = any(inp and len(outs) > 1 for inp, outs in outputs_by_input.items())
    seen: set[tuple[str, str]] = set()
    kept = 0
    for i, (inp, outp) in enumerate(pairs):
        if reasons[i] is not None:
            continue
        key = (inp.strip(), outp.strip())
        if conflict:
            reasons[i] = "conflicting outputs for one input"
        elif key in seen:
            reasons[i] = "duplicate instance"
        elif kept >= limit:
            reasons[i] = "over the per-task instance limit"
        else:
            kept += 1
        seen.add(key)
    return reasons
