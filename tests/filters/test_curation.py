"""The curation filters: each heuristic, exact and near dedup against the dataset, the judge,
decontamination, and the chain's counts."""

from __future__ import annotations

import json
import random
import re

import numpy as np
import polars as pl
import pytest

from synth.engines import ChatRequest, Completion, ScriptedEngine
from synth.filters.decontamination import BenchmarkFileError, DecontaminationFilter
from synth.filters.dedup import IndexMismatchError, MinHashIndex, NearDedupFilter
from synth.filters.exact_dedup import ExactDedupFilter
from synth.filters.heuristics import HeuristicFilter
from synth.filters.judge import JudgeFilter
from synth.filters.minhash import signatures
from synth.filters.novelty_filter import NoveltyFilter
from synth.flows.common import commit_curated
from synth.flows.curation import build_chain
from synth.schemas import ConfigFileError, Record, Reject, RunInfo
from synth.schemas.curation import (
    CurationConfig,
    DecontaminationConfig,
    HeuristicsConfig,
    JudgeConfig,
    MinHashConfig,
)
from synth.shards import DatasetWriter, scan
from synth.shards.summary import funnel

LONG = "Explain how the water cycle moves water between the oceans, the air and the land, step by step"


def rec(
    instruction: str = LONG,
    output: str = "Water evaporates, condenses into clouds and falls as rain.",
    input: str = "",
    **kw,
) -> Record:
    return Record(generator="test", instruction=instruction, input=input, output=output, **kw)


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (rec(instruction="Hi"), "instruction under 3 words"),
        (rec(output=" ".join(["word"] * 4001)), "output over 4000 words"),
        (rec(output="Sorry, I cannot help with that."), "refusal or apology"),
        (rec(instruction="Draw a picture of the water cycle for children"), "non-text modality (draw)"),
        (rec(output="[insert answer here]"), "empty or placeholder output"),
        (rec(output="   "), "empty or placeholder output"),
        (rec(input="The same text here", output="the same  text here"), "output equals input"),
        (rec(tags=["cut-off"]), "output cut off at the token limit"),
        (rec(output="!!! ??? ### $$$ %%% ^^^ &&& ***"), "output mostly symbols"),
        (rec(output="\n".join(["the same line"] * 6 + ["other"])), "output mostly repeated lines"),
        (rec(), None),
    ],
)
def test_each_heuristic_rejects_with_its_reason(record, reason):
    result = HeuristicFilter(HeuristicsConfig()).apply([record])
    assert [r.reason for r in result.rejects] == ([reason] if reason else [])
    assert len(result.kept) == (0 if reason else 1)


def test_heuristics_are_configurable():
    lenient = HeuristicsConfig(refusals=False, min_instruction_words=1)
    assert HeuristicFilter(lenient).apply([rec(instruction="Hi", output="Sorry, I cannot help.")]).kept


def test_exact_dedup_folds_case_and_space_and_names_the_first(tmp_path):
    a, b = rec(), rec(instruction=LONG.upper().replace(" ", "  "))
    result = ExactDedupFilter().apply([a, b])
    assert result.kept == [a] and result.rejects[0].reason == "exact duplicate" and a.id in result.rejects[0].detail


def write_dataset(path, records):
    with DatasetWriter(path) as w:
        w.start_run(RunInfo(run_id="r", generator="test", config={}, engine={}))
        w.commit_batch("r", w.manifest.runs["r"].batches_done, records, [])


def test_exact_dedup_checks_against_records_already_in_the_dataset(tmp_path):
    write_dataset(tmp_path / "ds", [rec()])
    result = ExactDedupFilter(tmp_path / "ds").apply([rec(), rec(output="Something else entirely, about rain.")])
    assert len(result.kept) == 1 and result.rejects[0].reason == "exact duplicate"


def reference_jaccard(a: str, b: str, n: int = 3) -> float:
    def shingles(t):
        words = __import__("re").findall(r"\w+", t.lower())
        return {tuple(words[i : i + n]) for i in range(max(1, len(words) - n + 1))}

    x, y = shingles(a), shingles(b)
    return len(x & y) / len(x | y)


def test_signature_agreement_estimates_jaccard():
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(300)]
    config = MinHashConfig(num_perm=256)
    errors = []
    for _ in range(40):
        a = [rng.choice(vocab) for _ in range(40)]
        b = list(a)
        for _ in range(rng.randint(0, 15)):
            b[rng.randrange(len(b))] = rng.choice(vocab)
        sa, sb = signatures([" ".join(a), " ".join(b)], config)
        errors.append(abs((sa == sb).mean() - reference_jaccard(" ".join(a), " ".join(b))))
    assert np.mean(errors) < 0.04 and max(errors) < 0.15


def near_copy(text: str) -> str:
    return text + " please"


BASE = " ".join(f"token{i}" for i in range(60))


def test_near_duplicates_are_removed_within_a_batch_and_distinct_texts_kept():
    index = MinHashIndex(MinHashConfig())
    result = NearDedupFilter(index).apply(
        [rec(instruction=BASE), rec(instruction=near_copy(BASE)), rec(instruction=LONG)]
    )
    assert [r.instruction for r in result.kept] == [BASE, LONG]
    [dup] = result.rejects
    assert dup.reason == "near duplicate" and dup.detail.startswith("Jaccard 0.9") and len(index) == 2


def test_a_retried_batch_is_not_its_own_near_duplicate():
    index = MinHashIndex(MinHashConfig())
    batch = [rec(instruction=BASE), rec(instruction=LONG)]
    assert len(NearDedupFilter(index).apply(batch).kept) == 2
    again = NearDedupFilter(index).apply([*batch, rec(instruction=near_copy(LONG))])
    assert again.kept == batch and len(index) == 2
    assert again.rejects[0].detail.endswith(f"with {batch[1].id}")


def test_exact_verification_confirms_on_shingle_sets_and_estimate_on_signatures():
    words = [f"v{k}" for k in range(30)]
    a, b = " ".join(words), " ".join([*words[:-1], "other"])  # 27 of 29 word-3-grams shared: J = 27/29
    for verify in ("exact", "estimate"):
        index = MinHashIndex(MinHashConfig(verify=verify, threshold=0.9))
        result = NearDedupFilter(index).apply([rec(instruction=a, output=""), rec(instruction=b, output="")])
        [dup] = result.rejects
        score = float(dup.detail.split()[-3])
        if verify == "exact":
            assert dup.detail.startswith("Jaccard") and score == round(27 / 29, 2)
        else:
            assert dup.detail.startswith("estimated Jaccard") and abs(score - 27 / 29) < 0.1


def test_near_dedup_spans_runs_through_the_persisted_index(tmp_path):
    config = MinHashConfig()
    write_dataset(tmp_path / "ds", [rec(instruction=BASE)])
    index = MinHashIndex.open(tmp_path / "ds", config)
    assert len(index) == 1 and (tmp_path / "ds" / "index" / "minhash" / "meta.json").is_file()
    result = NearDedupFilter(index).apply([rec(instruction=near_copy(BASE))])
    assert result.kept == [] and result.rejects[0].reason == "near duplicate"
    # A second run's writer adds a record; reopening indexes only the new shard.
    write_dataset(tmp_path / "ds", [rec(instruction=LONG)])
    reopened = MinHashIndex.open(tmp_path / "ds", config)
    assert sorted(reopened.ids) == sorted([rec(instruction=BASE).id, rec(instruction=LONG).id])
    meta = json.loads((tmp_path / "ds" / "index" / "minhash" / "meta.json").read_text())
    assert meta["params"]["scheme"] == "synth-minhash-v2" and len(meta["parts"]) == 2


def test_an_index_built_with_other_parameters_is_refused_unless_rebuilt(tmp_path):
    write_dataset(tmp_path / "ds", [rec(instruction=BASE)])
    MinHashIndex.open(tmp_path / "ds", MinHashConfig())
    with pytest.raises(IndexMismatchError, match="rebuild"):
        MinHashIndex.open(tmp_path / "ds", MinHashConfig(num_perm=64))
    rebuilt = MinHashIndex.open(tmp_path / "ds", MinHashConfig(num_perm=64), rebuild=True)
    assert len(rebuilt) == 1 and rebuilt.meta()["num_perm"] == 64


def judge_engine(reply):
    return ScriptedEngine(lambda r: reply(r) if callable(reply) else reply, model_name="judge-model")


@pytest.mark.parametrize(
    ("reply", "kept", "reason"),
    [
        ('{"rationale": "solid", "score": 5}', 1, None),
        ('{"rationale": "thin", "score": 2}', 0, "score 2 below 4"),
        ("Mostly right.\nScore: 4", 1, None),
        ('{"rationale": "x", "score": 11}', 0, "unparseable judgement"),
        ("I'm sorry, I can't rate this.", 0, "unparseable judgement"),
        (Completion(text="", finish_reason="error", error="down"), 0, "engine error"),
    ],
)
def test_judge_scores_keep_or_reject_and_never_pass_what_it_cannot_read(reply, kept, reason):
    f = JudgeFilter(JudgeConfig(), judge_engine(reply))
    result = f.apply([rec()])
    assert len(result.kept) == kept
    if reason:
        [r] = result.rejects
        assert r.reason == reason and r.judge_model == "judge-model" and r.judge_rubric == f.rubric_hash
        if "unparseable" in reason:
            assert r.raw == reply
    else:
        [r] = result.kept
        assert r.judge_score >= 4 and r.judge_rubric == f.rubric_hash and r.judge_rationale


def test_judge_uses_one_batched_call_with_structured_output_and_a_custom_rubric(tmp_path):
    rubric = tmp_path / "rubric.txt"
    rubric.write_text("Score 5 if the answer mentions rain.")
    engine = judge_engine('{"rationale": "ok", "score": 5}')
    f = JudgeFilter(JudgeConfig(rubric=str(rubric)), engine)
    f.apply([rec(), rec(output="Another answer about rain and clouds.")])
    assert len(engine.calls) == 1 and len(engine.calls[0]) == 2
    request: ChatRequest = engine.calls[0][0]
    assert request.json_schema is not None and "mentions rain" in request.messages[0].content


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"Score 5 if \x1b[31mred\x1b[0m.\n", "rubric.txt:1: control character U+001B"),
        (b"Be fair.\nScore \x00 five\n", "rubric.txt:2: control character U+0000"),
        (b"Score \xff\n", "rubric.txt:1: not UTF-8 text"),
        (b" \n\n", "rubric.txt: the rubric file is empty"),
        (None, "rubric.txt: no such file"),
    ],
)
def test_a_rubric_file_that_is_not_plain_text_is_refused_naming_its_line(tmp_path, content, message):
    rubric = tmp_path / "rubric.txt"
    if content is not None:
        rubric.write_bytes(content)
    with pytest.raises(ConfigFileError, match=re.escape(message)):
        JudgeFilter(JudgeConfig(rubric=str(rubric)), judge_engine("{}"))


def test_a_rubric_files_byte_order_mark_never_reaches_the_prompt(tmp_path):
    rubric = tmp_path / "rubric.txt"
    rubric.write_bytes("\ufeffScore 5 if the answer mentions rain.\r\n".encode())
    f = JudgeFilter(JudgeConfig(rubric=str(rubric)), judge_engine('{"rationale": "ok", "score": 5}'))
    assert f.rubric == "Score 5 if the answer mentions rain."


def test_decontamination_drops_overlaps_and_reports_the_items_hit(tmp_path):
    bench = tmp_path / "bench.jsonl"
    bench.write_text(
        json.dumps({"question": "What is the boiling point of water at sea level in degrees"})
        + "\n"
        + json.dumps({"question": "Name three primary colours"})
        + "\n"
    )
    parquet = tmp_path / "b.parquet"
    pl.DataFrame({"prompt": ["translate the following sentence into french please now"]}).write_parquet(parquet)
    f = DecontaminationFilter(DecontaminationConfig(benchmarks=[str(bench), str(parquet)], ngram=6))
    leaked = rec(instruction="Tell me: what is the boiling point of water at sea level in degrees Celsius?")
    leaked2 = rec(output="Sure: translate the following sentence into french please now and then.")
    clean = rec()
    result = f.apply([leaked, clean, leaked2])
    assert result.kept == [clean]
    assert [r.detail for r in result.rejects] == ["bench.jsonl:1", "b.parquet:1"]
    assert f.hits == {"bench.jsonl:1": 1, "b.parquet:1": 1}
    with pytest.raises(BenchmarkFileError, match="no such file"):
        DecontaminationFilter(DecontaminationConfig(benchmarks=[str(tmp_path / "none.jsonl")]))


def test_novelty_filter_rejects_instructions_close_to_the_pool():
    f = NoveltyFilter([LONG], threshold=0.7)
    result = f.apply([rec(instruction=LONG + " today"), rec(instruction="Write a limerick about a cat who sails")])
    assert [r.reason for r in result.rejects] == ["ROUGE-L above 0.7"] and len(result.kept) == 1
    assert result.kept[0].novelty_rouge_l is not None


def test_build_chain_orders_filters_cheap_first_and_counts_by_stage_and_reason(tmp_path):
    bench = tmp_path / "bench.jsonl"
    bench.write_text(json.dumps({"question": "Name three primary colours of light for me"}) + "\n")
    judge = ScriptedEngine(lambda r: Completion(text=json.dumps({"rationale": "fine", "score": 5})))
    config = CurationConfig(
        novelty={"enabled": True},
        decontamination={"benchmarks": [str(bench)]},
        judge={"enabled": True},
    )
    chain, index = build_chain(config, None, engine=judge)
    assert [f.stage for f in chain.filters] == ["heuristic", "dedup", "dedup", "novelty", "decontamination", "judge"]
    assert isinstance(chain.filters[2], NearDedupFilter) and chain.filters[2].index is index
    chain, _ = build_chain(CurationConfig(), None)
    result = chain.apply([rec(), rec(), rec(instruction="Hi"), rec(instruction=BASE), rec(instruction=near_copy(BASE))])
    assert len(result.kept) == 2
    assert result.counts == {
        "heuristic": {"instruction under 3 words": 1},
        "dedup": {"exact duplicate": 1, "near duplicate": 1},
    }


def test_rejects_tell_the_generators_phase_from_the_chains(tmp_path):
    """A generator's own heuristic reject and the chain's heuristic reject share a stage name; the
    phase column and the funnel keep them apart."""
    chain, index = build_chain(CurationConfig(), tmp_path / "ds")
    own = Reject(generator="test", instruction="Hi there", stage="heuristic", reason="too short")
    with DatasetWriter(tmp_path / "ds") as w:
        w.start_run(RunInfo(run_id="r", generator="test", config={}, engine={}))
        commit_curated(w, "r", 0, chain, index, [rec(), rec(instruction="Hi")], [own])
    rejects = scan(tmp_path / "ds", "rejects").collect()
    assert sorted(rejects.select("phase", "stage").rows()) == [("curation", "heuristic"), ("generation", "heuristic")]
    rows = funnel(tmp_path / "ds").filter(pl.col("stage") == "heuristic")
    assert sorted(rows.select("phase", "count").rows()) == [("curation", 1), ("generation", 1)]


def test_a_generators_paper_chain_removes_duplicates_only_and_other_chains_keep_the_heuristics(tmp_path):
    from synth.flows.curation import build_chain
    from synth.schemas.curation import CurationConfig

    def stages(config: CurationConfig, profile: str | None) -> list[str]:
        chain, _ = build_chain(config, tmp_path / "ds", profile=profile)
        return [f.stage for f in chain.filters]

    assert stages(CurationConfig(), "paper") == ["dedup", "dedup"]
    assert stages(CurationConfig(), "small-model") == ["heuristic", "dedup", "dedup"]
    assert stages(CurationConfig(), None) == ["heuristic", "dedup", "dedup"]  # synth curate
    on = CurationConfig.model_validate({"heuristics": {"enabled": True}})
    off = CurationConfig.model_validate({"heuristics": {"enabled": False}})
    assert stages(on, "paper") == ["heuristic", "dedup", "dedup"]
    assert stages(off, None) == ["dedup", "dedup"]
