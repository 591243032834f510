"""Parquet shard store: atomic shard writes, the manifest, the dataset card and a lazy reader."""

from synth.shards.columns import RECORD_SCHEMA, REJECT_SCHEMA
from synth.shards.layout import MANIFEST, DatasetBusyError, DatasetError, read_manifest
from synth.shards.read import scan, verify
from synth.shards.store import DatasetWriter

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
