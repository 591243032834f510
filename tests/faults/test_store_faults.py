"""Faults against the dataset store: hostile manifests, lost manifests, damaged shards and indexes,
crashes between the steps of a commit, concurrent writers, and files' permissions."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import pytest

from synth.filters.base import reject
from synth.filters.dedup import MinHashIndex
from synth.flows.curate import curate_dataset, curate_file
from synth.schemas import Record, RunInfo
from synth.schemas.curation import CurationConfig
from synth.shards import DatasetBusyError, DatasetError, DatasetWriter, read_manifest, scan, verify
from synth.shards.export import export
from synth.shards.layout import MANIFEST, DamagedShardError
from synth.shards.repair import check, repair

SYNTH = str(Path(sys.executable).with_name("synth"))


def records(n: int, tag: str = "r", batch: int = 0) -> list[Record]:
    return [
        Record(
            generator="g",
            instruction=f"Describe item {tag} {i} with {' '.join(f'{tag}{i}w{k}' for k in range(8))}",
            output=f"Item {tag} {i} is {' '.join(f'{tag}{i}o{k}' for k in range(8))}.",
            run_id="run-a",
            batch=batch,
        )
        for i in range(n)
    ]


def make_dataset(root: Path, batches: int = 2, per_batch: int = 4) -> list[str]:
    with DatasetWriter(root) as w:
        w.start_run(RunInfo(run_id="run-a", generator="g", config={}, engine={}))
        for b in range(batches):
            w.commit_batch(
                "run-a",
                b,
                records(per_batch, f"b{b}", b),
                [reject(r, "heuristic", "why") for r in records(1, f"x{b}", b)],
            )
        w.finish_run("run-a")
    return sorted(scan(root).collect()["id"].to_list())


def synth(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([SYNTH, *args], capture_output=True, text=True, timeout=120)


def set_manifest(root: Path, edit) -> None:
    data = json.loads((root / MANIFEST).read_text())
    edit(data)
    (root / MANIFEST).write_text(json.dumps(data))


# -- paths confined to the dataset ---------------------------------------------------------------


@pytest.mark.parametrize("where", ["../victim.parquet", "data/../../victim.parquet", "ABSOLUTE"])
def test_manifest_naming_a_file_outside_the_dataset_is_refused_and_the_file_untouched(tmp_path, where):
    root = tmp_path / "ds"
    make_dataset(root)
    victim = tmp_path / "victim.parquet"
    pl.DataFrame({"x": [1]}).write_parquet(victim)
    before = victim.read_bytes()
    path = str(victim) if where == "ABSOLUTE" else where
    set_manifest(root, lambda m: m["shards"][0].update(path=path))
    with pytest.raises(DatasetError, match="refusing"):
        scan(root).collect()
    with pytest.raises(DatasetError, match="refusing"):
        curate_dataset(root, CurationConfig())
    if where == "ABSOLUTE":  # the command reads the manifest through the same code: once is enough
        result = synth("curate", str(root))
        assert result.returncode != 0 and "Traceback" not in result.stderr
    assert victim.read_bytes() == before


def test_shard_symlink_leading_out_of_the_dataset_is_refused(tmp_path):
    root = tmp_path / "ds"
    make_dataset(root)
    victim = tmp_path / "victim.parquet"
    shard = read_manifest(root).shards[0]
    os.replace(root / shard.path, victim)
    (root / shard.path).symlink_to(victim)
    with pytest.raises(DatasetError, match="outside the dataset"):
        curate_dataset(root, CurationConfig())
    assert victim.exists()


# -- no writing over a dataset we cannot read ------------------------------------------------------


@pytest.mark.parametrize("damage", ["missing", "empty object", "garbage"])
def test_dataset_without_a_usable_manifest_is_never_written_over_and_repair_restores_it(tmp_path, damage):
    root = tmp_path / "ds"
    ids = make_dataset(root, batches=3)
    files = {p: p.read_bytes() for p in (root / "data").iterdir()} | {
        p: p.read_bytes() for p in (root / "rejects").iterdir()
    }
    if damage == "missing":
        (root / MANIFEST).unlink()
    else:
        (root / MANIFEST).write_text("{}" if damage == "empty object" else "{not json")
    with pytest.raises(DatasetError, match="synth verify"), DatasetWriter(root) as w:
        w.start_run(RunInfo(run_id="run-b", generator="g", config={}, engine={}))
        w.commit_batch("run-b", 0, records(2, "new"), [])
    assert {p: p.read_bytes() for p in files} == files  # every shard as it was
    report, moved = repair(root)
    assert report.manifest_error
    manifest = read_manifest(root)
    assert all(s.recovered for s in manifest.shards)
    assert sorted(scan(root).collect()["id"].to_list()) == ids
    assert scan(root, "rejects").collect().height == 3
    assert verify(root) == [] and check(root).ok
    if damage != "missing":
        assert [e.path for e in moved] == [MANIFEST] and (root / moved[0].moved_to).exists()
    with DatasetWriter(root) as w:  # usable again
        w.start_run(RunInfo(run_id="run-b", generator="g", config={}, engine={}))
        w.commit_batch("run-b", 0, records(2, "new"), [])
    assert scan(root).collect().height == len(ids) + 2


def test_repair_sets_aside_unreadable_files_when_rebuilding(tmp_path):
    root = tmp_path / "ds"
    make_dataset(root)
    (root / MANIFEST).unlink()
    (root / "data" / "junk.parquet").write_bytes(b"not parquet")
    _, moved = repair(root)
    assert [e.path for e in moved] == ["data/junk.parquet"]
    assert (root / moved[0].moved_to).read_bytes() == b"not parquet"
    assert check(root).ok


# -- damaged shards ------------------------------------------------------------------------------


def flip_a_bit(file: Path) -> None:
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0x01
    file.write_bytes(bytes(data))


def test_flipped_bit_is_reported_by_verify_refused_by_readers_and_repaired(tmp_path):
    root = tmp_path / "ds"
    make_dataset(root)
    damaged = read_manifest(root).shards[0]
    flip_a_bit(root / damaged.path)
    result = synth("verify", str(root))
    assert result.returncode == 1
    assert f"{damaged.path}: checksum mismatch" in result.stderr + result.stdout
    with pytest.raises(DamagedShardError, match=damaged.path):
        export(root, "jsonl", tmp_path / "out.jsonl")
    assert not (tmp_path / "out.jsonl").exists()
    result = synth("export", str(root), "--out", str(tmp_path / "out.jsonl"))
    assert result.returncode != 0 and "synth verify" in result.stderr and "Traceback" not in result.stderr
    with pytest.raises(DamagedShardError):
        curate_dataset(root, CurationConfig())
    result = synth("verify", str(root), "--repair")
    assert result.returncode == 0, result.stderr
    assert synth("verify", str(root)).returncode == 0
    assert damaged.path not in {s.path for s in read_manifest(root).shards}
    assert read_manifest(root).quarantined[0].path == damaged.path
    assert export(root, "jsonl", tmp_path / "out.jsonl") == 4  # the other batch's records


def test_unlisted_shard_is_listed_by_verify_and_moved_aside_by_repair(tmp_path):
    root = tmp_path / "ds"
    make_dataset(root)
    stray = root / "data" / "stray.parquet"
    pl.DataFrame({"x": [1]}).write_parquet(stray)
    assert check(root).unlisted == ["data/stray.parquet"]
    with pytest.raises(DatasetError, match="does not list"), DatasetWriter(root):
        pass
    repair(root)
    assert not stray.exists() and list((root / "quarantine").rglob("stray.parquet"))
    with DatasetWriter(root):
        pass


# -- crashes between the steps of a commit ---------------------------------------------------------


def test_uncommitted_shards_never_match_the_readers_glob(tmp_path, monkeypatch):
    root = tmp_path / "ds"
    make_dataset(root, batches=1)
    from synth.shards import store

    def fail_manifest(manifest=None, card=True):
        raise OSError("power cut")

    with DatasetWriter(root) as w:
        w.start_run(RunInfo(run_id="run-a", generator="g", config={}, engine={}))
        monkeypatch.setattr(w, "_save", fail_manifest)
        seen = {}
        real = store.atomic_write_bytes

        def spy(path, data):
            real(path, data)
            seen["glob"] = sorted(p.name for p in (root / "data").glob("*.parquet"))

        monkeypatch.setattr(store, "atomic_write_bytes", spy)
        with pytest.raises(OSError):
            w.commit_batch("run-a", 1, records(3, "late", 1), [])
    listed = sorted(Path(s.path).name for s in read_manifest(root).shards if s.kind == "kept")
    assert seen["glob"] == listed  # the new shard was on disk, under a name the glob skips
    assert sorted(p.name for p in (root / "data").glob("*.parquet")) == listed
    assert pl.read_parquet(root / "data" / "*.parquet").height == scan(root).collect().height


def test_crash_after_the_manifest_but_before_the_rename_is_completed_by_the_next_writer(tmp_path):
    root = tmp_path / "ds"
    make_dataset(root, batches=1)
    code = f"""
import os
from synth.schemas import Record, RunInfo
from synth.shards import store
def die(self, shards):
    os._exit(17)
store.DatasetWriter._publish = die
with store.DatasetWriter({str(root)!r}) as w:
    w.start_run(RunInfo(run_id="run-a", generator="g", config={{}}, engine={{}}))
    w.commit_batch("run-a", 1, [Record(generator="g", instruction="late one", output="o")], [])
"""
    assert subprocess.run([sys.executable, "-c", code]).returncode == 17
    assert scan(root).collect().height == 5  # a reader already sees the committed batch
    with DatasetWriter(root):
        pass
    assert check(root).ok
    assert pl.read_parquet(root / "data" / "*.parquet").height == 5


# -- the MinHash index is derived state -------------------------------------------------------------


def near_copies(n: int) -> list[Record]:
    return [r.model_copy(update={"output": r.output + " Indeed."}) for r in records(n, "b0")]


@pytest.mark.parametrize("damage", ["garbage meta", "garbage part", "deleted part", "stale", "deleted folder"])
def test_extending_with_a_damaged_index_gives_the_same_dataset_as_with_the_index_intact(tmp_path, damage):
    config = CurationConfig()
    results = {}
    for name in ("intact", "damaged"):
        root = tmp_path / name
        make_dataset(root, batches=1, per_batch=6)
        MinHashIndex.open(root, config.minhash)
        folder = root / "index" / "minhash"
        if name == "damaged":
            if damage == "garbage meta":
                (folder / "meta.json").write_text("\x00garbage")
            elif damage == "garbage part":
                (folder / "part-00000.parquet").write_bytes(b"garbage")
            elif damage == "deleted part":
                (folder / "part-00000.parquet").unlink()
            elif damage == "stale":
                meta = json.loads((folder / "meta.json").read_text())
                meta["shards"].append("data/gone.parquet")
                (folder / "meta.json").write_text(json.dumps(meta))
            else:
                import shutil

                shutil.rmtree(folder)
        source = tmp_path / f"{name}.jsonl"
        rows = [*near_copies(4), *records(3, "fresh")]
        source.write_text("\n".join(json.dumps({"instruction": r.instruction, "output": r.output}) for r in rows))
        summary = curate_file(source, root, config)
        results[name] = (summary["kept"], summary["rejects_by_reason"], sorted(scan(root).collect()["instruction"]))
    assert results["damaged"] == results["intact"]
    assert results["intact"][1]["dedup"]["near duplicate"] == 4


# -- one writer at a time ---------------------------------------------------------------------------


def test_in_place_curate_beside_a_live_writer_loses_nothing(tmp_path):
    root = tmp_path / "ds"
    make_dataset(root, batches=1)
    started = threading.Event()

    def generator():
        with DatasetWriter(root, holder="run gen-1") as w:
            w.start_run(RunInfo(run_id="gen", generator="g", config={}, engine={}))
            started.set()
            for b in range(5):
                time.sleep(0.1)
                w.commit_batch("gen", b, records(3, f"gen{b}", b), [])

    thread = threading.Thread(target=generator)
    thread.start()
    started.wait()
    with pytest.raises(DatasetBusyError, match="run gen-1, pid"):
        curate_dataset(root, CurationConfig())
    summary = curate_dataset(root, CurationConfig(), wait=60)
    thread.join()
    assert summary["records_in"] == 4 + 15
    assert scan(root).collect().height == 4 + 15


def test_files_get_the_users_umask(tmp_path):
    old = os.umask(0o022)
    try:
        root = tmp_path / "ds"
        make_dataset(root, batches=1)
    finally:
        os.umask(old)
    for file in [root / MANIFEST, root / "README.md", *(root / "data").iterdir()]:
        assert stat.S_IMODE(file.stat().st_mode) == 0o644, file


def test_a_failed_start_never_turns_a_finished_run_back_into_a_running_one(tmp_path):
    root = tmp_path / "ds"
    make_dataset(root)
    with pytest.raises(RuntimeError), DatasetWriter(root) as w:
        w.start_run(RunInfo(run_id="run-a", generator="g", config={}, engine={}))
        raise RuntimeError("the engine did not load")
    assert read_manifest(root).runs["run-a"].status == "finished"
    with pytest.raises(RuntimeError), DatasetWriter(root) as w:  # once it commits, it is running again
        w.start_run(RunInfo(run_id="run-a", generator="g", config={}, engine={}))
        w.commit_batch("run-a", 2, records(1, "more", 2), [])
        raise RuntimeError("killed later")
    assert read_manifest(root).runs["run-a"].status == "running"


@pytest.mark.e2e
def test_generate_and_in_place_curate_at_once_through_the_cli_lose_nothing(tmp_path):
    """`synth generate` adds batches while `synth curate DIR --wait` waits for it, then curates
    everything: every record the generator committed is either kept or a reject with a reason. The
    run is long enough (50 batches of replies that take 20 ms each) to still hold the dataset when
    the first curate starts."""
    root_dir = Path(__file__).parents[2]
    engine = tmp_path / "engine.json"
    # Replies that take their time: the run must still hold the dataset when `curate` first tries.
    engine.write_text(json.dumps({"kind": "scripted", "responder": "tests.flows.ray_scripts:slow_pipeline"}))
    env = {**os.environ, "PYTHONPATH": str(root_dir)}  # the session's Prefect server (PREFECT_API_URL)
    out = tmp_path / "ds"
    # Its output goes to a file: a pipe nobody reads until the end fills up and stalls a long run.
    log = tmp_path / "generate.log"
    generate = subprocess.Popen(
        [SYNTH, "generate", "self-instruct", "--engine-config", str(engine), "--num", "300", "--prompts-per-batch", "2",
         "--no-include-seed-tasks", "--out", str(out)],
        env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while not (out / "manifest.json").exists() or not read_manifest(out).runs:
        assert time.monotonic() < deadline and generate.poll() is None, log.read_text()
        time.sleep(0.1)
    busy = subprocess.run([SYNTH, "curate", str(out)], env=env, capture_output=True, text=True, timeout=120)
    assert busy.returncode == 1 and "another writer holds" in busy.stderr and "Traceback" not in busy.stderr
    curate = subprocess.run([SYNTH, "curate", str(out), "--wait", "600"], env=env, capture_output=True, text=True)
    assert generate.wait(timeout=60) == 0, log.read_text()
    assert curate.returncode == 0, curate.stderr
    manifest = read_manifest(out)
    generated = next(r for r in manifest.runs.values() if r.generator == "self_instruct")
    curated = next(r for r in manifest.runs.values() if r.generator == "curate")
    assert generated.status == "finished" and generated.kept >= 300
    # everything the generator kept went through curation: kept now, or a curation reject
    assert curated.kept + curated.rejected == generated.kept
    assert scan(out).collect().height == curated.kept
    assert check(out).ok
