"""A generator's own record block and reject stages come from its registry entry: a block given
as an object is kept, one read back as a dict is typed again, and a block or stage no generator
declares is refused where it would otherwise be lost or mistyped."""

from __future__ import annotations

import pydantic
import pytest

from synth import registry
from synth.schemas import Record, Reject
from synth.schemas.records import reject_stages
from synth.schemas.unnatural import Unnatural
from synth.shards.columns import shard_schema, to_frame
from tests.flows import toy_generator


def test_a_block_is_kept_typed_and_a_dict_of_a_registered_block_is_typed_again():
    block = Unnatural(constraints="One word.", core_id="c1", paraphrase=1)
    record = Record(generator="unnatural", instruction="Name it.", output="Oak.", unnatural=block, no_such_field=3)
    assert Unnatural.of(record) is block and record.model_dump()["unnatural"]["core_id"] == "c1"
    assert "no_such_field" not in record.model_dump()  # unknown names are ignored, as before blocks
    again = Record.model_validate_json(record.model_dump_json())
    assert isinstance(again.unnatural, Unnatural) and Unnatural.of(again) == block
    assert Unnatural.of(Record(generator="g", instruction="i")) is None
    with pytest.raises(pydantic.ValidationError, match="core_id"):
        Record(generator="unnatural", instruction="i", unnatural={"constraints": "c"})


def test_a_generators_stage_is_a_reject_stage_only_while_it_is_registered(monkeypatch):
    with pytest.raises(pydantic.ValidationError, match="unknown reject stage 'off-form'"):
        Reject(generator="toy", stage="off-form", reason="r")
    assert Reject(generator="unnatural", stage="expansion", reason="r").stage == "expansion"
    monkeypatch.setitem(registry.GENERATORS, "toy", toy_generator.ENTRY)
    assert Reject(generator="toy", stage="off-form", reason="r").stage == "off-form"
    stages = reject_stages()
    assert stages.index("parse") < stages.index("off-form") < stages.index("dedup")


def test_a_block_without_a_column_fails_the_write_instead_of_vanishing(monkeypatch):
    record = Record(generator="toy", instruction="Why?", output="Because.", toy=toy_generator.Toy(topic="t", number=1))
    with pytest.raises(ValueError, match="no column for block toy"):
        to_frame([record], shard_schema("kept"))
    monkeypatch.setitem(registry.GENERATORS, "toy", toy_generator.ENTRY)
    frame = to_frame([record], shard_schema("kept"))
    assert frame["toy"].to_list() == [{"topic": "t", "number": 1}]
    assert list(frame.columns).index("toy") == list(frame.columns).index("created_at") - 1


def test_every_blocks_card_section_is_a_well_formed_table():
    """Each registered block's card section (its own text, or the default built from its fields)
    has a heading, and every table row has as many cells as its header."""
    from synth.schemas.records import blocks

    for column, block in blocks().items():
        lines = block.card_section([])
        assert lines[1].startswith("## "), column
        table = [line for line in lines if line.startswith("|")]
        assert table and all(row.count("|") == table[0].count("|") for row in table), column
