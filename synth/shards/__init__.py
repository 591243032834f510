"""Parquet shard store: atomic shard writes, the manifest, the dataset card and a lazy reader."""

from synth.shards.columns import RECORD_SCHEMA, REJECT_SCHEMA
from synth.shards.store import (
    MANIFEST,
    DatasetBusyError,
    DatasetError,
    DatasetWriter,
    read_manifest,
    scan,
    verify,
)

__all__ = [
    "MANIFEST",
    "RECORD_SCHEMA",
    "REJECT_SCHEMA",
    "DatasetBusyError",
    "DatasetError",
    "DatasetWriter",
    "read_manifest",
    "scan",
    "verify",
]
