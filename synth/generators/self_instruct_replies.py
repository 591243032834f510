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


def parse_is_classification(text: str, question: str = "classification") -> bool | None:
    """The verdict after "Is it classification?" ("yes": a classification task) or, with
    `question="open-ended"`, after "Open-ended:" ("no": a classification task).

    Only a reply whose first word is exactly yes or no (or 是 / 否) counts ("not sure", "nope" do not); anything
    else is None (unparseable), never a guess.
    """
    if m := _YES_NO.match(text):
        yes = m.group(1).lower() == "yes" if m.group(1) else m.group(2) == "是"
        return yes == (question == "classification")
    return None


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


def _label_blocks(chunk: str) -> list[str]:
    """An output-first example holding several "Class label:" blocks without "Example N" heads
    (as the paper's own prompts write them) split into one block per label."""
    starts = [m.start() for m in _LABEL_SPLIT.finditer(chunk)]
    if len(starts) < 2:
        return [chunk]
    return [chunk[a:b] for a, b in zip(starts, [*starts[1:], len(chunk)], strict=True)]


def _input(value: str) -> str:
    return "" if value.strip().lower() in _NO_INPUT else value.strip()


def parse_instances(text: str, classification: bool) -> list[tuple[str, str]]:
    """(input, output) pairs from an instance-generation reply.

    Input-first replies hold `Input:` then `Output:` per example; a reply without any field markers
    is taken as the output of a task that needs no input. Output-first replies hold
    `Class label:` then `Input:`; the label is the output.
    """
    if m := _NEW_TASK.search(text):
        text = text[: m.start()]
    pairs = []
    chunks = _examples(text)
    if classification:
        chunks = [block for chunk in chunks for block in _label_blocks(chunk)]
    for chunk in chunks:
        f = _fields(chunk)
        if classification:
            if "label" in f and "input" in f:
                pairs.append((_input(f["input"]), _clean(f["label"])))
        elif "output" in f:
            pairs.append((_input(f.get("input", "")), f["output"].strip()))
        elif not f and chunk.strip() and len(_examples(text)) == 1:
            pairs.append(("", chunk.strip()))
    return pairs


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def instance_reasons(pairs: Sequence[tuple[str, str]], limit: int) -> list[str | None]:
    """Why each (input, output) instance of one task is dropped, or None to keep it.

    The reference code's rules: an empty output; an output equal to the input; an input or output
    ending with a colon (an unfinished generation); when one non-empty input is given different
    outputs, every instance of the task goes (a task without input may have several outputs); an
    exact repeat of an earlier instance; and at most `limit` instances (the first ones) per task.
    """
    outputs_by_input: dict[str, set[str]] = {}
    for inp, outp in pairs:
        outputs_by_input.setdefault(_norm(inp), set()).add(_norm(outp))
    conflict = any(inp and len(outs) > 1 for inp, outs in outputs_by_input.items())
    reasons: list[str | None] = []
    seen: set[tuple[str, str]] = set()
    kept = 0
    for inp, outp in pairs:
        key = (_norm(inp), _norm(outp))
        if not outp.strip():
            reasons.append("empty output")
        elif key[0] and key[0] == key[1]:
            reasons.append("output equals input")
        elif inp.strip().endswith(":") or outp.strip().endswith(":"):
            reasons.append("ends with a colon (unfinished)")
        elif conflict:
            reasons.append("conflicting outputs for one input")
        elif key in seen:
            reasons.append("duplicate instance")
        elif kept >= limit:
            reasons.append("over the per-task instance limit")
        else:
            kept += 1
            reasons.append(None)
        seen.add(key)
    return reasons
