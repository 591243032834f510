"""`synth view` on a large dataset: seconds per page of the viewer's app against a raw polars read of
the same page.

Builds (once; reused from a temporary folder) a dataset of `--records` kept records and `--rejects`
rejects as a handful of Parquet shards with a manifest that `synth.shards` reads. The shards are
written with polars directly, in about half the time of the project's `DatasetWriter`, which
builds a pydantic model per record (about 70 s per million measured here). The columns follow
`shard_schema` and the manifest carries each shard's size and checksum, so the
viewer checks them as it checks any dataset.

Then it times, in this process, the app's pages through starlette's TestClient (query, HTML
rendering, headers): the overview, the first list page, page 1000, rejects filtered by stage, a
text search and a record page. Each against a baseline: `pl.scan_parquet(files)` with the same
filter, sliced to the same page and collected (no count, no HTML). The first call of a page
includes figures the viewer computes once per state of the shards (the overview, the filter
form's values); the median is of the calls after it.

    .venv/bin/python bench/viewer_bench.py                  # 1,000,000 records, 3 calls per page
    .venv/bin/python bench/viewer_bench.py --records 100000 --calls 5
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl

from synth.schemas import Manifest, RunInfo, ShardInfo
from synth.shards.columns import shard_schema
from synth.shards.layout import MANIFEST, SHARD_DIRS

FORMAT = 1  # bump when the generated data changes, so an old folder is not reused
RUNS = 4
KEPT_SHARDS_PER_RUN = 2
NEEDLE = "zebracrossing"  # planted in about one output in a thousand; the search looks for it
VERBS = ["Explain", "Write", "List", "Describe", "Summarize", "Translate", "Compare", "Classify", "Give", "Rewrite"]
STAGES = {
    "heuristic": ["too short", "non-text modality (draw)"],
    "novelty": ["rouge-l above 0.7"],
    "dedup": ["near duplicate (minhash)"],
    "judge": ["score below 4"],
}


def _sentences(rng: np.random.Generator, n: int = 4096) -> list[str]:
    vocabulary = ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), rng.integers(2, 10))) for _ in range(3000)]
    return [" ".join(rng.choice(vocabulary, rng.integers(6, 20))).capitalize() + "." for _ in range(n)]


def _records(rng: np.random.Generator, pool: pl.Series, n: int, run: str, start: int) -> pl.DataFrame:
    """`n` records of run `run`: unique ids and texts (no Parquet dictionary makes them cheap)."""
    picks = {f"s{k}": pool.gather(rng.integers(0, len(pool), n)) for k in range(8)}
    ids = [hashlib.blake2b(str(i).encode(), digest_size=10).hexdigest() for i in range(start, start + n)]
    base = pl.DataFrame(
        {
            **picks,
            "id": ids,
            "verb": rng.choice(VERBS, n),
            "has_input": rng.random(n) < 0.4,
            "length": rng.integers(40, 900, n),
            "needle": rng.random(n) < 0.001,
            "generator": rng.choice(["self_instruct", "evol_instruct", "backtranslation"], n),
            "language": rng.choice(["en", "zh", "de", "fr"], n, p=[0.7, 0.1, 0.1, 0.1]),
            "ability": rng.choice(["math", "coding", "writing", "reasoning", "knowledge"], n),
        }
    )
    output = pl.concat_str([pl.col(f"s{k}") for k in range(2, 8)], separator=" ").str.slice(0, pl.col("length"))
    frame = base.select(
        "id",
        instruction=pl.concat_str("verb", pl.col("s0").str.to_lowercase(), separator=" "),
        input=pl.when("has_input").then("s1").otherwise(pl.lit("")),
        output=pl.when("needle").then(pl.format("{} {}", output, pl.lit(NEEDLE))).otherwise(output),
        generator="generator",
        run_id=pl.lit(run),
        language="language",
        ability="ability",
    )
    return frame.with_columns(
        messages=pl.concat_list(
            pl.struct(role=pl.lit("user"), content="instruction"),
            pl.struct(role=pl.lit("assistant"), content="output"),
        ),
        created_at=pl.lit(0).cast(pl.Datetime("us", "UTC")),
    )


def _conform(frame: pl.DataFrame, schema: pl.Schema) -> pl.DataFrame:
    return frame.select(
        pl.col(name).cast(dtype) if name in frame.columns else pl.lit(None, dtype).alias(name)
        for name, dtype in schema.items()
    )


def _write(root: Path, rel: str, frame: pl.DataFrame, kind: str, run: str) -> ShardInfo:
    file = root / rel
    frame.write_parquet(file, compression="zstd", statistics=True)
    data = file.read_bytes()
    return ShardInfo(
        path=rel,
        kind=kind,
        rows=frame.height,
        bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        run_id=run,
        batch=0,
    )  # type: ignore[arg-type]


def build(root: Path, records: int, rejects: int) -> None:
    """Write the dataset: per run, a few kept shards and one of rejects; then the manifest."""
    rng = np.random.default_rng(0)
    pool = pl.Series(_sentences(rng))
    for folder in SHARD_DIRS.values():
        (root / folder).mkdir(parents=True, exist_ok=True)
    manifest = Manifest(dataset_id=uuid.uuid4().hex)
    kept_per_shard = -(-records // (RUNS * KEPT_SHARDS_PER_RUN))
    rejects_per_run = -(-rejects // RUNS)
    start = 0
    for r in range(RUNS):
        run = f"run{r}"
        info = RunInfo(run_id=run, generator="self_instruct", config={}, engine={}, model="bench", status="finished")
        for part in range(KEPT_SHARDS_PER_RUN):
            n = max(0, min(kept_per_shard, records - start))
            frame = _conform(_records(rng, pool, n, run, start), shard_schema("kept"))
            manifest.shards.append(_write(root, f"data/{run}-b00000-{part:03d}.parquet", frame, "kept", run))
            start, info.kept = start + n, info.kept + n
        n = max(0, min(rejects_per_run, rejects - r * rejects_per_run))
        frame = _records(rng, pool, n, run, 10**9 + r * rejects_per_run)
        stage = rng.choice(list(STAGES), n, p=[0.4, 0.2, 0.3, 0.1])
        reason = [STAGES[s][i % len(STAGES[s])] for i, s in enumerate(stage)]
        phase = np.where(np.isin(stage, ["heuristic", "novelty"]), "generation", "curation")
        frame = frame.with_columns(stage=pl.Series(stage), reason=pl.Series(reason), phase=pl.Series(phase))
        manifest.shards.append(
            _write(root, f"rejects/{run}-b00000-000.parquet", _conform(frame, shard_schema("rejects")), "rejects", run)
        )
        info.rejected, info.batches_done = n, 1
        manifest.runs[run] = info
    (root / MANIFEST).write_text(manifest.model_dump_json(indent=2))
    (root / f"bench-format-{FORMAT}").touch()


def _time(call: Callable[[], object], calls: int) -> tuple[float, float]:
    """Seconds of the first call and the median of the `calls` after it."""
    times = []
    for _ in range(calls + 1):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times[0], statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000, help="kept records")
    parser.add_argument("--rejects", type=int, default=200_000, help="rejects")
    parser.add_argument("--calls", type=int, default=3, help="timed calls per page after the first")
    parser.add_argument(
        "--dir", type=Path, default=None, help="dataset folder (default: one in the temp folder, reused)"
    )
    args = parser.parse_args()
    root = args.dir or Path(tempfile.gettempdir()) / f"synth-viewer-bench-{args.records}-{args.rejects}"
    if not (root / f"bench-format-{FORMAT}").exists():
        start = time.perf_counter()
        build(root, args.records, args.rejects)
        print(f"built {root} in {time.perf_counter() - start:.1f} s")
    manifest = Manifest.model_validate_json((root / MANIFEST).read_text())
    size = sum(s.bytes for s in manifest.shards) / 2**20
    print(
        f"dataset: {manifest.rows('kept'):,} kept, {manifest.rows('rejects'):,} rejects, {len(manifest.shards)} shards, {size:,.0f} MiB"
    )

    from starlette.testclient import TestClient

    from synth.viewer import create_app
    from synth.viewer.queries import PAGE_SIZE, ListQuery

    start = time.perf_counter()
    client = TestClient(create_app([root]))
    print(f"app created in {time.perf_counter() - start:.2f} s")
    files = {kind: [str(root / s.path) for s in manifest.shards if s.kind == kind] for kind in ("kept", "rejects")}
    # Each page with the query the app builds for it: the baseline filters with the same expression.
    pages = [
        ("first page", "/d/0/records?kind=kept", ListQuery("kept")),
        ("page 1000", "/d/0/records?kind=kept&page=1000", ListQuery("kept", page=1000)),
        ("rejects, stage=dedup", "/d/0/records?kind=rejects&stage=dedup", ListQuery("rejects", {"stage": "dedup"})),
        (f"search {NEEDLE!r}", f"/d/0/records?kind=kept&q={NEEDLE}", ListQuery("kept", text=NEEDLE)),
    ]
    record_id = pl.scan_parquet(files["kept"][-1]).select("id").tail(1).collect().item()
    print(f"{'page':<28} {'first s':>8} {'median s':>9} {'raw s':>8} {'ratio':>7}")
    for name, url, query in pages:

        def ours(url: str = url) -> None:
            response = client.get(url)
            assert response.status_code == 200, response.text[-500:]

        def raw(query: ListQuery = query) -> None:
            frame = pl.scan_parquet(files[query.kind])
            condition = query.condition()
            frame = frame if condition is None else frame.filter(condition)
            frame.slice((query.page - 1) * PAGE_SIZE, PAGE_SIZE).collect()

        first, median = _time(ours, args.calls)
        _, baseline = _time(raw, args.calls)
        print(f"{name:<28} {first:8.3f} {median:9.3f} {baseline:8.3f} {median / baseline:6.2f}x")
    for name, url in (("record page (by id)", f"/d/0/record?id={record_id}"), ("overview (index)", "/")):
        first, median = _time(lambda url=url: client.get(url).raise_for_status(), args.calls)
        print(f"{name:<28} {first:8.3f} {median:9.3f} {'':>8} {'':>7}")
    print("goal: under 1 s per page (median)")


if __name__ == "__main__":
    main()
