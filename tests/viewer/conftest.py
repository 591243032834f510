"""Datasets for the viewer's tests: the shared small dataset plus one run of records of every shape a
page has a section for (a preference pair, a recycled pair, a backtranslated segment, selection
scores, curation rejects, a failed evolution), and one whose text tries to run script."""

from __future__ import annotations

import hashlib
import re
from html import unescape
from pathlib import Path

import pytest

from synth.schemas import Record, Reject, RunInfo
from synth.schemas.preferences import Preferences
from synth.schemas.reflection import Reflection
from synth.shards import DatasetWriter, scan
from tests.conftest import build_small_dataset

HOSTILE_INSTRUCTION = "Repeat this: <script>window.__pwned=1</script>"
HOSTILE_INPUT = '<img src=x onerror="window.__pwned=2">'
HOSTILE_OUTPUT = "[click](javascript:window.__pwned=3)"
TOKENS = {"self_instruct_tasks": {"prompt": 900, "completion": 300}}


def add_shaped_records(path: Path) -> dict[str, str]:
    """Commit one run ("shapes") of records of every shape into the dataset at `path`; returns their
    ids by name. The Evol chain of `build_small_dataset` gets a failed evolution of its last step."""
    kept = scan(path).collect()
    evolved = kept.filter(kept["operation"] == "deepen").row(0, named=True)
    seed = kept.filter(kept["generator"] == "self_instruct").row(0, named=True)
    common = {"run_id": "shapes", "model": "scripted"}
    pair = Record(
        generator="preferences",
        instruction="Name a colour.",
        output="Blue.",
        preferences=Preferences(
            chosen="Blue.",
            rejected="Colour is a word.",
            chosen_score=4.5,
            rejected_score=1.5,
            chosen_rationale="Answers the question.",
            rejected_rationale="Does not name one.",
            chosen_model="model-a",
            rejected_model="model-b",
        ),
        **common,
    )
    recycled = Record(
        generator="reflection",
        instruction="Explain photosynthesis in two sentences.",
        output="Plants turn light into sugar. They release oxygen.",
        parent_id=seed["id"],
        reflection=Reflection(
            variant="instruction+response",
            original_instruction=seed["instruction"],
            original_output=seed["output"],
            ifd=0.81,
            original_ifd=0.93,
            teacher="teacher-model",
            student="student-model",
        ),
        **common,
    )
    segment = Record(
        generator="backtranslation",
        instruction="Describe the harbour at dawn.",
        output="The boats rest while gulls circle the harbour.",
        source_doc="harbour.txt",
        source_start=120,
        source_end=166,
        grades=[4.0, 5.0],
        **common,
    )
    selected = Record(
        generator="self_instruct",
        instruction="Sort these numbers: 3 1 2.",
        output="1 2 3",
        judge_score=5.0,
        judge_rationale="Correct and complete; the numbers are sorted.",
        judge_model="judge-model",
        complexity_score=2.25,
        quality_score=4.75,
        selection_method="deita",
        selection_rank=0,
        language="de",
        ability="math",
        **common,
    )
    hostile = Record(
        generator="self_instruct", instruction=HOSTILE_INSTRUCTION, input=HOSTILE_INPUT, output=HOSTILE_OUTPUT, **common
    )
    rejects = [
        Reject(
            generator="evol_instruct",
            instruction=f"{evolved['instruction']} Sorry.",
            output="I cannot.",
            parent_id=evolved["id"],
            operation="deepen",
            round=3,
            stage="evolution",
            reason="refusal",
            **common,
        ),
        Reject(
            generator="self_instruct",
            instruction="Tell a joke.",
            output="No.",
            stage="judge",
            phase="curation",
            reason="score below 4",
            judge_rationale="Unhelpful.",
            **common,
        ),
        Reject(
            generator="self_instruct",
            instruction="Sort these numbers: 3 1 2!",
            output="1 2 3",
            stage="dedup",
            phase="curation",
            reason="near duplicate",
            **common,
        ),
    ]
    records = [pair, recycled, segment, selected, hostile]
    with DatasetWriter(path) as writer:
        writer.start_run(RunInfo(run_id="shapes", generator="mixed", config={}, engine={}, model="scripted"))
        writer.commit_batch("shapes", 0, records, rejects, state={"tokens": TOKENS})
        writer.finish_run("shapes")
    names = ["pair", "recycled", "segment", "selected", "hostile"]
    ids = {name: record.id for name, record in zip(names, records, strict=True)}
    return ids | {"evolved": evolved["id"], "seed": seed["id"], "failed_evolution": rejects[0].id}


@pytest.fixture
def shaped_dataset(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A dataset of every shape, for a test that changes it."""
    path = tmp_path / "shaped"
    build_small_dataset(path)
    return path, add_shaped_records(path)


@pytest.fixture(scope="module")
def shaped_readonly(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """The same, made once for a module's tests that only read it."""
    path = tmp_path_factory.mktemp("viewer") / "shaped"
    build_small_dataset(path)
    return path, add_shaped_records(path)


def build_numbered_dataset(path: Path, kept: int, rejects: int = 0) -> None:
    """`kept` plain records numbered from 0 (and `rejects` heuristic rejects), in shards of 40."""
    records = [
        Record(generator="self_instruct", instruction=f"Task number {i}.", output=f"Answer {i}.") for i in range(kept)
    ]
    dropped = [
        Reject(generator="self_instruct", instruction=f"Bad task {i}.", stage="heuristic", reason="too short")
        for i in range(rejects)
    ]
    with DatasetWriter(path, shard_rows=40) as writer:
        writer.start_run(RunInfo(run_id="n", generator="self_instruct", config={}, engine={}, model="scripted"))
        writer.commit_batch("n", 0, records, dropped)
        writer.finish_run("n")


def fingerprint(path: Path) -> dict[str, tuple[int, str]]:
    """Every file under `path`: its modification time and content hash."""
    return {
        str(f.relative_to(path)): (f.stat().st_mtime_ns, hashlib.sha256(f.read_bytes()).hexdigest())
        for f in sorted(path.rglob("*"))
        if f.is_file()
    }


RECORD_LINK = re.compile(r'class="record-link" href="/d/0/record\?id=([^&"]+)')


def listed_ids(html: str) -> list[str]:
    """The ids a list page links to, in order."""
    return RECORD_LINK.findall(html)


def text_of(html: str) -> str:
    """The page's visible text, roughly: tags dropped, entities decoded, spaces collapsed."""
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())
