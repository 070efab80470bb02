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


needs_mpi = pytest.mark.skipif(bool(_skip_reason()), reason=_skip_reason() or "ok")


def _open_mpi_major():
    try:
        text = subprocess.run(["mpirun", "--version"], capture_output=True, text=True, timeout=30).stdout
        return int(text.split("Open MPI)")[1].split(".")[0]) if "Open MPI)" in text else 0
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return 0


def mpirun(mode, out, device="cpu", np_=2, env=None, limit=HARD_LIMIT_S, extra=()):
    """Runs the worker on np_ ranks; (returncode, seconds, output). Killed after `limit` s."""
    cmd = ["mpirun", "-np", str(np_), "--oversubscribe", "--bind-to", "none", *extra]
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


@needs_mpi
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
    # validation is global (the same on both ranks); only rank 0 prints, checkpoints, logs, saves
    assert r0["val_loss"] == r1["val_loss"] and len(r0["val_loss"]) == 2
    np.testing.assert_allclose(r0["ckpt_val"][0], r0["val_loss"][1], rtol=1e-5)
    assert text.count("Epoch 1/2") == 1, text[-3000:]
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["ckpt-1.npz", "ckpt-2.npz", "log.csv", "saved-by-0.npz", "equal-0.json", "equal-1.json"])


@needs_mpi
def test_mismatched_batch_size_is_refused(tmp_path):
    rc, _, text = mpirun("mismatch", tmp_path)
    assert rc == 0, text[-3000:]
    for r in (0, 1):
        res = load(tmp_path, "mismatch", r)
        assert res["raised"] == "ValueError", res
        assert "batch size" in res["message"] and "disagree" in res["message"], res["message"]


@needs_mpi
def test_stalled_rank_times_out(tmp_path):
    rc, seconds, text = mpirun("stall", tmp_path, env={"GPUACCEL_DIST_TIMEOUT": "3", "STALL_S": "40"})
    assert rc != 0, text[-3000:]
    res = load(tmp_path, "stall", 0)
    assert res["raised"] == "RuntimeError" and "timed out" in res["message"], res
    assert res["seconds"] < 30, res
    assert seconds < 60, (seconds, text[-3000:])


@needs_mpi
@pytest.mark.parametrize("how", ["kill", "raise"])
def test_failed_rank_fails_the_other_within_60_s(tmp_path, how):
    """Rank 1 is SIGKILLed, or raises, mid-training: the job ends with an error within 60 s."""
    rc, seconds, text = mpirun(how, tmp_path, env={"GPUACCEL_DIST_TIMEOUT": "10"}, limit=90)
    assert rc != 0, text[-3000:]
    assert seconds < 60, (seconds, text[-3000:])
    assert not load(tmp_path, how, 0).get("finished"), "rank 0 finished training without its peer"
    if how == "raise":
        assert "rank 1 fails on purpose" in text


# ---- without mpirun: the hook in the network and the lazy import ----

def test_import_gpuaccel_does_not_load_mpi():
    code = ("import sys, gpuaccel as ga; assert 'gpuaccel._mpi' not in sys.modules; "
            "assert not ga.distributed.is_initialized() and ga.distributed.rank() == 0 "
            "and ga.distributed.world_size() == 1; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


def _small_net():
    import gpuaccel as ga
    from gpuaccel import layers as L

    m = ga.Sequential([L.Flatten(), L.Dense(7, activation="relu"), L.Dense(3)], input_shape=(1, 4, 4), seed=2)
    m.compile(ga.optimizers.SGD(0.5))
    m.build()
    return m._net


def test_grad_batch_divides_the_loss():
    """A step whose loss is divided by 2n moves plain SGD's weights half as far as one divided by n."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 1, 4, 4)).astype(np.float32)
    y = rng.integers(0, 3, 6).astype(np.int32)
    moves = []
    for div in (0, 12):
        net = _small_net()
        p0 = net.get_params()
        net.set_grad_batch(div)
        net.train_step(x, y)
        moves.append(net.get_params().astype(np.float64) - p0)
    np.testing.assert_allclose(moves[1], moves[0] / 2, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError):
        _small_net().set_grad_batch(-1)


def test_set_reducer_checks_its_argument():
    net = _small_net()
    with pytest.raises(TypeError):
        net.set_reducer(object())
    net.set_reducer(None)  # no reducer: fine


@needs_mpi
def test_reducer_capsule_in_one_process():
    """The reducer of a one-rank job (init() outside mpirun) leaves the step as it was."""
    code = """
import numpy as np, gpuaccel as ga
from gpuaccel import layers as L
ga.distributed.init()
rng = np.random.default_rng(0)
x = rng.standard_normal((64, 1, 4, 4)).astype(np.float32); y = rng.integers(0, 3, 64)
out = []
for dist in (True, False):
    m = ga.Sequential([L.Flatten(), L.Dense(7, activation="relu"), L.Dense(3)], input_shape=(1, 4, 4), seed=2)
    m.compile("adam")
    out.append(m.fit(x, y, batch_size=16, epochs=2, verbose=0, distributed=dist).history["loss"])
assert out[0] == out[1], out
print("ok", ga.distributed.world_size())
"""
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0 and "ok 1" in out.stdout, out.stdout + out.stderr


@needs_mpi
def test_raising_rank_gives_the_other_a_python_error(tmp_path):
    """With the launcher told not to end the job when a rank exits with an error, rank 0's
    own timeout turns the missing peer into a RuntimeError from fit."""
    if _open_mpi_major() != 4:
        pytest.skip("needs Open MPI 4's orte_abort_on_non_zero_status to keep mpirun from ending the job")
    rc, seconds, text = mpirun("raise", tmp_path, env={"GPUACCEL_DIST_TIMEOUT": "4"}, limit=90,
                               extra=("--mca", "orte_abort_on_non_zero_status", "0"))
    # (mpirun's own status is 0 in this mode: it was told to ignore the ranks' errors)
    assert "rank 1 fails on purpose" in text
    assert "the gradient allreduce timed out on rank 0" in text, text[-3000:]
    assert seconds < 60, seconds


@pytest.mark.parametrize("head", ["dropout", "augmentation"])
def test_rng_salt_gives_each_rank_its_own_streams(head):
    """set_rng_salt(rank) (what distributed fit sets) moves dropout masks and augmentation
    transforms to another stream, deterministically; salt 0 is the model's own stream."""
    import gpuaccel as ga
    from gpuaccel import layers as L

    x = np.random.default_rng(0).random((4, 1, 8, 8), dtype=np.float32) + 1

    def first_forward(salt):  # a fresh net of the same seed: its first training forward
        first = [L.RandomTranslation(0.3, 0.3, fill_mode="constant")] if head == "augmentation" else []
        middle = [L.Dropout(0.5)] if head == "dropout" else []
        m = ga.Sequential(first + [L.Flatten()] + middle + [L.Dense(3)], input_shape=(1, 8, 8), seed=3)
        m.compile(ga.optimizers.SGD(0.1))
        if salt is not None:
            m._net.set_rng_salt(salt)
        return m, m._net.forward(x, True)

    m, own = first_forward(None)
    np.testing.assert_array_equal(first_forward(0)[1], own)
    other = first_forward(1)[1]
    assert not np.array_equal(other, own)
    np.testing.assert_array_equal(first_forward(1)[1], other)
    assert not np.array_equal(first_forward(2)[1], other)
    np.testing.assert_array_equal(m._net.forward(x, False), m.predict(x))  # inference: no stream at all
