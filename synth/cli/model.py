"""`synth prepare-model`: the embedded default model, converted once into the local cache."""

from __future__ import annotations

from rich.text import Text

from synth.cli.output import console


def prepare_model() -> None:
    """Convert the embedded default model once into the local cache (done on first use otherwise)."""
    from synth.engines.embedded import ensure_embedded_model

    path = ensure_embedded_model()
    console.print(Text(f"embedded model ready: {path}"))
