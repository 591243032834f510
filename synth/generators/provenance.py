"""The provenance every record of a generator carries, built in one place.

A generator makes an `Origin` once per run (its name, run id, seed and the model that writes),
and asks it for the fields of each record or reject: which batch, which template and sampling,
and the record's lineage (parent, root, operation, round, source span).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from synth.prompts import Template
from synth.schemas import Sampling


@dataclass(frozen=True)
class Origin:
    """What every record of one generator's run shares."""

    generator: str
    run_id: str
    seed: int
    model: str = ""

    def fields(
        self,
        batch: int | None = None,
        *,
        template: Template | None = None,
        sampling: Sampling | None = None,
        model: str | None = None,
        **lineage: Any,
    ) -> dict[str, Any]:
        """Keyword arguments for a `Record` or `Reject`: the run's provenance, the `template` (name
        and hash) and `sampling` that made the text where a model wrote it, `model` where another
        model than the run's wrote it, and any lineage fields (`parent_id`, `round`, ...)."""
        out: dict[str, Any] = {"generator": self.generator, "run_id": self.run_id, "seed": self.seed}
        out["model"] = self.model if model is None else model
        if batch is not None:
            out["batch"] = batch
        if template is not None:
            out["template"], out["template_hash"] = template.name, template.hash
        if sampling is not None:
            out["sampling"] = sampling
        return out | lineage


def request_seed(*parts: object) -> int:
    """A per-request sampling seed derived from the run seed and the request's place in the run."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF
