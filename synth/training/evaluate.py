"""Proxy evaluation of a dataset: fine-tune a base model on its kept records with a fixed small budget
and seed, then compare the base's and the tuned model's loss on reference pairs the user supplies.

The loss is the mean negative log-likelihood per completion token (the reference outputs), with the
same chat template and truncation as training. Lower is better; the same budget, seed and
reference make two datasets comparable. The result is written atomically to `evaluation.json`
beside the dataset's manifest; an evaluation whose inputs have not changed is not run again.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from synth.shards.card import EVALUATION_FILE
from synth.shards.layout import is_dataset
from synth.training.answers import FOLDER as ANSWERS
from synth.training.bootstrap import standard_deviation
from synth.training.config import EvaluationConfig, identity_key, read_stored
from synth.training.data import Examples, TrainingDataError, held_out, load_examples
from synth.training.humaneval import BenchmarkScore
from synth.training.ifbench import InstructionScore
from synth.training.model import (
    Base,
    Encoded,
    EncodedSet,
    completion_loss,
    encode_for,
    load_model,
    load_tokenizer,
    resolve_base,
    working_on,
)
from synth.training.scoring import Benchmarking, Difference, Say, difference, score_benchmarks
from synth.training.sft import read_report, train

EVALUATION = EVALUATION_FILE  # beside the manifest; the dataset card shows it


class Score(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    # Mean negative log-likelihood per completion token of the reference pairs (None: no reference).
    loss: float | None = None
    perplexity: float | None = None


class Evaluation(BaseModel):
    """`evaluation.json`: what was compared, on what, and the two losses."""

    model_config = ConfigDict(extra="forbid")

    format: int = 1
    key: str
    dataset: str
    data_hash: str
    examples: int
    skipped: int
    # The reference pairs the loss is taken on ("" and zeros: benchmarks only, no loss).
    reference: str = ""
    reference_hash: str = ""
    reference_pairs: int = 0
    reference_tokens: int = 0
    reference_dropped: int = 0  # pairs with no output token within max_length
    # The system message the reference pairs were asked with: the seed-data tag of a dataset whose
    # records carry source tags (Humpback's self-training), as the paper prompts its model; else none.
    reference_system: str = ""
    overlap: int  # records left out of training because their instruction is a reference prompt
    config: dict[str, Any]
    base: Score
    tuned: Score
    improvement: float | None = None  # base loss minus tuned loss (positive: the data helped)
    # Several fine-tuning seeds (`seeds` > 1): `tuned.loss` is their mean; each seed's loss and their
    # standard deviation. A benchmark's "tuned" score is the first seed's, "tuned seed N" the others'.
    seeds: int = 1
    seed_losses: list[float] = []
    seed_spread: float | None = None
    relative_improvement: float | None = None  # of the base loss
    train_steps: int
    train_epochs: float = 0.0  # passes over the records trained on (0.0: an evaluation from before it was kept)
    train_loss: float
    train_seconds: float
    train_tokens_per_second: float
    device: str
    created_at: str
    # benchmark name -> {"base": score, "tuned": score}: HumanEval's pass@1 (`synth.training.humaneval`),
    # instruction following's accuracies (`synth.training.ifbench`)
    benchmarks: dict[str, dict[str, BenchmarkScore | InstructionScore]] = {}
    # What made both models' benchmark answers, and in what precision: "vllm (bfloat16)"
    answered_with: str = ""
    # benchmark name -> tuned minus base on its headline metric, with a 95% paired bootstrap interval
    differences: dict[str, Difference] = {}


def evaluation_key(config: EvaluationConfig, base_fingerprint: str, data: Examples, reference: Examples) -> str:
    identity = {
        "format": 1,
        "base": base_fingerprint,
        "data": data.hash(),
        "reference": reference.hash(),
        **config.identity(),
    }
    return identity_key(identity)


def read_evaluation(dataset: str | Path) -> Evaluation | None:
    return read_stored(Path(dataset) / EVALUATION, Evaluation)


def inference_system(dataset: str | Path) -> str:
    """The system message a model trained on `dataset` is asked with: where its records carry
    Humpback's source tags, the one its seed data (records tagged `seed-data`) opens with, as the
    paper prompts its final model with the seed tag; "" for a dataset without such tags."""
    import polars as pl

    from synth.shards import scan

    seeds = scan(dataset).filter(pl.col("tags").list.contains("seed-data")).select("messages").head(1).collect()
    if seeds.height == 0:
        return ""
    messages = seeds["messages"].to_list()[0] or []
    first = messages[0] if messages else None
    return str(first["content"]) if first and first.get("role") == "system" else ""


@dataclass(frozen=True)
class _Scorer:
    """Scores each model of one evaluation alike: loaded on `device` in `dtype`, its loss on the
    `reference` pairs (encoded; none: no loss) and its answers to the benchmarks `setup` names."""

    setup: Benchmarking
    device: str
    dtype: Any
    reference: list[Encoded]

    def __call__(
        self, name: str, path: str, logs: Path | None = None, answer_dtype: str = "auto"
    ) -> tuple[Score, dict[str, BenchmarkScore | InstructionScore], str]:
        """The model's loss on the reference, its score on each benchmark, and the dtype its answers
        were made in (`answer_dtype`, or the folder's own for "auto"). With `logs` (a path prefix
        naming the model), each benchmark's answers are kept in a log beside it as they are made,
        and those an unfinished run left there are read back."""
        from synth.training.answering import answer_dtype as dtype_of
        from synth.training.answering import answers_for

        config, reference = self.setup.config, self.reference
        by_transformers = config.benchmark_engine == "transformers"
        wanted = reference or (config.benchmarks and by_transformers)
        model = load_model(path, self.device, self.dtype) if wanted else None
        loss = completion_loss(model, reference, self.setup.tokenizer.pad_token_id)[0] if reference else None
        benchmarks: dict[str, BenchmarkScore | InstructionScore] = {}
        made_in = answer_dtype
        if config.benchmarks:
            if not by_transformers:
                model = None  # vLLM loads its own copy: this one's memory (a GPU's) goes back first
            tokenizer = self.setup.tokenizer
            with answers_for(config.benchmark_engine, path, model, tokenizer, answer_dtype, config.seed) as answers:
                made_in = str(self.dtype).removeprefix("torch.") if by_transformers else dtype_of(answers)
                benchmarks = score_benchmarks(name, answers, self.setup, logs)
        del model
        if loss is None:
            return Score(model=name), benchmarks, made_in
        score = Score(model=name, loss=round(loss, 6), perplexity=round(math.exp(min(loss, 50.0)), 4))
        return score, benchmarks, made_in


def evaluate_dataset(
    dataset: str | Path,
    reference: str | Path | None,
    config: EvaluationConfig | None = None,
    *,
    force: bool = False,
    progress: Say | None = None,
) -> Evaluation:
    """Evaluate the dataset directory `dataset` against the reference pairs in `reference` (a
    JSONL or Parquet file of instruction/input/output, or another dataset), write
    `evaluation.json` beside its manifest, and return it. With the same inputs as the last
    evaluation (base, data, reference, budget) the stored result is returned unless `force`.
    Without a reference there is no loss: the config must name a benchmark."""
    from synth.shards import MANIFEST, read_manifest
    from synth.shards.atomic import atomic_write_bytes
    from synth.shards.card import write_card

    config = config or EvaluationConfig()
    say = progress or (lambda line: None)
    root = Path(dataset)
    if not is_dataset(root):
        raise TrainingDataError(f"{root}: no {MANIFEST}; not a dataset directory")
    if reference is None and not config.benchmarks:
        raise TrainingDataError("nothing to measure: give reference pairs (--reference) or a benchmark (--benchmark)")
    ref = load_examples(reference) if reference is not None else Examples([], "")
    # The reference stays held out: records asking a reference prompt are not trained on.
    data, overlap = held_out(load_examples(root), ref)
    if not data.items:
        raise TrainingDataError(
            f"{root}: every record's instruction is a reference prompt; nothing is left to train on"
        )
    system = inference_system(root)
    if system:
        ref = Examples([replace(e, system=e.system or system) for e in ref.items], ref.source, ref.skipped)
    base = resolve_base(config.base)
    key = evaluation_key(config, base.fingerprint, data, ref)
    stored = read_evaluation(root)
    if stored is not None and stored.key == key and not force:
        say(f"{root / EVALUATION}: up to date (same base, data, reference and budget); not evaluated again")
        return stored

    with working_on(config.device, config.threads) as (device, _):
        evaluation = _evaluate(root, config, data, ref, base, key, device, say, overlap, system)
    atomic_write_bytes(root / EVALUATION, (evaluation.model_dump_json(indent=2) + "\n").encode("utf-8"))
    shutil.rmtree(root / ANSWERS, ignore_errors=True)  # the answers an unfinished run would reuse
    write_card(root, read_manifest(root))  # the card shows the evaluation
    if evaluation.tuned.loss is not None and evaluation.base.loss is not None:
        say(f"tuned loss {evaluation.tuned.loss:.4f} (base {evaluation.base.loss:.4f}); written to {root / EVALUATION}")
    else:
        say(f"written to {root / EVALUATION}")
    return evaluation


def _evaluate(
    root: Path,
    config: EvaluationConfig,
    data: Examples,
    ref: Examples,
    base: Base,
    key: str,
    device: str,
    say: Say,
    overlap: int,
    system: str,
) -> Evaluation:
    import torch

    if ref.items:
        tokenizer, encoded = encode_for(
            base.path, ref.items, ref.source, "forward", config.max_length, "reference pair"
        )
        say(f"scoring the base model {base.name} on {len(encoded.items)} reference pairs")
    else:
        tokenizer, encoded = load_tokenizer(base.path), EncodedSet([])
        say(f"scoring the base model {base.name} (no reference pairs: benchmarks only)")
    # Both models are scored in float32: the tuned model was saved in float32, and the comparison
    # must not mix precisions.
    # A dataset trained with a system message (Humpback's seed tag) is asked benchmarks with it too.
    # Benchmark answers are kept as they are made (see `synth.training.answers`): the base's under
    # its fingerprint and the benchmark settings, the tuned model's under the evaluation's key.
    settings = {k: v for k, v in config.identity().items() if k.startswith("benchmark")}
    base_tag = identity_key({"base": base.fingerprint, "system": system, **settings})[:16]

    score = _Scorer(Benchmarking(config, tokenizer, say, system), device, torch.float32, encoded.items)

    # The tuned model answers in the precision the base answered in (vLLM would load the tuned
    # folder, saved in float32, in float32).
    base_score, base_benchmarks, answered_in = score(base.name, base.path, root / f"{ANSWERS}/base-{base_tag}")
    done = f"base loss {base_score.loss:.4f}; " if base_score.loss is not None else ""
    name = f"{base.name} + {root.name}"
    runs: list[tuple[Any, Score, dict[str, BenchmarkScore | InstructionScore]]] = []
    for k in range(config.seeds):
        run = config.model_copy(update={"seed": config.seed + k})
        several = config.seeds > 1
        seed_note = f", seed {run.seed}" if several else ""
        say(f"{done if k == 0 else ''}fine-tuning on {len(data.items)} records ({config.budget()}{seed_note})")
        with tempfile.TemporaryDirectory(prefix="synth-evaluate-") as scratch:
            kept = config.model_dir / f"seed-{run.seed}" if several and config.model_dir else config.model_dir
            tuned_path = train(run.training(Path(kept or Path(scratch) / "tuned")), data, progress=say)
            trained = read_report(tuned_path)
            if trained is None:
                raise RuntimeError(f"{tuned_path}: the trained model has no readable training.json")
            logs = f"{ANSWERS}/tuned-{key[:16]}{f'-seed-{run.seed}' if several else ''}"
            tuned, scored, _ = score(name, str(tuned_path), root / logs, answered_in)
        runs.append((trained, tuned, scored))
    trained, tuned_score, tuned_benchmarks = runs[0]
    losses = [r[1].loss for r in runs if r[1].loss is not None]
    seed_losses: list[float] = []
    spread = None
    if config.seeds > 1 and losses:
        seed_losses, mean = losses, sum(losses) / len(losses)
        spread = round(standard_deviation(losses), 6)
        tuned_score = Score(model=name, loss=round(mean, 6), perplexity=round(math.exp(min(mean, 50.0)), 4))
    improvement = (
        base_score.loss - tuned_score.loss if base_score.loss is not None and tuned_score.loss is not None else None
    )
    # A benchmark's "tuned" is the first seed's score; "tuned seed N" are the others' (several seeds).
    benchmarks: dict[str, dict[str, BenchmarkScore | InstructionScore]] = {
        k: {"base": b, "tuned": tuned_benchmarks[k]}
        | {f"tuned seed {config.seed + i}": r[2][k] for i, r in enumerate(runs) if i > 0}
        for k, b in base_benchmarks.items()
    }
    evaluation = Evaluation(
        key=key,
        dataset=str(root),
        data_hash=data.hash(),
        examples=len(data.items),
        skipped=data.skipped,
        reference=ref.source,
        reference_hash=ref.hash(),
        reference_pairs=len(encoded.items),
        reference_tokens=sum(sum(label != -100 for label in e.labels) for e in encoded.items),
        reference_dropped=encoded.dropped,
        reference_system=system,
        overlap=overlap,
        config={"base": base.name, **config.identity()},
        base=base_score,
        tuned=tuned_score,
        improvement=round(improvement, 6) if improvement is not None else None,
        relative_improvement=round(improvement / base_score.loss, 6)
        if improvement is not None and base_score.loss
        else (0.0 if improvement is not None else None),
        train_steps=trained.steps,
        train_epochs=round(trained.epochs, 4),
        train_loss=round(sum(r[0].final_train_loss for r in runs) / len(runs), 6),
        train_seconds=round(sum(r[0].seconds for r in runs), 2),
        train_tokens_per_second=trained.tokens_per_second,
        seeds=config.seeds,
        seed_losses=seed_losses,
        seed_spread=spread,
        device=device,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        benchmarks=benchmarks,
        answered_with=f"{config.benchmark_engine} ({answered_in})" if base_benchmarks else "",
        differences={
            k: d
            for k, b in base_benchmarks.items()
            if (d := difference(b, [r[2][k] for r in runs], config.seed)) is not None
        },
    )
    return evaluation
