"""Parquet shard store: atomic shard writes, the manifest, the dataset card and a lazy reader."""

from synth.shards.columns import shard_schema
from synth.shards.layout import MANIFEST, DatasetBusyError, DatasetError, read_manifest
from synth.shards.read import scan, verify
from synth.shards.store import DatasetWriter

__all__ = [
    "MANIFEST",
    "DatasetBusyError",
    "DatasetError",
    "DatasetWriter",
    "read_manifest",
    "scan",
    "shard_schema",
    "verify",
]
