"""The Parquet shard store: what is committed reads back through `scan`; the manifest describes the
files exactly; commits are atomic; one writer at a time; runs resume and coexist; the dataset card
matches the manifest."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import polars as pl
import pytest
import yaml

from synth.schemas import SCHEMA_VERSION, Record, Reject, RunInfo
from synth.shards import (
    MANIFEST,
    DatasetBusyError,
    DatasetError,
    DatasetWriter,
    read_manifest,
    scan,
    shard_schema,
    store,
    verify,
)

# --- helpers --------------------------------------------------------------------------------


def records(n: int, prefix: str = "r", batch: int = 0, run_id: str = "run-a") -> list[Record]:
    return [
        Record(
            generator="self_instruct",
            run_id=run_id,
            batch=batch,
            instruction=f"{prefix} instruction {i}",
            input=f"{prefix} input {i}" if i % 2 else "",
            output=f"{prefix} output {i}",
            novelty_neighbors=[f"neighbor {i}"] if i % 3 == 0 else [],
            novelty_rouge_l=0.1 * (i % 5),
        )
        for i in range(n)
    ]


def rejects(n: int, prefix: str = "x", batch: int = 0, run_id: str = "run-a") -> list[Reject]:
    stages = ["parse", "heuristic", "novelty"]
    return [
        Reject(
            generator="self_instruct",
            run_id=run_id,
            batch=batch,
            instruction=f"{prefix} rejected {i}" if i % 3 else "",
            stage=stages[i % 3],
            reason=f"reason {i % 2}",
            raw=f"raw model text {prefix} {i}",
        )
        for i in range(n)
    ]


def run(run_id: str = "run-a", **kw) -> RunInfo:
    return RunInfo(run_id=run_id, generator="self_instruct", config={"seed": 0}, engine={"kind": "scripted"}, **kw)


def parquet_files(root: Path) -> set[str]:
    return {f"{p.parent.name}/{p.name}" for sub in ("data", "rejects") for p in (root / sub).glob("*.parquet")}


def tmp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def front_matter(card: str) -> dict:
    lines = card.splitlines()
    fences = [i for i, line in enumerate(lines) if line.strip() == "---"]
    assert fences[0] == 0, "the card must start with YAML front matter"
    return yaml.safe_load("\n".join(lines[fences[0] + 1 : fences[1]]))


def card_body(card: str) -> str:
    lines = card.splitlines()
    fences = [i for i, line in enumerate(lines) if line.strip() == "---"]
    return "\n".join(lines[fences[1] + 1 :])


# --- reading back ---------------------------------------------------------------------------


def test_committed_batch_scans_back_with_fixed_schema_and_same_rows(tmp_path):
    kept, dropped = records(5), rejects(4)
    with DatasetWriter(tmp_path / "ds") as w:
        w.start_run(run())
        w.commit_batch("run-a", 0, kept, dropped)

    frame = scan(tmp_path / "ds").collect()
    assert isinstance(scan(tmp_path / "ds"), pl.LazyFrame)
    assert frame.schema == shard_schema("kept")
    assert frame.height == len(kept)
    by_id = {row["id"]: row for row in frame.iter_rows(named=True)}
    assert set(by_id) == {r.id for r in kept}
    for r in kept:
        row = by_id[r.id]
        assert row["instruction"] == r.instruction
        assert row["input"] == r.input
        assert row["output"] == r.output
        assert [m["content"] for m in row["messages"]] == [m.content for m in r.messages]
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
        assert row["novelty_neighbors"] == r.novelty_neighbors

    rej = scan(tmp_path / "ds", "rejects").collect()
    assert rej.schema == shard_schema("rejects")
    assert sorted(rej.select("stage", "reason", "raw").rows()) == sorted((r.stage, r.reason, r.raw) for r in dropped)


def test_shards_with_and_without_list_values_scan_together(tmp_path):
    """A batch whose list columns are all empty (or whose optionals are all null) keeps the schema."""
    plain = [Record(generator="g", instruction=f"plain {i}", output="o") for i in range(3)]
    rich = records(3, prefix="rich", batch=1)
    with DatasetWriter(tmp_path / "ds") as w:
        w.start_run(run())
        w.commit_batch("run-a", 0, plain, [])
        w.commit_batch("run-a", 1, rich, [])
    frame = scan(tmp_path / "ds").collect()
    assert frame.schema == shard_schema("kept")
    assert set(frame["id"]) == {r.id for r in plain + rich}


def test_scan_of_dataset_without_shards_is_empty_with_schema(tmp_path):
    with DatasetWriter(tmp_path / "ds") as w:
        w.start_run(run())
    assert scan(tmp_path / "ds").collect().height == 0
    assert scan(tmp_path / "ds").collect_schema() == shard_schema("kept")
    assert scan(tmp_path / "ds", "rejects").collect_schema() == shard_schema("rejects")


def test_scan_without_manifest_raises_dataset_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError):
        scan(tmp_path / "empty")


# --- shards and manifest --------------------------------------------------------------------


def test_shard_rows_splits_batch_and_manifest_matches_files(tmp_path):
    root = tmp_path / "ds"
    kept, dropped = records(10), rejects(3)
    with DatasetWriter(root, shard_rows=4) as w:
        w.start_run(run())
        w.commit_batch("run-a", 0, kept, dropped)

    manifest = read_manifest(root)
    kept_shards = [s for s in manifest.shards if s.kind == "kept"]
    reject_shards = [s for s in manifest.shards if s.kind == "rejects"]
    assert len(kept_shards) == 3  # ceil(10 / 4)
    assert all(s.rows <= 4 for s in manifest.shards)
    assert sum(s.rows for s in kept_shards) == 10
    assert sum(s.rows for s in reject_shards) == 3
    assert {s.path for s in manifest.shards} == parquet_files(root)
    for s in manifest.shards:
        data = (root / s.path).read_bytes()
        assert s.bytes == len(data)
        assert s.sha256 == hashlib.sha256(data).hexdigest()
        assert pl.read_parquet(root / s.path).height == s.rows
        assert s.run_id == "run-a" and s.batch == 0
    assert verify(root) == []
    assert scan(root).collect().height == 10


def test_corrupted_shard_is_reported_by_verify_as_checksum_mismatch(tmp_path):
    root = tmp_path / "ds"
    with DatasetWriter(root, shard_rows=4) as w:
        w.start_run(run())
        w.commit_batch("run-a", 0, records(10), [])
    victim = read_manifest(root).shards[1]
    data = bytearray((root / victim.path).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (root / victim.path).write_bytes(bytes(data))

    problems = verify(root)
    assert len(problems) == 1
    assert victim.path in problems[0]
    assert "checksum" in problems[0]


def test_missing_shard_is_reported_by_verify(tmp_path):
    root = tmp_path / "ds"
    with DatasetWriter(root) as w:
        w.start_run(run())
        w.commit_batch("run-a", 0, records(2), [])
    (shard,) = read_manifest(root).shards
    (root / shard.path).unlink()
    problems = verify(root)
    assert len(problems) == 1 and shard.path in problems[0]


# --- atomicity ------------------------------------------------------------------------------


def fail_manifest_replace(monkeypatch) -> list[str]:
    """Make `os.replace` in the store fail when it would install a new manifest.json."""
    real_replace = os.replace
    attempted: list[str] = []

    def replace(src, dst, *args, **kwargs):
        if Path(dst).name == MANIFEST:
            attempted.append(str(dst))
            raise OSError(28, "No space left on device (simulated)")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(store.os, "replace", replace)
    return attempted


def test_failed_manifest_write_leaves_dataset_as_before_and_batch_can_be_committed_again(tmp_path, monkeypatch):
    root = tmp_path / "ds"
    first, second = records(3, "first"), records(4, "second", batch=1)
    with DatasetWriter(root) as w:
        w.start_run(run())
        w.commit_batch("run-a", 0, first, rejects(1))
        manifest_bytes = (root / MANIFEST).read_bytes()
        before = read_manifest(root)
        attempted = fail_manifest_replace(monkeypatch)
        with pytest.raises(OSError):
            w.commit_batch("run-a", 1, second, rejects(2, batch=1))
        monkeypatch.undo()
    assert attempted, "the manifest write was never attempted"

    after = read_manifest(root)
    assert (root / MANIFEST).read_bytes() == manifest_bytes
    assert [s.path for s in after.shards] == [s.path for s in before.shards]
    assert after.runs["run-a"].batches_done == before.runs["run-a"].batches_done == 1
    # Whatever the failed commit left on disk is not part of the dataset.
    assert set(scan(root).collect()["id"]) == {r.id for r in first}

    with DatasetWriter(root) as w:
        assert tmp_files(root) == []
        assert parquet_files(root) == {s.path for s in after.shards}  # orphans removed
        resumed = w.start_run(run())
        assert resumed.batches_done == 1
        w.commit_batch("run-a", resumed.batches_done, second, rejects(2, batch=1))

    ids = scan(root).collect()["id"].to_list()
    assert sorted(ids) == sorted(r.id for r in first + second)  # each record exactly once
    assert read_manifest(root).runs["run-a"].kept == len(first) + len(second)
    assert verify(root) == []


def test_failed_commit_can_be_retried_on_the_same_writer(tmp_path, monkeypatch):
    root = tmp_path / "ds"
    batch = records(3)
    with DatasetWriter(root) as w:
        w.start_run(run())
        fail_manifest_replace(monkeypatch)
        with pytest.raises(OSError):
            w.commit_batch("run-a", 0, batch, [])
        monkeypatch.undo()
        w.commit_batch("run-a", 0, batch, [])
        assert w.manifest.runs["run-a"].kept == len(batch)
    assert read_manifest(root).runs["run-a"].kept == len(batch)
    assert scan(root).collect().height == len(batch)


def test_a_commit_whose_manifest_landed_but_whose_folder_sync_failed_stands_and_keeps_its_shards(tmp_path, monkeypatch):
    """The manifest is in place when syncing the dataset folder fails: the commit must stand.
    Deleting its staged shards then would leave a manifest that lists missing files."""
    from synth.shards import atomic

    root = tmp_path / "ds"
    first, second = records(3, "first"), records(4, "second", batch=1)
    real_fsync_dir = atomic.fsync_dir

    def fsync_dir(path):
        if Path(path) == root:
            raise OSError(5, "Input/output error (simulated)")
        return real_fsync_dir(path)

    with DatasetWriter(root) as w:
        w.start_run(run())
        w.commit_batch("run-a", 0, first, [])
        monkeypatch.setattr(atomic, "fsync_dir", fsync_dir)
        with pytest.raises(atomic.ReplacedNotSyncedError):
            w.commit_batch("run-a", 1, second, rejects(2, batch=1))
        monkeypatch.undo()
        assert w.manifest.runs["run-a"].batches_done == 2  # the writer knows the batch is in
        with pytest.raises(DatasetError, match="already committed"):
            w.commit_batch("run-a", 1, second, [])
    assert verify(root) == []
    assert sorted(scan(root).collect()["id"]) == sorted(r.id for r in first + second)
    with DatasetWriter(root) as w:
        assert w.start_run(run()).batches_done == 2
    assert verify(root) == []


def test_uncommitted_staged_shard_and_temp_files_are_removed_on_open(tmp_path):
    root = tmp_path / "ds"
    with DatasetWriter(root) as w:
        w.start_run(run())
        w.commit_batch("run-a", 0, records(2), [])
    listed = {s.path for s in read_manifest(root).shards}
    (root / "data" / "run-a-b00001-000.parquet.staged").write_bytes(b"never committed")
    (root / "rejects" / ".run-a-b00001-000.parquet.abc123.tmp").write_bytes(b"half")
    with DatasetWriter(root):
        assert parquet_files(root) == listed
        assert tmp_files(root) == []
        assert not (root / "data" / "run-a-b00001-000.parquet.staged").exists()


def test_unlisted_shard_is_refused_and_left_in_place(tmp_path):
    root = tmp_path / "ds"
    with DatasetWriter(root) as w:
        w.start_run(run())
        w.commit_batch("run-a", 0, records(2), [])
    stray = root / "data" / "someone-elses.parquet"
    stray.write_bytes(b"not ours")
    with (
        pytest.raises(DatasetError, match=r"does not list \(data/someone-elses.parquet\).*synth verify"),
        DatasetWriter(root),
    ):
        pass
    assert stray.read_bytes() == b"not ours"


def crash_during_manifest_write(root: Path, commits: int) -> None:
    """Run a writer in a child process that dies (os._exit, as in a power cut, so no cleanup runs)
    while installing manifest.json, after `commits` committed batches; with `commits=0` it dies
    during the very first manifest write, when the writer opens a new dataset."""
    code = textwrap.dedent(
        f"""
        import os
        from pathlib import Path
        from synth.schemas import Record, RunInfo
        from synth.shards import store

        real = os.replace

        def die(src, dst, *a, **k):
            if Path(dst).name == "manifest.json":
                os._exit(17)
            return real(src, dst, *a, **k)

        commits = {commits}
        if commits == 0:
            os.replace = die
        with store.DatasetWriter({str(root)!r}) as w:
            w.start_run(RunInfo(run_id="run-a", generator="g", config={{}}, engine={{}}))
            for b in range(commits):
                w.commit_batch("run-a", b, [Record(generator="g", instruction=f"kept {{b}}", output="o")], [])
            os.replace = die
            w.commit_batch("run-a", commits, [Record(generator="g", instruction="lost", output="o")], [])
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 17, result.stderr


def test_hard_crash_during_commit_resumes_from_last_committed_batch(tmp_path):
    root = tmp_path / "ds"
    crash_during_manifest_write(root, commits=2)
    assert read_manifest(root).runs["run-a"].batches_done == 2
    with DatasetWriter(root) as w:
        resumed = w.start_run(run())
        assert resumed.batches_done == 2
        assert parquet_files(root) == {s.path for s in w.manifest.shards}
        w.commit_batch("run-a", 2, records(1, "again", batch=2), [])
    assert scan(root).collect().height == 3
    assert verify(root) == []


def test_no_temp_file_remains_after_reopening_a_dataset_whose_writer_died_mid_manifest_write(tmp_path):
    root = tmp_path / "ds"
    crash_during_manifest_write(root, commits=1)
    with DatasetWriter(root):
        assert tmp_files(root) == []


def test_dataset_whose_writer_died_during_its_first_manifest_write_can_be_reopened(tmp_path):
    root = tmp_path / "ds"
    crash_during_manifest_write(root, commits=0)
    assert not (root / MANIFEST).exists()
    with DatasetWriter(root) as w:
        w.start_run(run())
        w.commit_batch("run-a", 0, records(1), [])
    assert scan(root).collect().height == 1


# --- one writer at a time -------------------------------------------------------------------


def test_second_writer_on_open_dataset_is_refused_until_first_closes(tmp_path):
    root = tmp_path / "ds"
    with DatasetWriter(root) as w:
        w.start_run(run())
        with pytest.raises(DatasetBusyError) as e, DatasetWriter(root):
            pass
        assert str(root) in str(e.value)
        # The refused writer did not disturb the first one.
        w.commit_batch("run-a", 0, records(2), [])
    with DatasetWriter(root) as again:
        assert again.manifest.runs["run-a"].batches_done == 1


def test_second_writer_is_refused_even_before_the_first_writes_anything(tmp_path):
    root = tmp_path / "ds"
    with DatasetWriter(root), pytest.raises(DatasetBusyError), DatasetWriter(root):
        pass


def test_busy_error_is_a_dataset_error():
    assert issubclass(DatasetBusyError, DatasetError)


# --- refusing what is not a dataset ---------------------------------------------------------


def test_non_empty_directory_without_dataset_raises_error_naming_it(tmp_path):
    root = tmp_path / "mydocs"
    root.mkdir()
    (root / "thesis.tex").write_text("precious", encoding="utf-8")
    with pytest.raises(DatasetError) as e, DatasetWriter(root):
        pass
    assert str(root) in str(e.value)
    assert (root / "thesis.tex").read_text(encoding="utf-8") == "precious"
    assert sorted(p.name for p in root.iterdir()) == ["thesis.tex"]


def test_file_path_raises_dataset_error(tmp_path):
    f = tmp_path / "file.parquet"
    f.write_bytes(b"not a dir")
    with pytest.raises(DatasetError) as e, DatasetWriter(f):
        pass
    assert str(f) in str(e.value)


def test_empty_existing_directory_is_accepted(tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    with DatasetWriter(root) as w:
        w.start_run(run())
    assert (root / MANIFEST).is_file()


# --- resume ---------------------------------------------------------------------------------


def test_start_run_with_recorded_id_returns_the_recorded_run(tmp_path):
    root = tmp_path / "ds"
    with DatasetWriter(root) as w:
        w.start_run(run(state={"prompts_sent": 0}))
        w.commit_batch("run-a", 0, records(2), rejects(1), state={"prompts_sent": 8})
        w.commit_batch("run-a", 1, records(3, "b", batch=1), [], state={"prompts_sent": 16})
        w.finish_run("run-a")
    with DatasetWriter(root) as w:
        resumed = w.start_run(run())  # a fresh RunInfo with the same id
        assert resumed.batches_done == 2
        assert resumed.kept == 5
        assert resumed.rejected == 1
        assert resumed.state == {"prompts_sent": 16}
        assert resumed.status == "running"
        assert list(w.manifest.runs) == ["run-a"]


def test_committing_a_batch_below_batches_done_raises(tmp_path):
    root = tmp_path / "ds"
    with DatasetWriter(root) as w:
        w.start_run(run())
        w.commit_batch("run-a", 0, records(2), [])
        w.commit_batch("run-a", 1, records(2, "b", batch=1), [])
    with DatasetWriter(root) as w:
        w.start_run(run())
        with pytest.raises(DatasetError):
            w.commit_batch("run-a", 0, records(2, "dup"), [])
    assert scan(root).collect().height == 4
    assert read_manifest(root).runs["run-a"].batches_done == 2


# --- several runs ---------------------------------------------------------------------------


def test_second_run_adds_shards_without_touching_the_first_runs(tmp_path):
    root = tmp_path / "ds"
    with DatasetWriter(root) as w:
        w.start_run(run("run-a"))
        w.commit_batch("run-a", 0, records(3, "a"), rejects(2, "a"))
        w.finish_run("run-a")
    first_shards = read_manifest(root).shards
    first_hashes = {s.path: hashlib.sha256((root / s.path).read_bytes()).hexdigest() for s in first_shards}

    with DatasetWriter(root) as w:
        w.start_run(run("run-b"))
        w.commit_batch("run-b", 0, records(4, "b", run_id="run-b"), rejects(1, "b", run_id="run-b"))

    manifest = read_manifest(root)
    assert set(manifest.runs) == {"run-a", "run-b"}
    assert manifest.runs["run-a"].status == "finished"
    for path, digest in first_hashes.items():
        assert hashlib.sha256((root / path).read_bytes()).hexdigest() == digest
    assert [s for s in manifest.shards if s.run_id == "run-a"] == first_shards
    assert {s.path for s in manifest.shards if s.run_id == "run-b"}.isdisjoint(first_hashes)
    assert scan(root).collect().height == 7
    assert scan(root, "rejects").collect().height == 3
    assert verify(root) == []


# --- dataset card ---------------------------------------------------------------------------


def test_card_front_matter_configs_glob_to_exactly_the_listed_shards(tmp_path):
    root = tmp_path / "ds"
    with DatasetWriter(root, shard_rows=3) as w:
        w.start_run(run("run-a"))
        w.commit_batch("run-a", 0, records(7), rejects(3))
        w.commit_batch("run-a", 1, records(2, "n", batch=1), rejects(1, "n", batch=1))
    manifest = read_manifest(root)
    header = front_matter((root / "README.md").read_text(encoding="utf-8"))

    configs = {c["config_name"]: c for c in header["configs"]}
    kinds = {"default": "kept", "rejects": "rejects"}
    assert set(configs) == set(kinds)
    for name, kind in kinds.items():
        globbed = {
            p.relative_to(root).as_posix() for entry in configs[name]["data_files"] for p in root.glob(entry["path"])
        }
        assert globbed == {s.path for s in manifest.shards if s.kind == kind}


def test_card_counts_match_the_manifest(tmp_path):
    root = tmp_path / "ds"
    with DatasetWriter(root) as w:
        w.start_run(run("run-a"))
        w.commit_batch("run-a", 0, records(7), rejects(3))
        w.start_run(run("run-b"))
        w.commit_batch("run-b", 0, records(4, "b", run_id="run-b"), rejects(2, "b", run_id="run-b"))
    manifest = read_manifest(root)
    body = card_body((root / "README.md").read_text(encoding="utf-8"))
    kept = re.search(r"(\d+) kept", body)
    rejected = re.search(r"(\d+) rejects?\b", body)
    assert kept and rejected
    assert int(kept.group(1)) == manifest.rows("kept") == 11
    assert int(rejected.group(1)) == manifest.rows("rejects") == 5
    assert "run-a" in body and "run-b" in body
    for stage, reasons in manifest.rejects_by_reason().items():
        assert stage in body
        for reason in reasons:
            assert reason in body


def test_card_has_no_rejects_config_without_rejects(tmp_path):
    root = tmp_path / "ds"
    with DatasetWriter(root) as w:
        w.start_run(run())
        w.commit_batch("run-a", 0, records(3), [])
    header = front_matter((root / "README.md").read_text(encoding="utf-8"))
    names = [c["config_name"] for c in header["configs"]]
    assert "rejects" not in names
    assert names == ["default"]


def test_card_is_rewritten_on_every_commit(tmp_path):
    root = tmp_path / "ds"
    with DatasetWriter(root) as w:
        w.start_run(run())
        w.commit_batch("run-a", 0, records(3), [])
        first = (root / "README.md").read_text(encoding="utf-8")
        w.commit_batch("run-a", 1, records(2, "b", batch=1), rejects(1, batch=1))
    second = (root / "README.md").read_text(encoding="utf-8")
    assert first != second
    assert "rejects" in [c["config_name"] for c in front_matter(second)["configs"]]


# --- manifest versions ----------------------------------------------------------------------


def test_manifest_with_newer_schema_version_is_refused(tmp_path):
    root = tmp_path / "ds"
    with DatasetWriter(root) as w:
        w.start_run(run())
        w.commit_batch("run-a", 0, records(1), [])
    data = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    data["schema_version"] = SCHEMA_VERSION + 1
    (root / MANIFEST).write_text(json.dumps(data), encoding="utf-8")

    with pytest.raises(DatasetError):
        read_manifest(root)
    with pytest.raises(DatasetError):
        scan(root)
    with pytest.raises(DatasetError), DatasetWriter(root):
        pass


def test_invalid_manifest_raises_dataset_error(tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    (root / MANIFEST).write_text("{not json", encoding="utf-8")
    with pytest.raises(DatasetError) as e:
        read_manifest(root)
    assert MANIFEST in str(e.value)


def test_a_folder_holding_only_the_library_log_becomes_a_dataset_and_other_files_are_refused(tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "library.log").write_text("runtime start-up notices\n")
    with DatasetWriter(out) as w:
        w.start_run(run())
        w.commit_batch("run-a", 0, records(2), [])
    assert scan(out).collect().height == 2
    assert (out / "library.log").read_text() == "runtime start-up notices\n"

    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not empty"):
        DatasetWriter(other).__enter__()
