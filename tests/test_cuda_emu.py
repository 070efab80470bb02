"""Tests of the CUDA emulator itself (issue 11, items 4 and 6).

tests/emu/emu_selftest.cu holds ordinary CUDA kernels and a main() that runs one named
scenario. It is compiled here, once per session, with the host C++ compiler exactly as
setup.py compiles the emulated gpuaccel._cuda (the .cu as C++, csrc/cuda/emu first on the
include path, -DGA_CUDA_EMU=1, linked with emu_runtime.cpp and emu_cublas.cpp), and once
more with AddressSanitizer. Each test runs the program as a subprocess under the
emulator's settings (GPUACCEL_EMU_SCHEDULE, _SMS, _MEMORY, _WORKERS) and checks what it
prints. Nothing here needs a GPU, nvcc or the emulated gpuaccel._cuda, and no test kernel
ships in the package.

Every check is one that can fail: each was seen failing against an emulator broken on
purpose (a no-op __syncthreads, a wrong shuffle lane, memory left readable, limits off by
one, ...), and the races are checked against their atomic / barrier-correct twins.
"""
import os
import re
import shutil
import signal
import subprocess
import threading

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = os.path.join("tests", "emu", "emu_selftest.cu")  # relative: __FILE__ in the messages
EMU_DIR = os.path.join("csrc", "cuda", "emu")
EMU_SOURCES = [os.path.join(EMU_DIR, "emu_runtime.cpp"), os.path.join(EMU_DIR, "emu_cublas.cpp")]
# setup.py's emu_compile flags (setup.py runs setup() when imported, so they are repeated
# here) at -O1, as its GPUACCEL_SANITIZE build, and without its -O3 -march=native
# -ffp-contract=fast: these tests check the emulator's semantics, not its speed.
FLAGS = ["-std=c++17", "-O1", "-pthread", "-Wall", "-Wno-unused-parameter", "-Wno-unused-function",
         "-Wno-unknown-pragmas", "-Wno-sign-compare", f"-I{EMU_DIR}", "-Icsrc", "-DGA_CUDA_EMU=1"]
ASAN_FLAGS = ["-fsanitize=address", "-fno-omit-frame-pointer", "-g"]
SCHEDULES = ["forward", "reverse", "random:1", "random:12345"]
CUDA = {"success": 0, "invalid_value": 1, "memory_allocation": 2, "invalid_configuration": 9,
        "not_ready": 600, "launch_failure": 719}
# The environment of the tests' own processes is not the program's: a run of the suite
# on the emulated module sets the emulator's knobs, `make test-asan` preloads libasan and
# logs its reports. None of it may reach the compiler or the self-test.
FOREIGN = ("GPUACCEL_EMU_", "ASAN_", "LSAN_", "UBSAN_", "LD_PRELOAD")


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN)}
    env.update({k: str(v) for k, v in extra.items() if v is not None})
    return env


def compile_cmd(cxx, out, asan):
    return ([cxx] + FLAGS + (ASAN_FLAGS if asan else []) + ["-x", "c++", SOURCE, "-x", "none"]
            + EMU_SOURCES + ["-o", out])


class Builds:
    """The two builds, compiled in parallel (a thread each) the first time either is asked for."""

    def __init__(self, tmp):
        self.cxx = shutil.which(os.environ.get("CXX", "c++"))
        self.tmp = tmp
        self.results = {}
        self.threads = {}
        if self.cxx:
            for asan in (False, True):
                t = threading.Thread(target=self._build, args=(asan,), daemon=True)
                t.start()
                self.threads[asan] = t

    def _build(self, asan):
        out = os.path.join(self.tmp, "emu_selftest_asan" if asan else "emu_selftest")
        cmd = compile_cmd(self.cxx, out, asan)
        try:
            res = subprocess.run(cmd, cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=300)
            self.results[asan] = (out, res.returncode, " ".join(cmd), res.stdout + res.stderr)
        except subprocess.TimeoutExpired as e:
            self.results[asan] = (out, -1, " ".join(cmd), f"timed out: {e}")

    def get(self, asan):
        if not self.cxx:
            pytest.skip(f"no C++ compiler ({os.environ.get('CXX', 'c++')!r} is not on PATH): "
                        "the emulator self-test is built with the host compiler")
        self.threads[asan].join()
        out, rc, cmd, log = self.results[asan]
        if rc != 0:
            if asan and not asan_available(self.cxx):
                pytest.skip(f"{self.cxx} cannot link -fsanitize=address (no ASan runtime)")
            pytest.fail(f"building the emulator self-test failed ({rc}):\n{cmd}\n{log}")
        return out


def asan_available(cxx):
    probe = subprocess.run([cxx, "-fsanitize=address", "-x", "c++", "-", "-o", os.devnull],
                           input="int main() { return 0; }\n", capture_output=True, text=True, env=clean_env())
    return probe.returncode == 0


@pytest.fixture(scope="session")
def builds(tmp_path_factory):
    return Builds(str(tmp_path_factory.mktemp("emu_selftest")))


@pytest.fixture(scope="session")
def selftest(builds):
    return builds.get(asan=False)


@pytest.fixture(scope="session")
def selftest_asan(builds):
    return builds.get(asan=True)


class Run:
    def __init__(self, args, proc):
        self.args, self.rc, self.out, self.err = args, proc.returncode, proc.stdout, proc.stderr
        self.values = {}
        self.message = self.name = None
        for line in self.out.splitlines():
            if line.startswith("RESULT "):
                self.values.update(kv.split("=", 1) for kv in line.split()[1:])
            elif line.startswith("MESSAGE "):
                self.message = line[len("MESSAGE "):]
            elif line.startswith("NAME "):
                self.name = line[len("NAME "):]

    def __getitem__(self, key):
        assert key in self.values, f"no {key} in the output of {self}"
        return self.values[key]

    def int(self, key):
        return int(self[key])

    def ints(self, key):
        return [int(v) for v in self[key].split(",")]

    def __str__(self):
        return (f"emu_selftest {' '.join(self.args)} (exit {self.rc})\n--- stdout\n{self.out}"
                f"--- stderr\n{self.err[-4000:]}")


def run(binary, *args, schedule="forward", workers=1, sms=None, memory=None, ok=True, timeout=60, leaks=False):
    """Runs one scenario. workers=1: the blocks run one after another, so every result is
    a function of the schedule alone. ok=True: it must exit 0 with a RESULT line.
    leaks: LeakSanitizer on (ASan build)."""
    env = clean_env(GPUACCEL_EMU_SCHEDULE=schedule, GPUACCEL_EMU_WORKERS=workers, GPUACCEL_EMU_SMS=sms,
                    GPUACCEL_EMU_MEMORY=memory, ASAN_OPTIONS=f"detect_leaks={int(leaks)}:abort_on_error=0")
    # no core files from the scenarios that die of SIGSEGV (exec: the signal is the program's)
    cmd = ["sh", "-c", 'ulimit -c 0; exec "$0" "$@"', binary, *args]
    proc = subprocess.run(cmd, cwd=os.path.dirname(binary), env=env, capture_output=True, text=True,
                          timeout=timeout)
    r = Run(args, proc)
    if ok:
        assert r.rc == 0 and r.values, str(r)
    return r


def source_line(marker):
    """Line number of the self-test source line carrying `// DIAG:<marker>`."""
    with open(os.path.join(ROOT, SOURCE)) as f:
        lines = [i for i, text in enumerate(f, 1) if f"DIAG:{marker}" in text]
    assert len(lines) == 1, marker
    return lines[0]


# ------------------------------------------------------------------ 1. barriers
@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("variant", ["reverse", "shift"])
def test_shared_memory_with_barrier_is_right_under_every_schedule(selftest, variant, schedule):
    for workers in (1, 3):
        r = run(selftest, "barrier", variant, schedule=schedule, workers=workers)
        assert r.int("wrong") == 0 and r.int("total") == 1024, str(r)


def test_missing_barrier_gives_a_wrong_answer(selftest):
    """The block reverses its slice through shared memory without __syncthreads: the
    threads that run first read slots nobody has written yet (stale or zero)."""
    wrong = {s: run(selftest, "barrier", "reverse_racy", schedule=s).int("wrong") for s in SCHEDULES}
    assert wrong["reverse"] > 0 and wrong["random:1"] > 0 and wrong["random:12345"] > 0, wrong
    assert wrong["forward"] > 0, wrong  # half the slots, under any order of the threads


def test_missing_barrier_hidden_by_forward_order_shows_under_the_others(selftest):
    """Each thread reads its left neighbour's slot without __syncthreads: in the forward
    order the neighbour has always run already (as in a lockstep warp on a GPU, usually),
    so only a non-default schedule exposes the bug."""
    assert run(selftest, "barrier", "shift_racy", schedule="forward").int("wrong") == 0
    for s in ("reverse", "random:1", "random:12345"):
        r = run(selftest, "barrier", "shift_racy", schedule=s)
        assert r.int("wrong") > 100, (s, str(r))


# ------------------------------------------------------------------ 2. warp collectives
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_warp_shuffles_and_votes_are_exact(selftest, schedule):
    """__shfl_xor_sync butterfly (32 lanes and 8-lane segments, int and float),
    __shfl_down_sync tree, __shfl_up_sync scan, __shfl_sync from lane 5 of each 16-lane
    segment, __ballot_sync, __any_sync, __all_sync: two warps, every value checked."""
    r = run(selftest, "warp", schedule=schedule)
    assert r.int("mismatches") == 0, r.message or str(r)
    assert r.int("lane0_sum") == sum((i * 37 + 11) % 101 + 1 for i in range(32))
    assert r.int("warp1_bcast") == (53 * 37 + 11) % 101 + 1  # thread 52 reads lane 21 = thread 53


# ------------------------------------------------------------------ 3. races
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_shared_counter_race_loses_updates_and_atomic_does_not(selftest, schedule):
    """Every thread reads a shared counter, meets __syncwarp, writes value + 1: the
    emulator switches threads at the collective, so all read before any writes (a lost
    update per thread). atomicAdd on the same counter, and on one global counter from 64
    blocks run in parallel on host threads, counts exactly."""
    r = run(selftest, "race", schedule=schedule, workers=3)
    assert r.ints("atomic") == [r.int("expected")] * 3, str(r)
    assert r.int("global_atomic") == r.int("global_expected"), str(r)
    assert all(c != r.int("expected") for c in r.ints("racy")), str(r)
    assert r.ints("racy") == [1, 1, 1], str(r)


def test_write_write_race_winner_follows_the_schedule(selftest):
    """Every thread of a block stores its index to one shared int: which store survives
    is the schedule's choice (the last thread to run)."""
    winners = {s: run(selftest, "race", schedule=s).ints("winner") for s in SCHEDULES}
    assert winners["forward"] == [255] * 3 and winners["reverse"] == [0] * 3, winners
    assert len({tuple(w) for w in winners.values()}) == len(SCHEDULES), winners
    assert run(selftest, "race", schedule="random:1").ints("winner") == winners["random:1"]  # reproducible


# ------------------------------------------------------------------ 4. order-dependent float sum
def test_arrival_order_float_sum_differs_between_schedules(selftest):
    """atomicAdd of 1e8 and 255 ones into a shared float: after 1e8 every 1 is lost
    (forward), before it they add up (reverse). Same schedule, same bits."""
    bits = {s: run(selftest, "float_order", schedule=s)["bits"] for s in SCHEDULES}
    assert bits["forward"] == "0x4cbebc20"  # 100000000
    assert bits["reverse"] == "0x4cbebc40"  # 100000256: 1e8 + 255 rounded
    assert bits["forward"] != bits["reverse"]
    assert run(selftest, "float_order", schedule="random:1")["bits"] == bits["random:1"]


# ------------------------------------------------------------------ 5. out-of-bounds device writes
def test_write_one_past_the_end_is_reported_by_asan(selftest_asan):
    """Element 1000 of a 1000-float cudaMalloc: inside the allocation's 256-byte rounding,
    so no guard page catches it; the ASan build poisons that slack and reports the write.
    Element 999, the last one, is clean."""
    good = run(selftest_asan, "oob_write", "999")
    assert "AddressSanitizer" not in good.err and good["last"] == "7", str(good)
    bad = run(selftest_asan, "oob_write", "1000", ok=False)
    assert bad.rc != 0 and "ERROR: AddressSanitizer" in bad.err, str(bad)
    assert "WRITE of size 4" in bad.err and "store_one" in bad.err, str(bad)
    assert "RESULT" not in bad.out


def test_write_one_past_the_end_goes_unseen_without_asan(selftest):
    """The same write in the plain build: nothing catches it (this is what the ASan build is for)."""
    r = run(selftest, "oob_write", "1000")
    assert r["last"] == "0", str(r)


def test_write_far_past_the_end_faults_without_asan(selftest):
    """Element 1100 (byte 4400) lies in the PROT_NONE guard page after the allocation's
    4096 bytes: the plain build dies of SIGSEGV inside the kernel."""
    r = run(selftest, "oob_write", "1100", ok=False)
    assert r.rc == -signal.SIGSEGV, str(r)
    assert "STEP writing element 1100" in r.out and "RESULT" not in r.out, str(r)
    # the emulator's fault diagnosis says what it was before the process dies
    assert "400 bytes past the end of a 4000-byte device allocation" in r.err, str(r)


@pytest.mark.parametrize("scenario", [("barrier", "reverse"), ("warp",), ("race",), ("streams",),
                                      ("uninit",), ("diag_barrier",), ("diag_shuffle",)])
def test_correct_programs_are_clean_under_asan(selftest_asan, scenario):
    """The control for the ASan report: the emulator itself (fibers, their stacks, guard
    pages, threads abandoned at a diagnosed fault) gives ASan and LSan nothing to report."""
    r = run(selftest_asan, *scenario, schedule="random:3", workers=2, leaks=True)
    assert "Sanitizer" not in r.err, str(r)


# ------------------------------------------------------------------ 6. host access, unwritten memory
def test_host_dereference_of_a_device_pointer_faults(selftest):
    """Device memory is PROT_NONE outside device work: the host's read dies of SIGSEGV."""
    r = run(selftest, "host_deref", ok=False)
    assert "STEP dereferencing" in r.out, str(r)
    assert r.rc == -signal.SIGSEGV and "RESULT" not in r.out, str(r)
    assert "host code read or wrote device memory" in r.err and "outside device work" in r.err, str(r)


def test_unwritten_device_memory_reads_as_nan(selftest):
    r = run(selftest, "uninit")
    n, half = r.int("n"), r.int("half")
    assert r.int("fresh_ff") == n, str(r)  # a new allocation: all bytes 0xFF
    assert r.int("written") == half  # what the kernel wrote
    assert r.int("nan_rest") == r.int("ff_rest") == n - half, str(r)  # the rest: NaN, 0xFFFFFFFF
    assert r.int("realloc_ff") == n, str(r)  # freed and allocated again: not the old data
    assert r.int("memset_zeros") == n


# ------------------------------------------------------------------ 7. deferred streams
def test_streams_are_deferred_until_a_synchronising_call(selftest):
    r = run(selftest, "streams")
    assert r.int("query_before") == CUDA["not_ready"] and r.int("query_after") == CUDA["success"], str(r)
    # pinned source overwritten before the sync: the device sees the new data (the bug shows)
    assert r["pinned_seen"] == r["pinned_seen_last"] == "2", str(r)
    # pageable source: taken at the call
    assert r["pageable_seen"] == "1", str(r)
    # device-to-pinned copy after a kernel: nothing arrives before the sync
    assert r["d2h_before"] == "2" and r["d2h_after"] == "3", str(r)
    assert r.int("event_query_before") == CUDA["not_ready"] and r.int("event_query_after") == 0, str(r)
    assert r.int("elapsed_before") == CUDA["not_ready"], str(r)
    assert r.int("elapsed_rc") == 0 and r.int("elapsed_ms_nonneg") == 1, str(r)


def test_graphs_replay_recorded_work_and_captures_refuse_synchronisation(selftest):
    r = run(selftest, "graphs")
    assert r.int("capturing") == 1 and r.int("after_capture") == 0, str(r)  # recorded, not run
    assert r.int("after_two") == 768, str(r)  # ((0 + 64) * 3 + 64) * 3: two launches, in order
    assert r.int("sync_rc") == 900 and r.int("end_rc") == 901, str(r)  # unsupported, then invalidated
    assert r.int("bad_null") == 1 and r.int("after") == 0, str(r)
    assert r.int("final") == 768, str(r)  # the spoiled capture ran nothing


# ------------------------------------------------------------------ 8. launch limits
def test_launch_limits_give_cuda_error_codes(selftest):
    r = run(selftest, "limits")
    bad = {"threads1025": "invalid_configuration", "threads33x32": "invalid_configuration",
           "blockz65": "invalid_configuration", "gridy65536": "invalid_configuration",
           "gridz65536": "invalid_configuration", "gridx0": "invalid_configuration",
           "shared48k1": "invalid_value"}
    for case, err in bad.items():
        assert r.int(case) == CUDA[err], (case, str(r))
        assert r.int(case + "_after") == 0, (case, "cudaGetLastError clears it", str(r))
    for case in ("threads1024", "blockz64", "gridy65535", "shared48k"):  # at the limits: fine
        assert r.int(case) == 0 and r.int(case + "_after") == 0, (case, str(r))
    assert r.int("sync") == 0 and r.int("ran") == r.int("expected_ran") == 1024 + 64 + 65535 + 64, str(r)


def test_unknown_schedule_fails_the_launch(selftest):
    r = run(selftest, "barrier", "reverse", schedule="sideways", ok=False)
    assert r.rc == 1 and "cudaErrorInvalidValue" in r.out, str(r)
    assert "expected forward, reverse or random" in r.err, str(r)


# ------------------------------------------------------------------ 9. out of memory
def test_out_of_memory_limit(selftest):
    r = run(selftest, "oom", memory="1M")
    mib = 1 << 20
    assert r.int("total") == r.int("free0") == mib, str(r)
    assert r.int("big") == r.int("last") == CUDA["memory_allocation"] and r.int("big_null") == 1, str(r)
    assert r.int("cleared") == 0  # not sticky
    assert r.int("a") == 0 and r.int("free_a") == mib - 768 * 1024
    assert r.int("b") == CUDA["memory_allocation"] and r.int("b_null") == 1, str(r)
    assert r.int("c") == 0 and r.int("e") == 0, str(r)  # after the free: 2 x 512 KiB, the whole limit
    assert r.int("over") == CUDA["memory_allocation"] and r.int("over_null") == 1, str(r)
    assert r["probe"] == "5"  # the reused memory works
    assert r.int("free_end") == mib


def test_memory_limit_default(selftest):
    assert run(selftest, "oom").int("total") == 4 << 30


# ------------------------------------------------------------------ 10. diagnostics
@pytest.mark.parametrize("schedule", ["forward", "reverse", "random:1"])
@pytest.mark.parametrize("scenario, kernel, markers, text", [
    ("diag_barrier", "divergent_barrier", ("divergent-low", "divergent-high"), "divergent barrier"),
    ("diag_shuffle", "shuffle_after_exit", ("exited-lane",), "which has exited"),
])
def test_emulator_diagnoses_undefined_kernels(selftest, schedule, scenario, kernel, markers, text):
    """Threads at different __syncthreads, or a shuffle whose mask names an exited lane:
    the launch succeeds, the next cudaDeviceSynchronize returns a sticky
    cudaErrorLaunchFailure whose text names the kernel and the source line(s)."""
    r = run(selftest, scenario, schedule=schedule)
    fail = CUDA["launch_failure"]
    assert r.int("launch") == 0, str(r)
    assert [r.int(k) for k in ("sync", "after", "last", "last2", "sync2")] == [fail] * 5, str(r)
    assert r.message and r.message.startswith("unspecified launch failure"), str(r)
    assert f"kernel {kernel}," in r.message and text in r.message, r.message
    for m in markers:
        assert f"emu_selftest.cu:{source_line(m)}" in r.message, (m, r.message)
    assert "gpuaccel CUDA emulator:" in r.err and kernel in r.err, str(r)


# ------------------------------------------------------------------ 11. the emulated device
@pytest.mark.parametrize("sms, expected", [(None, 132), (1, 1), (7, 7)])
def test_sm_count_follows_the_setting_and_the_name_says_emulator(selftest, sms, expected):
    r = run(selftest, "device", sms=sms)
    assert r.int("sms") == r.int("prop_sms") == expected, str(r)
    assert r.int("count") == 1 and r.int("warp") == 32 and r.int("max_threads") == 1024
    assert r.int("max_shared") == 48 * 1024
    assert r.name and re.search(r"emulator", r.name, re.I) and "not a GPU" in r.name, str(r)


# ------------------------------------------------------------------ the same source under nvcc
def test_the_self_test_kernels_are_valid_cuda(tmp_path):
    """One kernel body for both builds: the self-test compiles with nvcc too (make gpu-check
    runs it on a GPU to compare the hardware's answers with the emulator's)."""
    nvcc = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if os.access("/usr/local/cuda/bin/nvcc", os.X_OK) else None)
    if nvcc is None:
        pytest.skip("nvcc not found")
    proc = subprocess.run([nvcc, "-std=c++17", "-Icsrc", "-gencode", "arch=compute_90,code=sm_90", SOURCE,
                           "-lcublas", "-o", str(tmp_path / "emu_selftest_nvcc")], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ------------------------------------------------------------------ semantics a review found wrong
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_collectives_copies_events_and_cublas_follow_cuda(selftest, schedule):
    """Each key a bug that was fixed: legal sub-warp collectives and exited lanes in a mask
    were refused; a copy just below an allocation passed as host memory; a second
    cudaFreeAsync, or a memset of memory being freed, passed; an event recorded on a bad
    stream stayed 'not ready' for ever; polling never ended; a host-to-host copy from pinned
    memory was asynchronous; cuBLAS with k == 0 and alpha = inf gave NaN, not beta * C."""
    r = run(selftest, "semantics", schedule=schedule)
    assert r.int("subwarp_ok") == 1 and r["ballot"] == "0xfffff", str(r)
    assert r.int("partial_ok") == 1 and r.int("huge_delta_ok") == 1, str(r)
    assert r.int("below") == 1 and r.int("free_twice") == 1 and r.int("memset_freed") == 1, str(r)
    assert r.int("bad_record") == 400 and r.int("query_unrecorded") == 0, str(r)  # invalid handle; 'done'
    assert 1 <= r.int("polls") <= 2, str(r)  # not done when first asked; a poll loop ends
    assert r.int("h2h_done") == 1 and r.int("k0_ok") == 1, str(r)


def test_write_below_an_allocation_is_diagnosed(selftest):
    """Element -1 of a page-aligned allocation lies in the guard page below it."""
    r = run(selftest, "oob_write", "-1", ok=False)
    assert r.rc == -signal.SIGSEGV, str(r)
    assert "4 bytes before a 4000-byte device allocation" in r.err, str(r)
