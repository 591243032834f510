"""Config files (TOML, YAML, JSON) into validated engine configs with errors naming file and key;
record ids and chat form; the identity of a Self-Instruct run."""

from __future__ import annotations

import json

import pytest

from synth.schemas import (
    ConfigFileError,
    EngineSettings,
    OpenAIEngineConfig,
    Record,
    ScriptedEngineConfig,
    SelfInstructConfig,
    VLLMEngineConfig,
    load_config_file,
)

# --- engine config files --------------------------------------------------------------------


def test_toml_file_with_engine_table_alone_becomes_openai_engine(tmp_path):
    f = tmp_path / "server.toml"
    f.write_text(
        'kind = "openai"\nmodel = "Qwen/Qwen2.5-7B-Instruct"\nbase_url = "http://gpu-box:8000/v1"\n'
        "max_concurrency = 32\ntimeout_s = 120\nmax_retries = 4\n",
        encoding="utf-8",
    )
    settings = load_config_file(f, EngineSettings)
    engine = settings.engine
    assert isinstance(engine, OpenAIEngineConfig)
    assert engine.model == "Qwen/Qwen2.5-7B-Instruct"
    assert engine.base_url == "http://gpu-box:8000/v1"
    assert engine.max_concurrency == 32
    assert engine.max_retries == 4


def test_toml_file_with_engine_table_nested_under_engine_key(tmp_path):
    f = tmp_path / "gpu.toml"
    f.write_text(
        '[engine]\nkind = "vllm"\nmodel = "/models/x"\ntensor_parallel_size = 2\ndtype = "bfloat16"\n', encoding="utf-8"
    )
    engine = load_config_file(f, EngineSettings).engine
    assert isinstance(engine, VLLMEngineConfig)
    assert engine.model == "/models/x"
    assert engine.tensor_parallel_size == 2
    assert engine.dtype == "bfloat16"


@pytest.mark.parametrize("suffix", [".yaml", ".yml"])
def test_yaml_file_becomes_vllm_engine(tmp_path, suffix):
    f = tmp_path / f"engine{suffix}"
    f.write_text("kind: vllm\nmax_model_len: 4096\ngpu_memory_utilization: 0.5\n", encoding="utf-8")
    engine = load_config_file(f, EngineSettings).engine
    assert isinstance(engine, VLLMEngineConfig)
    assert engine.max_model_len == 4096
    assert engine.gpu_memory_utilization == 0.5


def test_yaml_file_under_engine_key_becomes_openai_engine(tmp_path):
    f = tmp_path / "engine.yaml"
    f.write_text("engine:\n  kind: openai\n  model: served-model\n  api_key_env: MY_KEY\n", encoding="utf-8")
    engine = load_config_file(f, EngineSettings).engine
    assert isinstance(engine, OpenAIEngineConfig)
    assert engine.api_key_env == "MY_KEY"


@pytest.mark.parametrize("nested", [False, True])
def test_json_file_becomes_scripted_engine(tmp_path, nested):
    table = {"kind": "scripted", "model": "dry-run"}
    f = tmp_path / "engine.json"
    f.write_text(json.dumps({"engine": table} if nested else table), encoding="utf-8")
    engine = load_config_file(f, EngineSettings).engine
    assert isinstance(engine, ScriptedEngineConfig)
    assert engine.model == "dry-run"


def test_unknown_key_raises_error_naming_file_and_key(tmp_path):
    f = tmp_path / "server.toml"
    f.write_text('kind = "openai"\nmodel = "m"\nmax_concurency = 8\n', encoding="utf-8")
    with pytest.raises(ConfigFileError) as e:
        load_config_file(f, EngineSettings)
    assert str(f) in str(e.value)
    assert "max_concurency" in str(e.value)


@pytest.mark.parametrize(
    ("name", "text", "key"),
    [
        ("a.toml", 'kind = "openai"\nmodel = "m"\nmax_concurrency = "many"\n', "max_concurrency"),
        ("b.yaml", "kind: vllm\ntensor_parallel_size: [1, 2]\n", "tensor_parallel_size"),
        ("c.json", '{"engine": {"kind": "openai", "model": "m", "timeout_s": {"s": 3}}}', "timeout_s"),
    ],
)
def test_wrong_type_raises_error_naming_file_and_key(tmp_path, name, text, key):
    f = tmp_path / name
    f.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigFileError) as e:
        load_config_file(f, EngineSettings)
    assert str(f) in str(e.value)
    assert key in str(e.value)


def test_out_of_range_value_raises_error_naming_key(tmp_path):
    f = tmp_path / "e.toml"
    f.write_text('kind = "openai"\nmodel = "m"\nmax_concurrency = 0\n', encoding="utf-8")
    with pytest.raises(ConfigFileError) as e:
        load_config_file(f, EngineSettings)
    assert str(f) in str(e.value) and "max_concurrency" in str(e.value)


def test_missing_file_raises_error_naming_file(tmp_path):
    f = tmp_path / "nowhere.toml"
    with pytest.raises(ConfigFileError) as e:
        load_config_file(f, EngineSettings)
    assert str(f) in str(e.value)


def test_non_utf8_bytes_raise_error_naming_file(tmp_path):
    f = tmp_path / "latin1.yaml"
    f.write_bytes("kind: openai\nmodel: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigFileError) as e:
        load_config_file(f, EngineSettings)
    assert str(f) in str(e.value)


def test_unparseable_file_raises_error_naming_file(tmp_path):
    f = tmp_path / "broken.toml"
    f.write_text('kind = "openai\n', encoding="utf-8")
    with pytest.raises(ConfigFileError) as e:
        load_config_file(f, EngineSettings)
    assert str(f) in str(e.value)


def test_top_level_that_is_not_a_mapping_raises_error_naming_file(tmp_path):
    f = tmp_path / "list.json"
    f.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ConfigFileError) as e:
        load_config_file(f, EngineSettings)
    assert str(f) in str(e.value)


# --- records --------------------------------------------------------------------------------


def rec(**fields) -> Record:
    fields.setdefault("generator", "test")
    return Record(**fields)


def test_record_id_is_a_content_hash_stable_for_equal_content():
    a = rec(instruction="Add the numbers.", input="2 3", output="5")
    b = rec(instruction="Add the numbers.", input="2 3", output="5", model="other", seed=9)
    assert a.id
    assert a.id == b.id


@pytest.mark.parametrize(
    "changed",
    [
        {"instruction": "Multiply the numbers."},
        {"input": "2 4"},
        {"output": "6"},
    ],
)
def test_record_id_changes_when_instruction_input_or_output_changes(changed):
    base = {"instruction": "Add the numbers.", "input": "2 3", "output": "5"}
    assert rec(**base).id != rec(**{**base, **changed}).id


def test_record_id_respects_field_boundaries():
    """Moving text from one field to another is different content."""
    assert rec(instruction="ab", input="", output="c").id != rec(instruction="a", input="b", output="c").id
    assert rec(instruction="a", input="b", output="c").id != rec(instruction="a", input="", output="bc").id


def test_explicit_record_id_is_kept():
    assert rec(id="given", instruction="x", output="y").id == "given"


def test_record_messages_are_user_then_assistant_without_input():
    r = rec(instruction="Name a color.", output="Blue.")
    assert [m.role for m in r.messages] == ["user", "assistant"]
    assert r.messages[0].content == "Name a color."
    assert r.messages[1].content == "Blue."


def test_record_messages_append_input_to_user_turn():
    r = rec(instruction="Translate to French.", input="Good morning", output="Bonjour")
    user, assistant = r.messages
    assert user.role == "user" and assistant.role == "assistant"
    assert user.content.startswith("Translate to French.")
    assert user.content.endswith("Good morning")
    assert user.content != "Translate to French.Good morning"  # the two parts are separated
    assert assistant.content == "Bonjour"


# --- shared declarations -------------------------------------------------------------------


def test_chat_and_embedding_servers_share_connection_settings_and_still_refuse_unknown_keys():
    from pydantic import ValidationError

    from synth.schemas.selection import OpenAIEmbeddingConfig

    chat, embedding = OpenAIEngineConfig(model="m"), OpenAIEmbeddingConfig(model="e")
    for name in ("base_url", "api_key_env", "timeout_s", "max_retries", "backoff_s"):
        assert getattr(chat, name) == getattr(embedding, name)
    with pytest.raises(ValidationError):
        OpenAIEmbeddingConfig(model="e", max_concurrency=2)  # the chat engine's own setting
    with pytest.raises(ValidationError):
        OpenAIEngineConfig(model="m", batch_size=2)  # the embedding engine's own setting
    with pytest.raises(ValidationError):
        OpenAIEmbeddingConfig(model="e", timeout_s=0)


def test_each_config_gets_its_own_default_sampling():
    from synth.schemas.config import SamplingConfig

    first, second = SelfInstructConfig(), SelfInstructConfig()
    assert first.task_sampling == SamplingConfig(temperature=0.7, top_p=0.5, max_tokens=1024, presence_penalty=2.0)
    assert first.task_sampling is not second.task_sampling
    assert first.classify_sampling.model_fields_set == {"temperature", "top_p", "max_tokens"}


# --- Self-Instruct run identity -------------------------------------------------------------


def test_identity_ignores_target_size_budget_and_seed_file_path():
    base = SelfInstructConfig()
    other = SelfInstructConfig(num_records=5000, max_batches=999, seeds="/some/where/seeds.jsonl")
    assert base.identity() == other.identity()


def test_identity_changes_with_seed():
    assert SelfInstructConfig(seed=0).identity() != SelfInstructConfig(seed=1).identity()


def test_identity_changes_with_generator_settings():
    assert SelfInstructConfig().identity() != SelfInstructConfig(prompts_per_batch=64).identity()
    assert SelfInstructConfig().identity() != SelfInstructConfig(rouge_threshold=0.5).identity()
