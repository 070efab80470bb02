# gpuaccel: the two entry points of the README, and the checks around them.
#   make run   install everything and run the main job (CPU vs GPU on Fashion-MNIST)
#   make test  install everything and run the whole test suite
PY      ?= python3
PIP     ?= $(PY) -m pip
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DATASET := /usr/share/datasets/fashion-mnist
OUT     ?= bench-out

.PHONY: deps data install run test test-asan bench gpu-check peers clean

# Debian's Fashion-MNIST (the loader can also download it, checked by SHA-256).
data:
	@if [ ! -f $(DATASET)/train-images-idx3-ubyte.gz ]; then \
	  ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist) \
	  || echo "warning: could not apt-get install dataset-fashion-mnist; the loader will try to download"; fi

deps: data
	$(PIP) install -q --upgrade "pip>=23" "setuptools>=77" wheel "numpy>=2.0" "pytest>=7" matplotlib nbclient nbformat ipykernel pytest-benchmark

install: deps
	$(PIP) install -q --no-build-isolation -e .

run: install
	$(PY) -m gpuaccel.bench --out $(OUT)

test: install
	$(PY) -m pytest -q tests

# The CPU suite under AddressSanitizer + UndefinedBehaviorSanitizer.
test-asan: deps
	GPUACCEL_SANITIZE=1 GPUACCEL_SKIP_CUDA=1 $(PY) setup.py -q build_ext --inplace --force
	ASAN_OPTIONS=detect_leaks=0 LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)" \
	  $(PY) -m pytest -q -x tests -m "not slow"
	$(PY) setup.py -q build_ext --inplace --force

bench: install
	$(PY) benchmarks/bench_gemm.py

# On a GPU machine (no registry needed): build, CUDA tests, sanitizer, benchmark.
gpu-check:
	bash benchmarks/gpu_check.sh

# The peers of issue 4 (outside the test suite): tensorflow-cpu and torch into this
# environment, for `python -m gpuaccel.bench --peers` and benchmarks/peers/.
# torch: the CPU-only wheel index when it answers, else the PyPI wheel (bigger: CUDA libs).
peers: install
	$(PIP) install -q tensorflow-cpu
	$(PIP) install -q torch --index-url https://download.pytorch.org/whl/cpu --timeout 20 --retries 0 \
	  || $(PIP) install -q torch
	$(PY) -c "import gpuaccel.peers as p; print(p.available())"

clean:
	rm -rf build *.egg-info gpuaccel/*.so $(OUT)
