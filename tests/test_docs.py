"""The README and docs/ stay true: every page is linked from the README, every relative link (and
its anchor) resolves, and every shell example marked `<!-- runnable -->` runs on a scripted engine."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MARKER = "<!-- runnable -->"

# The engine every runnable example runs on: Self-Instruct's scripted replies (tests/conftest.py),
# so a generator keeps records and the commands after it have data to work on.
ENGINE = '[engine]\nkind = "scripted"\nresponder = "tests.conftest:SelfInstructScript"\n'

_FENCE = re.compile(r"^\s*(```|~~~)")
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_CODE_SPAN = re.compile(r"`[^`]*`")


def pages() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def name(path: Path) -> str:
    return str(path.relative_to(ROOT))


def prose(path: Path) -> list[tuple[int, str]]:
    """The page's lines outside code fences, numbered from 1."""
    lines, fenced = [], False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append((number, line))
    return lines


def links(path: Path) -> list[tuple[int, str]]:
    """Every link target outside code (fences and inline spans), with its line."""
    return [(number, target) for number, line in prose(path) for target in _LINK.findall(_CODE_SPAN.sub("", line))]


def anchors(path: Path) -> set[str]:
    """The anchors GitHub gives the page's headings: lowercased, punctuation but `-` and `_`
    dropped, spaces turned to `-`; a repeated heading gets `-1`, `-2`..."""
    seen: dict[str, int] = {}
    for _, line in prose(path):
        if match := re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line):
            slug = re.sub(r"[^\w\- ]", "", match.group(1).lower()).replace(" ", "-")
            count = seen.get(slug, -1) + 1
            seen[slug] = count
            if count:
                seen[f"{slug}-{count}"] = 0
    return set(seen)


def resolve(page: Path, target: str) -> tuple[Path, str]:
    """The file a relative link names (the page itself for `#anchor`) and its anchor."""
    file, _, anchor = target.partition("#")
    return ((page.parent / file).resolve() if file else page), anchor


def is_relative(target: str) -> bool:
    return not re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", target)


def test_every_docs_page_is_linked_from_the_readme():
    linked = {resolve(README, target)[0] for _, target in links(README) if is_relative(target)}
    missing = [name(page) for page in sorted(DOCS.rglob("*.md")) if page.resolve() not in linked]
    assert not missing, f"README.md does not link {missing}"


def test_every_relative_link_points_at_a_file_and_heading_that_exist():
    broken = []
    for page in pages():
        for number, target in links(page):
            if not is_relative(target):
                continue
            file, anchor = resolve(page, target)
            if not file.exists():
                broken.append(f"{name(page)}:{number}: {target} (no such file)")
            elif anchor and file.suffix == ".md" and anchor not in anchors(file):
                broken.append(f"{name(page)}:{number}: {target} (no heading with that anchor)")
    assert not broken, "\n".join(broken)


@dataclass(frozen=True)
class Block:
    """A runnable shell example: where it starts and its commands, one per line."""

    path: Path
    line: int
    commands: tuple[str, ...]

    @property
    def where(self) -> str:
        return f"{name(self.path)}:{self.line}"


def commands(lines: list[str]) -> tuple[str, ...]:
    """One command per line; lines ending in a backslash continue on the next; comments and blank
    lines are skipped."""
    out: list[str] = []
    pending = ""
    for line in lines:
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1].strip() + " "
            continue
        out.append(pending + line.strip())
        pending = ""
    if pending:
        out.append(pending.strip())
    return tuple(out)


def runnable_blocks(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks = []
    for index, line in enumerate(lines):
        if line.strip() != MARKER:
            continue
        fence = lines[index + 1].strip() if index + 1 < len(lines) else ""
        if fence != "```bash":
            raise ValueError(f"{name(path)}:{index + 1}: {MARKER} must stand right before a ```bash fence")
        end = next((i for i in range(index + 2, len(lines)) if lines[i].strip() == "```"), None)
        if end is None:
            raise ValueError(f"{name(path)}:{index + 2}: the runnable block's fence is never closed")
        blocks.append(Block(path, index + 2, commands(lines[index + 2 : end])))
    return blocks


def all_blocks() -> list[Block]:
    return [block for page in pages() for block in runnable_blocks(page)]


def test_commands_join_continued_lines_and_skip_comments():
    text = ["# a comment", "", "printf '%s\\n' a \\", "  b \\", "  > f.txt", "synth verify out/si   # note"]
    assert commands(text) == ("printf '%s\\n' a b > f.txt", "synth verify out/si   # note")


def test_runnable_examples_are_marked_and_well_formed():
    blocks = all_blocks()  # a misplaced marker raises here, naming its line
    assert any(block.path == README for block in blocks), "README.md has no runnable example"
    for block in blocks:
        assert block.commands, f"{block.where}: a runnable block without a command"


def test_the_engine_config_comes_from_the_environment_unless_the_option_names_one(tmp_path: Path):
    from typer.testing import CliRunner

    from synth.cli import app

    broken = tmp_path / "broken.toml"
    broken.write_text('kind = "vllm"\nmodle = "typo"\n')
    given = tmp_path / "given.toml"
    given.write_text('kind = "openai"\nmodle = "typo"\n')
    out = str(tmp_path / "out")
    runner = CliRunner()
    from_env = runner.invoke(app, ["generate", "self-instruct", "--out", out], env={"SYNTH_ENGINE_CONFIG": str(broken)})
    assert from_env.exit_code == 2 and "broken.toml" in from_env.output
    args = ["generate", "self-instruct", "--engine-config", str(given), "--out", out]
    from_option = runner.invoke(app, args, env={"SYNTH_ENGINE_CONFIG": str(broken)})
    assert from_option.exit_code == 2 and "given.toml" in from_option.output and "broken" not in from_option.output


@pytest.mark.e2e
@pytest.mark.parametrize("block", all_blocks(), ids=lambda block: block.where)
def test_runnable_example_runs(block: Block, tmp_path: Path):
    engine = tmp_path / "engine.toml"
    engine.write_text(ENGINE)
    work = tmp_path / "work"
    work.mkdir()
    env = {
        **os.environ,
        "SYNTH_ENGINE_CONFIG": str(engine),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "COLUMNS": "120",
    }
    for command in block.commands:
        done = subprocess.run(["bash", "-c", command], cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, (
            f"{block.where}: `{command}` exited {done.returncode}\n"
            f"--- stdout\n{done.stdout[-4000:]}\n--- stderr\n{done.stderr[-4000:]}"
        )
