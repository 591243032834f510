"""Memory bounded by the batch, not by the input: records name their novelty neighbours by a short
reference (an id and a snippet), never by a copy of the pool's text, however long that text is."""

from __future__ import annotations

import functools
import json
import re
import tempfile

import pytest
from rouge_score import rouge_scorer

from synth.engines import ScriptedEngine
from synth.filters import RougeNoveltyIndex
from synth.filters.novelty import SNIPPET_CHARS, neighbor_ref, snippet, text_id
from synth.filters.novelty_filter import NoveltyFilter
from synth.generators import self_instruct
from synth.generators.seeds import MAX_SEED_CHARS, load_seed_tasks
from synth.generators.self_instruct import SelfInstructGenerator
from synth.schemas import Record, SelfInstructConfig

REF = re.compile(rf"^[^:]{{1,40}}: .{{0,{SNIPPET_CHARS + 1}}}$", re.DOTALL)
MAX_REF_CHARS = 40 + 2 + SNIPPET_CHARS + 1

_SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def long_text(i: int, words: int = 4000) -> str:
    """A pool text of ~30k characters sharing a few words with the candidates below."""
    return f"summarize the report number {i} " + " ".join(f"t{i}w{j}" for j in range(words))


def assert_short_refs(neighbors: list[str]) -> None:
    assert neighbors
    for ref in neighbors:
        assert len(ref) <= MAX_REF_CHARS and REF.match(ref), ref[:200]


def test_neighbor_refs_are_an_id_and_a_short_snippet():
    text = long_text(1)
    ref = neighbor_ref(text)
    assert ref == f"{text_id(text)}: {snippet(text)}"
    assert re.fullmatch(r"[0-9a-f]{12}", text_id(text)) and text_id(text) != text_id(long_text(2))
    assert snippet(text).endswith("…") and len(snippet(text)) <= SNIPPET_CHARS + 1
    assert text.startswith(snippet(text)[:-1])
    assert snippet("  short\n text ") == "short text"
    assert neighbor_ref("a task", "seed_7") == "seed_7: a task"
    assert neighbor_ref("a task", "x" * 500) == neighbor_ref("a task")  # a huge id is not copied either


def test_verdicts_against_a_pool_of_long_texts_hold_short_refs_and_unchanged_scores():
    pool = [long_text(i) for i in range(12)]
    candidates = ["summarize the report number 3 in two lines", "summarize the report number 3 in three lines"]
    # Every pair scored, for full lists of ten (pruned, a list holds only the texts the filter examined).
    index = RougeNoveltyIndex(threshold=0.7, neighbors_kept=10, prune=False)
    index.add(pool)
    verdicts = index.check(candidates)
    for i, v in enumerate(verdicts):
        assert_short_refs(v.neighbors)
        assert len(v.neighbors) == 10
        # The scores are ROUGE-L as before: the best one is the reference scorer's maximum.
        others = pool + candidates[:i]
        assert v.max_score == pytest.approx(max(_SCORER.score(p, v.text)["rougeL"].fmeasure for p in others))
    assert [v.kept for v in verdicts] == [True, False]
    assert verdicts[1].neighbors[0] == neighbor_ref(candidates[0])  # accepted earlier in the batch
    assert verdicts[0].neighbors[0] == neighbor_ref(pool[3])
    # The pool keeps refs, not the texts.
    assert sum(len(r) for r in index.refs) < 200 * len(index)
    # A given id names the text.
    named = RougeNoveltyIndex(threshold=0.7, prune=False)
    named.add(pool, [f"pool_{i}" if i % 2 else None for i in range(len(pool))])
    [verdict] = named.check(candidates[:1])
    assert verdict.neighbors[0] == "pool_3: " + snippet(pool[3])
    assert verdict.max_score == verdicts[0].max_score


def test_the_novelty_filter_fills_records_with_short_refs():
    pool = [long_text(i) for i in range(5)]
    records = [
        Record(generator="x", instruction="summarize the report number 1 briefly please", output="ok"),
        Record(generator="x", instruction=pool[2], output="a copy of a pool text"),
    ]
    result = NoveltyFilter(pool).apply(records)
    [kept] = result.kept
    [reject] = result.rejects
    assert kept.novelty_neighbors == []  # no pool text near enough for the prefix filter to examine
    assert_short_refs(reject.novelty_neighbors)
    assert reject.novelty_neighbors[0] == neighbor_ref(pool[2])
    assert len(reject.detail) < 200
    ids = NoveltyFilter(pool, pool_ids=[f"doc{i}" for i in range(5)]).apply(records[1:]).rejects[0]
    assert ids.novelty_neighbors[0].startswith("doc2: ")


def test_a_large_seed_file_keeps_self_instruct_records_small(tmp_path, script, monkeypatch):
    # ~0.9 MB of seeds just under the limit, and one line far over it.
    words = (MAX_SEED_CHARS - 200) // 9
    path = tmp_path / "seeds.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for i in range(60):
            text = f"Describe seed topic {i} " + " ".join(f"s{i:02d}x{j:04d}" for j in range(words))
            f.write(json.dumps({"instruction": text, "instances": [{"output": "An answer."}]}) + "\n")
        f.write(json.dumps({"instruction": "giraffes " * 200_000}) + "\n")
    seeds = load_seed_tasks(path)

    # Every pair scored, so kept records list their nearest seeds (pruned, only seeds near enough).
    monkeypatch.setattr(self_instruct, "RougeNoveltyIndex", functools.partial(RougeNoveltyIndex, prune=False))
    gen = SelfInstructGenerator(SelfInstructConfig(prompts_per_batch=2), ScriptedEngine(script), seeds, run_id="r")
    result = gen.run_batch(0)
    assert result.kept
    for r in [*result.kept, *result.rejects]:
        size = len(r.model_dump_json())
        assert size < 6_000, (r.stage if hasattr(r, "stage") else "kept", size)
        if r.novelty_neighbors:
            assert_short_refs(r.novelty_neighbors)
    assert len(seeds) == 60 and all(len(s.instruction) > MAX_SEED_CHARS // 2 for s in seeds)
    # Seed neighbours are named by their ids.
    assert any(n.startswith("seed_") for r in result.kept for n in r.novelty_neighbors)


def test_a_scripted_engine_built_from_a_config_keeps_no_request():
    # A dry run through the command line (`--engine scripted`) once kept every request it served:
    # about 5.6 KB per kept record at Self-Instruct's reply lengths, 5 GiB in a million-record run.
    from synth.engines import ChatRequest, engines_opened, get_engine
    from synth.schemas import Message, ScriptedEngineConfig

    request = ChatRequest(messages=[Message(role="user", content="x" * 10_000)])
    with engines_opened():
        engine = get_engine(ScriptedEngineConfig(model="dry-run"))
        for _ in range(3):
            assert engine.chat([request, request])[0].text == "x" * 10_000
        assert isinstance(engine, ScriptedEngine) and engine.calls == [] and engine.scored == []
    # One made in code, as tests make them, still keeps what it saw.
    kept = ScriptedEngine()
    kept.chat([request])
    assert len(kept.calls) == 1


def mapped_file(array) -> str | None:
    """The file whose mapping holds `array`'s data, as /proc/self/maps names it (None: anonymous)."""
    address = array.__array_interface__["data"][0]
    with open("/proc/self/maps") as f:
        for line in f:
            fields = line.split(maxsplit=5)
            low, high = (int(x, 16) for x in fields[0].split("-"))
            if low <= address < high:
                return fields[5].strip() if len(fields) == 6 and fields[5].strip() else None
    return None


def test_the_near_dup_index_keeps_its_arrays_in_files_next_to_the_dataset(tmp_path):
    """A long run's shingle sets and band table live in files mapped into memory, in the dataset's
    index folder: the kernel writes them back when memory is short, so the index's growth costs
    disk, not memory the run could die of. The files have no name left, so nothing outlives the run."""
    import numpy as np

    from synth.filters.dedup import MinHashIndex
    from synth.filters.minhash import from_shingles
    from synth.schemas.curation import MinHashConfig
    from synth.shards import DatasetWriter

    with DatasetWriter(tmp_path / "ds"):
        pass
    config = MinHashConfig()
    index = MinHashIndex.open(tmp_path / "ds", config)
    rng = np.random.default_rng(0)
    n, per = 20_000, 50
    for part in range(3):
        shingles = np.sort(rng.integers(0, 2**32, size=(n, per), dtype=np.uint32), axis=1).ravel()
        batch = from_shingles(shingles, np.arange(0, n * per + 1, per, dtype=np.int64), config)
        index.add([f"r{part}-{i}" for i in range(n)], batch, remember=False)
    folder = tmp_path / "ds" / "index" / "minhash"
    for array in (index._shingles, index._table, index._offsets):
        name = mapped_file(array)
        assert name is not None and name.startswith(str(folder)) and name.endswith("(deleted)"), name
    assert list(folder.iterdir()) == []
    # The arrays still answer: a record is its own near duplicate.
    row = index.rows_of([7])
    assert len(index) == 3 * n and index.duplicates(from_shingles(row.shingles, row.offsets, config))[0] == (7, 1.0)


def test_a_folder_that_cannot_be_written_spills_to_the_temporary_folder(tmp_path):
    import numpy as np

    from synth.filters.spill import Spill

    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    spill = Spill(blocked / "index")  # its parent is a file: the folder cannot be made
    array = spill.full(1000, 7, np.uint64)
    assert array.sum() == 7000 and spill.folder is None
    assert (mapped_file(array) or "").startswith(tempfile.gettempdir())
