"""Data-parallel training over MPI (issue 16): tests/dist_worker.py under
`mpirun -np 2 --oversubscribe`, one thread per rank.

- two ranks at a global batch of 128 give the one-process losses for 50 steps, to
  float32 reduction-order tolerance, and the same weights on both ranks after every
  epoch (checksums); also at a global batch the ranks do not divide, with a short
  last batch and two steps a call; evaluate / predict sharded and gathered;
- mismatched batch sizes are refused on every rank with a clear ValueError;
- a rank that stops calling the collectives makes the other raise RuntimeError
  (the timeout), and one killed with SIGKILL makes the other exit with an error
  within 60 s (the only thing here that is timed: a bound, not a speed).
Every mpirun has a hard limit (killed after it), so a hang fails the test instead
of CI. The 'cuda' case runs on the CUDA emulator build (make test-cuda-emu), where
the gradients go through MPI on the host."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "dist_worker.py")
HARD_LIMIT_S = 120


def _skip_reason():
    if shutil.which("mpirun") is None:
        return "mpirun not found (make deps installs openmpi-bin libopenmpi-dev)"
    import gpuaccel as ga

    if not ga.distributed.available():
        return ga.distributed.unavailable_reason()
    return ""


pytestmark = pytest.mark.skipif(bool(_skip_reason()), reason=_skip_reason() or "ok")


def mpirun(mode, out, device="cpu", np_=2, env=None, limit=HARD_LIMIT_S):
    """Runs the worker on np_ ranks; (returncode, seconds, output). Killed after `limit` s."""
    cmd = ["mpirun", "-np", str(np_), "--oversubscribe", "--bind-to", "none"]
    if os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
    cmd += [sys.executable, WORKER, mode, str(out), device]
    e = dict(os.environ, OMP_NUM_THREADS="1", GPUACCEL_CONV_KERNEL="im2col", **(env or {}))
    e.setdefault("GPUACCEL_DIST_TIMEOUT", "30")
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=e, start_new_session=True)
    try:
        text, _ = p.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        text, _ = p.communicate()
        pytest.fail(f"mpirun {mode} did not end within {limit} s:\n{text.decode(errors='replace')[-3000:]}")
    return p.returncode, time.monotonic() - t0, text.decode(errors="replace")


def load(out, mode, rank):
    with open(os.path.join(out, f"{mode}-{rank}.json")) as f:
        return json.load(f)


def _device_or_skip(device):
    if device == "cuda":
        import gpuaccel as ga

        if not ga.cuda.is_available():
            pytest.skip(f"CUDA unavailable: {ga.cuda.unavailable_reason()}")
        return "cuda:0"
    return "cpu"


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_two_ranks_match_one_process(tmp_path, device):
    dev = _device_or_skip(device)
    rc, _, text = mpirun("equal", tmp_path, dev)
    assert rc == 0, text[-3000:]
    r0, r1 = load(tmp_path, "equal", 0), load(tmp_path, "equal", 1)
    assert r0["world"] == r1["world"] == 2
    # global batch 128, 50 steps: the reported (global) losses, step by step
    assert len(r0["losses"]) == len(r0["ref_losses"]) == 50
    np.testing.assert_allclose(r0["losses"], r0["ref_losses"], rtol=2e-5, atol=1e-6)
    assert r0["losses"] == r1["losses"]  # every rank reports the same global numbers
    # the same weights on both ranks after every epoch, and the one-process weights
    assert r0["sums"] == r1["sums"] and len(r0["sums"]) == 2
    assert r0["params"] == r1["params"]
    np.testing.assert_allclose(r0["sums"], r0["ref_sums"], rtol=1e-4, atol=1e-4)
    # a global batch of 99 over 2 ranks (50 + 49), the last one 53 (27 + 26), 2 steps a call
    np.testing.assert_allclose(r0["uneven_losses"], r0["ref_uneven_losses"], rtol=2e-5, atol=1e-6)
    assert r0["uneven_sums"] == r1["uneven_sums"]
    np.testing.assert_allclose(r0["uneven_sums"], r0["ref_uneven_sums"], rtol=1e-4, atol=1e-4)
    # evaluate / predict: each rank its share, the result gathered on all
    np.testing.assert_allclose(r0["evaluate"], r0["ref_evaluate"], rtol=1e-6)
    assert r0["evaluate"] == r1["evaluate"] and r0["predict"] == r1["predict"]
    np.testing.assert_array_equal(np.array(r0["predict"]), np.array(r0["ref_predict"]))


def test_mismatched_batch_size_is_refused(tmp_path):
    rc, _, text = mpirun("mismatch", tmp_path)
    assert rc == 0, text[-3000:]
    for r in (0, 1):
        res = load(tmp_path, "mismatch", r)
        assert res["raised"] == "ValueError", res
        assert "batch size" in res["message"] and "disagree" in res["message"], res["message"]


def test_stalled_rank_times_out(tmp_path):
    rc, seconds, text = mpirun("stall", tmp_path, env={"GPUACCEL_DIST_TIMEOUT": "3", "STALL_S": "40"})
    assert rc != 0, text[-3000:]
    res = load(tmp_path, "stall", 0)
    assert res["raised"] == "RuntimeError" and "timed out" in res["message"], res
    assert res["seconds"] < 30, res
    assert seconds < 60, (seconds, text[-3000:])


def test_killed_rank_fails_the_other_within_60_s(tmp_path):
    rc, seconds, text = mpirun("kill", tmp_path, env={"GPUACCEL_DIST_TIMEOUT": "10"}, limit=90)
    assert rc != 0, text[-3000:]
    assert seconds < 60, (seconds, text[-3000:])
    assert not load(tmp_path, "kill", 0).get("finished"), "rank 0 finished training without its peer"
