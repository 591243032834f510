"""Data contracts shared by every layer: records, rejects, configs and the manifest."""

from synth.schemas.backtranslation import BacktranslationConfig
from synth.schemas.config import (
    DatasetConfig,
    EngineConfig,
    EngineSettings,
    EvolInstructConfig,
    OpenAIEngineConfig,
    ScriptedEngineConfig,
    SelfInstructConfig,
    VLLMEngineConfig,
    run_id,
)
from synth.schemas.files import ConfigFileError, load_config_file
from synth.schemas.manifest import SCHEMA_VERSION, Manifest, QuarantineEntry, RunInfo, ShardInfo
from synth.schemas.records import (
    Example,
    Instance,
    Message,
    Outcome,
    Provenance,
    Record,
    Reject,
    Sampling,
    SeedTask,
    content_id,
    to_messages,
)

__all__ = [
    "SCHEMA_VERSION",
    "BacktranslationConfig",
    "ConfigFileError",
    "DatasetConfig",
    "EngineConfig",
    "EngineSettings",
    "EvolInstructConfig",
    "Example",
    "Instance",
    "Manifest",
    "Message",
    "OpenAIEngineConfig",
    "Outcome",
    "Provenance",
    "QuarantineEntry",
    "Record",
    "Reject",
    "RunInfo",
    "Sampling",
    "ScriptedEngineConfig",
    "SeedTask",
    "SelfInstructConfig",
    "ShardInfo",
    "VLLMEngineConfig",
    "content_id",
    "load_config_file",
    "run_id",
    "to_messages",
]
