# gpuaccel: the two entry points of the README, and the checks around them.
#   make run   install everything and run the main job (CPU vs GPU on Fashion-MNIST)
#   make test  install everything and run the whole test suite (CUDA tests on the emulator too)
PY      ?= python3
PIP     ?= $(PY) -m pip
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DATASET := /usr/share/datasets/fashion-mnist
OUT     ?= bench-out

.PHONY: deps data mpi install run test test-asan test-cuda-emu test-cuda-emu-asan bench gpu-check peers clean

# Debian's Fashion-MNIST (the loader can also download it, checked by SHA-256).
data:
	@if [ ! -f $(DATASET)/train-images-idx3-ubyte.gz ]; then \
	  ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist) \
	  || echo "warning: could not apt-get install dataset-fashion-mnist; the loader will try to download"; fi

# Open MPI (mpirun, and mpicc for gpuaccel._mpi: data-parallel training, tests/test_distributed.py).
mpi:
	@if ! command -v mpirun >/dev/null || ! command -v mpicc >/dev/null; then \
	  ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq openmpi-bin libopenmpi-dev) \
	  || echo "warning: could not apt-get install openmpi-bin libopenmpi-dev; gpuaccel._mpi is not built and tests/test_distributed.py skips"; fi

deps: data mpi
	@command -v c++ >/dev/null || ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq g++)
	$(PIP) install -q --upgrade "pip>=23" "setuptools>=77" wheel "numpy>=2.0" pillow "pytest>=7" "hypothesis>=6" matplotlib nbclient nbformat ipykernel pytest-benchmark

install: deps
	$(PIP) install -q --no-build-isolation -e .

run: install
	$(PY) -m gpuaccel.bench --out $(OUT)

# The whole suite, then every test that runs CUDA code again on the CUDA emulator (so the
# GPU half is tested on a machine without a GPU too).
test: install
	$(PY) -m pytest -q tests
	$(MAKE) --no-print-directory test-cuda-emu

# The CPU suite under AddressSanitizer + UndefinedBehaviorSanitizer (+ LeakSanitizer).
# Built with GPUACCEL_SANITIZE=1 GPUACCEL_SKIP_CUDA=1 in a temporary copy of the tree
# ($(ASAN_DIR)), so the working tree's normal build (gpuaccel/_C*.so, _cuda*.so) is
# never touched. Reduced suite, stated: tests/test_bench.py, tests/test_peers.py
# (benchmark / peer-framework runs), tests/test_cuda_build.py (nvcc builds) and
# tests/test_notebooks.py (their kernels run in Jupyter subprocesses, outside the
# sanitizer's reach), tests/test_cuda_emu_reports.py (Python report formatting, plots)
# tests/test_cuda_emu.py (it builds its own sanitized programs), tests/test_distributed.py (mpirun processes: Open MPI itself is not built with the sanitizer) and tests/test_wheel.py (builds an unsanitized wheel into a fresh venv) are left out, and so is the one-epoch Fashion-MNIST accuracy test (31 min under ASan);
# everything else runs, the fuzzers at full scale. Leaks: LSan runs at the exit of
# every process (exit code 0: the logs are judged instead; ASan/UBSan errors abort);
# Python's own never-freed allocations are ignored, and any leak whose stack names
# gpuaccel's code fails the target. Then a short training run
# (python tests/test_hardening.py lsan-workload) is checked again with full stacks.
# UBSan reports go to stderr (pytest --capture=sys lets C-level output through).
ASAN_DIR ?= /tmp/gpuaccel-asan
ASAN_RT   = $$(gcc -print-file-name=libasan.so)
ASAN_ENV  = LD_PRELOAD="$(ASAN_RT)" \
            UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:abort_on_error=1 \
            LSAN_OPTIONS=suppressions=$(ASAN_DIR)/lsan.supp:print_suppressions=0:exitcode=0
ASAN_OPTS = detect_leaks=1:abort_on_error=1:allocator_may_return_null=1:log_path=$(ASAN_DIR)/logs/asan
ASAN_SKIP = -k "not reference_cnn_one_epoch and not reference_cnn_20_steps and not reference_cnn_short_epoch" --ignore=tests/test_bench.py --ignore=tests/test_peers.py \
            --ignore=tests/test_cuda_build.py --ignore=tests/test_notebooks.py \
            --ignore=tests/test_cuda_emu_reports.py --ignore=tests/test_cuda_emu.py --ignore=tests/test_distributed.py \
            --ignore=tests/test_wheel.py
test-asan: deps
	rm -rf $(ASAN_DIR) && mkdir -p $(ASAN_DIR)/tree $(ASAN_DIR)/logs
	printf 'leak:libgomp\n' > $(ASAN_DIR)/lsan.supp
	cp -r csrc gpuaccel tests setup.py pyproject.toml $(ASAN_DIR)/tree/
	rm -rf $(ASAN_DIR)/tree/gpuaccel/*.so $(ASAN_DIR)/tree/gpuaccel/__pycache__ $(ASAN_DIR)/tree/tests/__pycache__
	cd $(ASAN_DIR)/tree && GPUACCEL_SANITIZE=1 GPUACCEL_SKIP_CUDA=1 $(PY) setup.py -q build_ext --inplace >/dev/null
	ldd $(ASAN_DIR)/tree/gpuaccel/_C*.so | grep -q libasan
	cd $(ASAN_DIR)/tree && PYBIN=$$($(PY) -c 'import sys; print(sys.executable)') && st=0 && \
	  export PYTHONPATH=$(ASAN_DIR)/tree $(ASAN_ENV) && \
	  ASAN_OPTIONS=$(ASAN_OPTS) $$PYBIN -c 'import gpuaccel, sys; \
	    sys.exit(0 if gpuaccel.__file__.startswith("$(ASAN_DIR)/tree/") else "not the sanitized copy: " + gpuaccel.__file__)' && \
	  { ASAN_OPTIONS=$(ASAN_OPTS) $$PYBIN -m pytest -q -p no:cacheprovider --capture=sys tests $(ASAN_SKIP) || st=1; } && \
	  { ASAN_OPTIONS=$(ASAN_OPTS)-workload:fast_unwind_on_malloc=0:malloc_context_size=40 \
	    $$PYBIN tests/test_hardening.py lsan-workload || st=1; } && \
	  { env -u LD_PRELOAD $$PYBIN tests/test_hardening.py check-sanitizer-logs $(ASAN_DIR)/logs || st=1; } && \
	  exit $$st

# The CUDA test cases on the CUDA emulator (csrc/cuda/emu/, issue 11): gpuaccel._cuda built
# from the same .cu files by the host compiler (GPUACCEL_CUDA_EMU=1) in a temporary copy of
# the tree ($(EMU_DIR)), so the working tree's build is untouched. Every test that runs CUDA
# code (GPUACCEL_TESTS=cuda, see tests/conftest.py) runs once per line of EMU_RUNS
# (schedule, emulated SM count): threads and blocks in another order, and with 1 SM every
# GEMM takes the 128x128 tiles that 132 SMs reserve for large shapes.
# Left out there: the notebooks (Jupyter subprocesses), and tests whose results cannot
# depend on the build (the emulator's own self-test program, the report formatting).
EMU_IGNORE = --ignore=tests/test_notebooks.py --ignore=tests/test_cuda_emu.py --ignore=tests/test_cuda_emu_reports.py
EMU_DIR  ?= /tmp/gpuaccel-emu
EMU_RUNS ?= random:1,132 reverse,1
EMU_COPY  = rm -rf $(1) && mkdir -p $(1)/tree $(1)/logs && \
            cp -r csrc gpuaccel tests benchmarks setup.py pyproject.toml $(1)/tree/ && \
            rm -rf $(1)/tree/gpuaccel/*.so $(1)/tree/gpuaccel/__pycache__ $(1)/tree/tests/__pycache__
EMU_CHECK = $$PYBIN -c 'import gpuaccel, sys; ok = gpuaccel.__file__.startswith("$(1)/tree/") and \
              gpuaccel.cuda.is_emulated() and gpuaccel.cuda.is_available(); \
              sys.exit(0 if ok else "not the emulated copy: " + gpuaccel.__file__)'
test-cuda-emu: deps
	@echo "== the CUDA tests on the CUDA emulator, built in $(EMU_DIR) =="
	$(call EMU_COPY,$(EMU_DIR))
	cd $(EMU_DIR)/tree && GPUACCEL_CUDA_EMU=1 $(PY) setup.py -q build_ext --inplace >/dev/null
	cd $(EMU_DIR)/tree && PYBIN=$$($(PY) -c 'import sys; print(sys.executable)') && \
	  export PYTHONPATH=$(EMU_DIR)/tree GPUACCEL_TESTS=cuda && $(call EMU_CHECK,$(EMU_DIR)) && \
	  for run in $(EMU_RUNS); do \
	    echo "== CUDA tests on the emulator: schedule $${run%,*}, $${run#*,} SM(s) =="; \
	    GPUACCEL_EMU_SCHEDULE=$${run%,*} GPUACCEL_EMU_SMS=$${run#*,} \
	      $$PYBIN -m pytest -q -p no:cacheprovider -rs tests $(EMU_IGNORE) || exit 1; \
	  done

# The same CUDA tests on the emulator built with ASan + UBSan (both gpuaccel._C and the
# emulated gpuaccel._cuda): out-of-bounds device accesses, misaligned vector loads and
# leaks in the CUDA code's host side show. Logs and leak judgement as in test-asan.
EMU_ASAN_DIR ?= /tmp/gpuaccel-emu-asan
test-cuda-emu-asan: deps
	$(call EMU_COPY,$(EMU_ASAN_DIR))
	printf 'leak:libgomp\n' > $(EMU_ASAN_DIR)/lsan.supp
	cd $(EMU_ASAN_DIR)/tree && GPUACCEL_SANITIZE=1 GPUACCEL_CUDA_EMU=1 $(PY) setup.py -q build_ext --inplace >/dev/null
	ldd $(EMU_ASAN_DIR)/tree/gpuaccel/_cuda*.so | grep -q libasan
	cd $(EMU_ASAN_DIR)/tree && PYBIN=$$($(PY) -c 'import sys; print(sys.executable)') && st=0 && \
	  export PYTHONPATH=$(EMU_ASAN_DIR)/tree GPUACCEL_TESTS=cuda GPUACCEL_EMU_SCHEDULE=forward GPUACCEL_EMU_SMS=7 \
	    $(subst $(ASAN_DIR),$(EMU_ASAN_DIR),$(ASAN_ENV)) && \
	  ASAN_OPTIONS=$(subst $(ASAN_DIR),$(EMU_ASAN_DIR),$(ASAN_OPTS)) $(call EMU_CHECK,$(EMU_ASAN_DIR)) && \
	  { ASAN_OPTIONS=$(subst $(ASAN_DIR),$(EMU_ASAN_DIR),$(ASAN_OPTS)) $$PYBIN -m pytest -q -p no:cacheprovider \
	      --capture=sys tests $(ASAN_SKIP) || st=1; } && \
	  { env -u LD_PRELOAD $$PYBIN tests/test_hardening.py check-sanitizer-logs $(EMU_ASAN_DIR)/logs || st=1; } && \
	  exit $$st

bench: install
	$(PY) benchmarks/bench_gemm.py

# On a GPU machine (no registry needed): build, CUDA tests, sanitizer, benchmark.
gpu-check:
	bash benchmarks/gpu_check.sh

# The peers of issue 4 (outside the test suite): tensorflow-cpu and torch into this
# environment, for `python -m gpuaccel.bench --peers` (models: gpuaccel/study/peer_models/).
# torch: the CPU-only wheel index when it answers, else the PyPI wheel (bigger: CUDA libs).
peers: install
	$(PIP) install -q tensorflow-cpu
	$(PIP) install -q torch --index-url https://download.pytorch.org/whl/cpu --timeout 20 --retries 0 \
	  || $(PIP) install -q torch
	$(PY) -c "import gpuaccel.peers as p; print(p.available())"

clean:
	rm -rf build *.egg-info gpuaccel/*.so $(OUT)
