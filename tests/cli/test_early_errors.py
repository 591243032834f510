"""An expected error is reported before anything heavy is imported or started: an output that is a
file, or a damaged dataset (a listed shard missing, truncated or altered; shards without their
manifest, or beside a manifest that does not list them) ends in one `error:` line and exit 2,
without Prefect, vLLM or torch ever imported (each costs seconds, Prefect's server more).

Each command runs through the real command line in a process of its own, which records the
modules it imported as it exits."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import build_small_dataset

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("prefect", "vllm", "torch")

# `synth` with a note, written as the process exits, of every module it imported.
_RUN = """
import atexit, json, os, sys
atexit.register(lambda: open(os.environ["IMPORTED_OUT"], "w").write(json.dumps(sorted(sys.modules))))
sys.argv[0] = "synth"
from synth.cli import main
main()
"""


def synth(tmp_path: Path, *args: str | Path) -> tuple[subprocess.CompletedProcess, list[str]]:
    """The command's result, and the heavy packages it imported."""
    imported = tmp_path / "imported.json"
    result = subprocess.run(
        [sys.executable, "-c", _RUN, *map(str, args)],
        cwd=REPO,
        env={**os.environ, "IMPORTED_OUT": str(imported)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    modules = json.loads(imported.read_text())
    return result, sorted({m.split(".")[0] for m in modules} & set(HEAVY))


def refused(result: subprocess.CompletedProcess, heavy: list[str], *names: str | Path) -> None:
    """Exit 2 with one `error:` line naming each of `names`, and nothing heavy imported."""
    text = result.stderr.strip()
    assert result.returncode == 2, result.stdout + result.stderr
    assert text.startswith("error: ") and "\n" not in text, text
    for name in names:
        assert str(name) in text, (name, text)
    assert heavy == [], f"imported {heavy} before saying: {text}"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pristine") / "ds"
    build_small_dataset(path, batches=1)
    return path


def damaged(pristine: Path, where: Path, damage: str) -> tuple[Path, str]:
    """A copy of the dataset with one kind of damage, and what its error line says."""
    dataset = where / f"{damage}-ds"
    shutil.copytree(pristine, dataset)
    manifest = json.loads((dataset / "manifest.json").read_text())
    shard = dataset / manifest["shards"][0]["path"]
    if damage == "missing":
        shard.unlink()
        return dataset, f"{shard}: missing"
    if damage == "truncated":
        shard.write_bytes(shard.read_bytes()[:-10])
        return dataset, f"{shard}: size"
    if damage == "altered":
        data = bytearray(shard.read_bytes())
        data[len(data) // 2] ^= 0xFF  # same size, other bytes
        shard.write_bytes(bytes(data))
        return dataset, f"{shard}: checksum mismatch"
    if damage == "no-manifest":
        (dataset / "manifest.json").unlink()
        return dataset, "holds shards but no manifest.json"
    assert damage == "unlisted"
    shutil.copy(shard, shard.with_name("stray.parquet"))
    return dataset, "does not list (data/stray.parquet)"


@pytest.fixture
def scripted(tmp_path) -> Path:
    engine = tmp_path / "engine.json"
    engine.write_text(json.dumps({"kind": "scripted"}))
    return engine


def test_generate_into_a_file(tmp_path, scripted):
    out = tmp_path / "notes.txt"
    out.write_text("mine")
    refused(*synth(tmp_path, "generate", "self-instruct", "--num", "5", "--out", out), out, "not a folder")
    refused(*synth(tmp_path, "generate", "self-instruct", "--num", "5", "--out", out, "--engine-config", scripted))
    assert out.read_text() == "mine"


@pytest.mark.parametrize("damage", ["missing", "truncated", "altered", "no-manifest", "unlisted"])
def test_generate_into_a_damaged_dataset(pristine, tmp_path, scripted, damage):
    dataset, says = damaged(pristine, tmp_path, damage)
    before = sorted(p.relative_to(dataset) for p in dataset.rglob("*"))
    args = ["generate", "self-instruct", "--num", "5", "--out", dataset, "--engine-config", scripted]
    refused(*synth(tmp_path, *args), says)
    assert sorted(p.relative_to(dataset) for p in dataset.rglob("*")) == before  # nothing written


def test_a_recipe_into_a_damaged_dataset(pristine, tmp_path):
    dataset, says = damaged(pristine, tmp_path, "missing")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        yaml.safe_dump({
            "name": "r",
            "dataset": {"path": str(dataset)},
            "engine": {"kind": "scripted"},
            "steps": [{"generator": "self_instruct", "num_records": 5}],
        })
    )  # fmt: skip
    refused(*synth(tmp_path, "run", recipe), says)


def test_select_train_and_evaluate_from_a_damaged_dataset(pristine, tmp_path):
    dataset, says = damaged(pristine, tmp_path, "altered")
    refused(*synth(tmp_path, "select", dataset, "--method", "ifd", "--budget", "3", "--out", tmp_path / "s"), says)
    refused(*synth(tmp_path, "train", dataset, "--out", tmp_path / "model"), says)
    reference = tmp_path / "reference.jsonl"
    reference.write_text(json.dumps({"instruction": "Name a colour.", "output": "Blue."}) + "\n")
    refused(*synth(tmp_path, "evaluate", dataset, "--reference", reference), says)
    assert not (tmp_path / "s").exists() and not (tmp_path / "model").exists()


def test_train_into_a_file(tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps({"instruction": "Name a colour.", "output": "Blue."}) + "\n")
    out = tmp_path / "model"
    out.write_text("mine")
    refused(*synth(tmp_path, "train", data, "--out", out), out, "not a folder")


def test_a_bad_seed_file_or_source_is_refused_before_prefect_loads(tmp_path):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text('{"instruction": "Name a colour."}\n{"instruction": \n')
    result, heavy = synth(tmp_path, "generate", "self-instruct", "--seeds", seeds, "--out", tmp_path / "a")
    refused(result, heavy, f"{seeds}:2")
    source = tmp_path / "src.jsonl"
    source.write_text('{"id": "q1", "instruction": "Explain tides."}\n{"id": "q1", "instruction": "Explain fog."}\n')
    result, heavy = synth(tmp_path, "generate", "evol", "--from", source, "--out", tmp_path / "b")
    refused(result, heavy, f"{source}:2")
    docs = tmp_path / "docs"
    docs.mkdir()
    result, heavy = synth(tmp_path, "generate", "backtranslate", "--docs", docs, "--out", tmp_path / "c")
    refused(result, heavy, docs)


def test_a_bad_records_file_to_curate_is_refused_before_prefect_loads(tmp_path):
    records = tmp_path / "records.jsonl"
    records.write_text('{"instruction": "Name a colour.", "output": "Red."}\n{"instruction": "Name a bird."}\n')
    result, heavy = synth(tmp_path, "curate", records, "--out", tmp_path / "d")
    refused(result, heavy, f"{records}:2", "'output'")
    assert not (tmp_path / "d").exists()


def test_select_from_a_dataset_without_kept_records_is_refused_before_prefect_loads(tmp_path):
    from synth.shards import DatasetWriter

    with DatasetWriter(tmp_path / "empty"):
        pass
    result, heavy = synth(tmp_path, "select", tmp_path / "empty", "--budget", "3", "--out", tmp_path / "s")
    refused(result, heavy, tmp_path / "empty", "no kept records")


@pytest.mark.parametrize(
    "command",
    [
        ["generate", "self-instruct"],
        ["generate", "unnatural"],
        ["generate", "codeclm"],
        ["generate", "evol", "--from", "synth/generators/seeds/default_seed_tasks.jsonl"],
        ["generate", "code"],
    ],
    ids=lambda command: command[1],
)
def test_a_language_without_prompts_is_refused_before_any_model_loads(tmp_path, command):
    """A language the built-in prompts do not cover fails in a second, naming the missing template,
    not after the model has loaded."""
    out = tmp_path / "out"
    result, heavy = synth(tmp_path, *command, "--language", "fr", "--out", out)
    refused(result, heavy, "no 'fr' prompt template", "languages: en, zh")
    assert not out.exists()
