"""Near-dedup within a family: a paraphrase shares its core's input and output, so on whole texts it
always looks like its core; it is removed only when its wording really is a near duplicate."""

from __future__ import annotations

from synth.filters.dedup import MinHashIndex, NearDedupFilter
from synth.schemas import Record
from synth.schemas.curation import MinHashConfig

INPUT = " ".join(f"town{i} has a ferry{i}" for i in range(80))  # long: it outweighs the instruction
OUTPUT = " ".join(f"point{i} is trade{i}" for i in range(60))
CORE = Record(
    generator="unnatural",
    instruction="Summarise the description of the towns in three sentences.",
    input=INPUT,
    output=OUTPUT,
)


def paraphrase(wording: str, n: int) -> Record:
    return Record(
        generator="unnatural",
        instruction=wording.replace("{INPUT}", INPUT),
        output=OUTPUT,
        parent_id=CORE.id,
        round=n,
        operation="paraphrase",
    )


REWORDED = paraphrase("Read this: {INPUT} Now give me a short three-sentence summary of what it says.", 1)
OTHER = paraphrase("What are these towns like? {INPUT} Answer in three sentences, please.", 2)
COPY = paraphrase("Summarise the description of the towns in three sentences. {INPUT}", 3)


def dedup(records, index=None):
    return NearDedupFilter(index if index is not None else MinHashIndex(MinHashConfig())).apply(records)


def test_paraphrases_are_kept_beside_their_core_unless_their_wording_is_a_copy():
    result = dedup([CORE, REWORDED, OTHER, COPY])
    assert [r.id for r in result.kept] == [CORE.id, REWORDED.id, OTHER.id]
    (copy,) = result.rejects
    assert copy.instruction == COPY.instruction and copy.stage == "dedup" and CORE.id in copy.detail


def test_on_whole_texts_alone_the_paraphrases_would_all_be_near_duplicates():
    # The same records with no link to the core: compared on their whole text, as any others.
    unlinked = [r.model_copy(update={"parent_id": None}) for r in (REWORDED, OTHER)]
    result = dedup([CORE, *unlinked])
    assert [r.id for r in result.kept] == [CORE.id] and len(result.rejects) == 2


def test_a_paraphrase_is_still_a_near_duplicate_of_a_record_already_in_the_index():
    index = MinHashIndex(MinHashConfig())
    earlier = Record(
        generator="x", instruction="Give a three-sentence summary of the towns.", input=INPUT, output=OUTPUT
    )
    assert dedup([earlier], index).kept
    index.commit()
    result = dedup([CORE, REWORDED], index)
    assert not result.kept and [r.instruction for r in result.rejects] == [CORE.instruction, REWORDED.instruction]
