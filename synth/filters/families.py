"""Near-duplicate verdicts within a family of records: a record and the records derived from it
(`parent_id`) that share its output, such as the paraphrases of an Unnatural Instructions example,
which share their core example's input and output by construction.

Compared on their whole text, such records always look alike: the shared input and output
outweigh the instruction that sets them apart. Within a family they are therefore compared on
their instruction wording alone, the parent's input taken out wherever it sits in the prompt; a
record that is no near duplicate of its family is still checked against the dataset's index on its
whole text. Against every other record of the batch, records are compared on their whole text as
before. The parent must be in the same batch (its input is read from it); a family whose parent is
not is judged on whole texts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from synth.filters.minhash import Index, sign, similarity
from synth.schemas import Record
from synth.schemas.records import user_prompt

Verdict = tuple[int, float] | None  # (index row, or -1 - earlier batch position; similarity), or None


def family(record: Record) -> tuple[str, str]:
    return record.parent_id or record.id, record.output


def wording(record: Record, shared_input: str) -> str:
    """The record's prompt without the family's shared input."""
    prompt = user_prompt(record.instruction, record.input)
    return prompt.replace(shared_input, " ") if shared_input else prompt


def within_families(
    fresh: Sequence[Record], found: Sequence[Verdict], index: Index, text: Callable[[Record], str]
) -> list[Verdict]:
    """`found` (the whole-text verdicts of `fresh`, in batch order) with every verdict that pairs
    two members of one family judged again on their wording."""
    parents = {r.id: r for r in fresh}
    verdicts = list(found)
    kept: dict[tuple[str, str], list[int]] = {}
    for i, record in enumerate(fresh):
        key, dup = family(record), verdicts[i]
        if dup is not None and dup[0] < 0 and family(fresh[-1 - dup[0]]) == key and key[0] in parents:
            verdicts[i] = _again(i, fresh, kept.get(key, []), parents[key[0]].input, index, text)
        if verdicts[i] is None:
            kept.setdefault(key, []).append(i)
    return verdicts


def _again(
    i: int, fresh: Sequence[Record], kept: list[int], shared: str, index: Index, text: Callable[[Record], str]
) -> Verdict:
    config = index.config
    signed = sign([wording(fresh[i], shared), *(wording(fresh[m], shared) for m in kept)], config)
    for k, m in enumerate(kept, start=1):
        score = similarity(config, signed.sigs[0], signed.sigs[k], signed.shingle_set(0), signed.shingle_set(k))
        if score >= config.threshold:
            return -1 - m, score
    (hit,) = index.duplicates(sign([text(fresh[i])], config))  # one text: the index alone
    return hit
