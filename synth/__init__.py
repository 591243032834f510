"""synth: manufacture and curate instruction-tuning data with a local model."""

__version__ = "0.1.0"
