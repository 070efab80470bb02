"""Data-parallel training across processes (MPI) and GPUs (NCCL).

Launch one process per CPU socket or GPU with MPI and call `init()` first:

    mpirun -np 2 python train.py

    import gpuaccel as ga
    ga.distributed.init()
    model = ga.models.reference_cnn(seed=1)
    model.compile("adam", device=ga.distributed.device())   # 'cpu', or this rank's GPU
    model.fit(x, y, batch_size=128, epochs=5)                # distributed: on by itself after init()

Every rank holds the whole data set and the same seed. fit broadcasts rank 0's
weights, takes the same seeded permutation on every rank and gives each rank
its slice of every global batch of `batch_size` samples; each rank's loss is
divided by the global batch and the gradient block is summed over the ranks
between backward and the update (MPI_Allreduce on the host, ncclAllReduce on a
GPU), so every step is the single-process step on the global batch up to the
order of the float32 sums. Loss and accuracy are global; only rank 0 prints,
saves and writes CSV logs. evaluate and predict split the samples over the
ranks and gather the result.

The MPI layer is the optional extension gpuaccel._mpi (built where `mpicc` is
found), imported by `init()`: `import gpuaccel` never needs MPI. Every
collective is bounded by GPUACCEL_DIST_TIMEOUT seconds (default 30): a rank
that died, raised or went another way gives RuntimeError on the others."""
import atexit
import hashlib
import importlib
import json
import os
import sys
import threading
import warnings

import numpy as np

__all__ = ["init", "is_initialized", "rank", "world_size", "local_rank", "device", "available",
           "unavailable_reason", "allreduce", "broadcast", "barrier", "finalize", "reducer_stats"]

DEFAULT_TIMEOUT = 30.0
NOT_BUILT = ("gpuaccel was built without MPI support (gpuaccel._mpi: no mpicc at build time; "
             "install openmpi-bin libopenmpi-dev and rebuild)")

_lock = threading.Lock()
_state = {}  # 'module' / 'error' once imported, 'atexit' once registered


def _load():
    """gpuaccel._mpi, or None (the reason in _state['error'])."""
    with _lock:
        if "module" not in _state:
            try:
                _state["module"] = importlib.import_module(f"{__package__}._mpi")
                _state["error"] = ""
            except ModuleNotFoundError as e:
                _state["module"] = None
                _state["error"] = NOT_BUILT if e.name == f"{__package__}._mpi" else f"gpuaccel._mpi: {e}"
            except ImportError as e:  # e.g. libmpi.so.40 missing at run time
                _state["module"] = None
                _state["error"] = f"gpuaccel._mpi could not be loaded: {e}"
        return _state["module"]


def _mpi():
    mod = _load()
    if mod is None:
        raise RuntimeError(_state["error"])
    return mod


def available():
    """True when gpuaccel._mpi was built and loads."""
    return _load() is not None


def unavailable_reason():
    return "" if available() else _state["error"]


def _timeout_from_env():
    text = os.environ.get("GPUACCEL_DIST_TIMEOUT", "").strip()
    if not text:
        return DEFAULT_TIMEOUT
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"GPUACCEL_DIST_TIMEOUT must be a number of seconds, got {text!r}") from None


def init(timeout=None):
    """Initialise MPI (once; later calls return at once) and return (rank, world_size).

    timeout: seconds any collective may wait (default GPUACCEL_DIST_TIMEOUT, else 30;
    <= 0: no bound). At exit MPI is finalized, except after a failed collective or an
    uncaught exception: then the process leaves without MPI_Finalize (which would wait
    for the peers) and the launcher ends the job."""
    mod = _mpi()
    seconds = _timeout_from_env() if timeout is None else float(timeout)
    r, size = mod.init()
    mod.set_timeout(seconds)
    with _lock:
        if "atexit" not in _state:
            _state["atexit"] = True
            _state["excepthook"] = sys.excepthook
            sys.excepthook = _excepthook
            atexit.register(_at_exit)
    return r, size


def _excepthook(kind, value, tb):
    _state["uncaught"] = True
    _state["excepthook"](kind, value, tb)
    sys.stderr.flush()


def _at_exit():
    mod = _state.get("module")
    if mod is None or not mod.initialized():
        return
    if _state.get("uncaught") or mod.failed() is not None:
        # a peer may be waiting in a collective this rank will never join: MPI_Finalize
        # would wait for it. Leave without it; mpirun sees the early exit and ends the job.
        return
    mod.finalize()


def is_initialized():
    mod = _state.get("module")
    return mod is not None and mod.initialized()


def rank():
    """This process's rank (0 when not initialised)."""
    return _state["module"].rank() if is_initialized() else 0


def world_size():
    """The number of processes (1 when not initialised)."""
    return _state["module"].size() if is_initialized() else 1


def local_rank():
    """This process's rank among those on its machine (Open MPI's OMPI_COMM_WORLD_LOCAL_RANK,
    or the generic MPI_LOCALRANKID / SLURM_LOCALID), else rank()."""
    for var in ("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"):
        if os.environ.get(var, "").strip().isdigit():
            return int(os.environ[var])
    return rank()


def device():
    """'cuda:N' for this rank's GPU (local rank modulo the GPUs here) when CUDA is available, else 'cpu'."""
    from . import cuda

    if cuda.is_available() and cuda.device_count() > 0:
        return f"cuda:{local_rank() % cuda.device_count()}"
    return "cpu"


def finalize():
    """MPI_Finalize now (normally done at exit)."""
    if is_initialized():
        _state["module"].finalize()


def barrier():
    _mpi().barrier()


def allreduce(array, op="sum"):
    """A new array: `array` (float32, float64 or int64) reduced over the ranks by 'sum', 'min' or 'max'."""
    out = np.array(array, copy=True, order="C")
    if out.dtype not in (np.float32, np.float64, np.int64):
        raise TypeError(f"allreduce takes float32, float64 or int64 arrays, got {out.dtype}")
    if world_size() > 1:
        _mpi().allreduce(out, op)
    return out


def broadcast(array, root=0):
    """A new array: rank `root`'s `array` on every rank (same shape and dtype on all)."""
    out = np.array(array, copy=True, order="C")
    if out.dtype not in (np.float32, np.float64, np.int64):
        raise TypeError(f"broadcast takes float32, float64 or int64 arrays, got {out.dtype}")
    if world_size() > 1:
        _mpi().bcast(out, root)
    return out


def reducer_stats(reset=False):
    """(calls, bytes, seconds) spent in the gradient reducer since the last reset."""
    return _mpi().reducer_stats(bool(reset))


# ---------------------------------------------------------------------------
# Used by gpuaccel.models
# ---------------------------------------------------------------------------

def _wanted(distributed):
    """Whether a fit / evaluate / predict call runs distributed: True initialises MPI,
    None means "when init() was called", False never."""
    if distributed is None:
        return is_initialized()
    if distributed is True:
        if not is_initialized():
            init()
        return True
    if distributed is False:
        return False
    raise ValueError(f"distributed must be True, False or None, got {distributed!r}")


def _skip_io():
    """True on ranks other than 0 of an initialised job: they do not print or write files."""
    return is_initialized() and rank() != 0


def _digest(obj):
    """A signed int64 digest of a JSON-able object."""
    h = hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).digest()
    return int.from_bytes(h[:8], "little", signed=True)


def check_same(fields, what="fit"):
    """Raise ValueError on every rank unless each value of `fields` ({name: int}) is the same
    on all ranks (one allreduce of the minima and the maxima)."""
    names = sorted(fields)
    vals = np.array([int(fields[k]) for k in names], dtype=np.int64)
    lo, hi = allreduce(vals, "min"), allreduce(vals, "max")
    bad = [names[i] for i in range(len(names)) if lo[i] != hi[i]]
    if bad:
        detail = ", ".join(f"{k} (this rank: {fields[k]}, min {lo[names.index(k)]}, max {hi[names.index(k)]})"
                           for k in bad)
        raise ValueError(f"distributed {what}: the ranks disagree on {detail}: every rank must build the same model "
                         "and call it with the same data size, batch size, seed and settings")


def _shares(total, world):
    """(counts, offsets): `total` samples split over `world` ranks, the first total % world one larger."""
    base, extra = divmod(int(total), world)
    counts = np.array([base + (r < extra) for r in range(world)], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    return counts, offsets


def _attach(model, net):
    """Gives the net the gradient reducer, and sets NCCL up on a real GPU where it was built."""
    mod = _mpi()
    if model.device != "cpu" and mod.has_nccl():
        from . import cuda

        if not cuda.is_emulated():
            index = int(model.device.split(":")[1])
            mod.use_nccl(cuda._backend_capsule(), cuda._module().stream(), index)
    net.set_reducer(mod.reducer())


def _sync_weights(net):
    """Rank 0's parameters and state (batch-norm moving statistics) on every rank."""
    net.set_params(broadcast(net.get_params()))
    if net.nstate:
        net.set_state(broadcast(net.get_state()))


def _average_state(net):
    """The non-trainable state (batch-norm moving statistics, which each rank updates from its own
    share of the batch) averaged over the ranks, so every rank holds the same model."""
    if net.nstate and world_size() > 1:
        net.set_state((allreduce(net.get_state().astype(np.float64)) / world_size()).astype(np.float32))


def fingerprint(model, net):
    """The model's identity for the mismatch check: layer specs, parameter count, optimizer."""
    specs = [entry._spec() for entry, _, _ in model._entries()]
    return {"parameters": net.nparams, "layer specs": _digest(specs),
            "optimizer": _digest(model.optimizer._args() if model.optimizer else None),
            "input shape": _digest(list(model.input_shape or [])), "classes": net.classes,
            "trainable": _digest(list(net.get_trainable()))}


def warn_once(key, text):
    with _lock:
        if key in _state:
            return
        _state[key] = True
    if rank() == 0:
        warnings.warn(text, RuntimeWarning, stacklevel=3)


def _local_order(order, n, batch, steps, me, world):
    """This rank's samples of an epoch, in order: its share of each global batch of
    `batch` samples of `order` (the last batch may be shorter), concatenated."""
    full = steps if steps * batch <= n else steps - 1
    cnt, off = _shares(batch, world)
    parts = [order[:full * batch].reshape(full, batch)[:, off[me]:off[me] + cnt[me]].ravel()]
    if full < steps:
        lc, lo = _shares(n - full * batch, world)
        parts.append(order[full * batch:][lo[me]:lo[me] + lc[me]])
    return np.concatenate(parts)


def fit(model, x, y, epochs=1, batch_size=32, validation_data=None, verbose=1, seed=None, shuffle=True,
        callbacks=None, initial_epoch=0, device_data="auto"):
    """Sequential.fit across the ranks (Sequential.fit calls this when distributed); see
    Sequential.fit for the arguments. `batch_size` is the global batch: rank r trains on
    its share (batch_size // R, the first batch_size % R ranks one more) of each one."""
    import time

    from . import _C, callbacks as cbks
    from . import models as M

    if model.optimizer is None:
        raise RuntimeError("call compile() before fit()")
    if not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not isinstance(epochs, (int, np.integer)) or epochs < 0:
        raise ValueError(f"epochs must be an int >= 0, got {epochs!r}")
    if verbose not in (0, 1, 2):
        raise ValueError("verbose must be 0, 1 or 2")
    if device_data not in ("auto", True, False):
        raise ValueError(f"device_data must be 'auto', True or False, got {device_data!r}")
    world, me = world_size(), rank()
    if isinstance(x, _C.Tensor):
        x = x.numpy()  # every rank reads its own rows on the host
    if isinstance(y, _C.Tensor):
        y = y.numpy()
    x = M._as_images(x, model.input_shape)
    net = model._require_net(x)
    M._check_finite(x, "x")
    model._sync_trainable()
    n = x.shape[0]
    y = M._as_labels(y, n, net.classes) if n else np.zeros(0, np.int32)
    spe = model.steps_per_execution
    seed_used = model.seed if seed is None else seed
    check_same(dict(fingerprint(model, net), **{
        "samples": n, "batch size": batch_size, "steps per execution": spe, "epochs": epochs,
        "initial epoch": initial_epoch, "shuffle": bool(shuffle), "seed": _digest(seed_used),
        "validation samples": -1 if validation_data is None else len(validation_data[1])}))
    if n == 0:
        raise ValueError("cannot fit on an empty data set")
    if batch_size < world:
        raise ValueError(f"distributed fit: the global batch_size ({batch_size}) must be at least the number of "
                         f"ranks ({world}): each rank trains on its share of every batch")
    steps = -(-n // batch_size)
    last = n - (steps - 1) * batch_size
    if last < world:  # a rank would have no sample of the last batch: it is left out
        warn_once("dist-short-last", f"distributed fit: the last batch of each epoch ({last} samples) has fewer "
                  f"samples than ranks ({world}); it is left out")
        steps -= 1
        if steps == 0:
            raise ValueError(f"distributed fit: {n} samples cannot give each of {world} ranks a sample of a batch")
    used = min(n, steps * batch_size)
    full = steps if steps * batch_size <= used else steps - 1  # steps of the whole global batch
    cnt, _ = _shares(batch_size, world)
    lcnt = _shares(used - full * batch_size, world)[0] if full < steps else None
    val = None
    if validation_data is not None:
        xv, yv = validation_data[:2]
        xv = M._as_images(xv.numpy() if isinstance(xv, _C.Tensor) else xv, model.input_shape)
        M._check_finite(xv, "validation x")
        val = (xv, M._as_labels(yv.numpy() if isinstance(yv, _C.Tensor) else yv, xv.shape[0], net.classes))
    # where the data live: as Sequential.fit (the CPU reads float32 arrays in place)
    resident = (not (x.dtype == np.uint8 and model.device == "cpu")
                and (device_data is True or (device_data == "auto" and M._fits_on_device(model.device, x.size * 4))))
    history = cbks.History()
    user = list(callbacks or [])
    if me != 0:  # only rank 0 prints and writes files (saves: Sequential.save checks the rank itself)
        user = [cb for cb in user if not isinstance(cb, (cbks.ProgressBar, cbks.CSVLogger))]
        verbose = 0
    cb_list = [history] + user + ([cbks.ProgressBar(verbose)] if verbose else [])
    rng = M._shuffle_rng(seed_used, initial_epoch, n, shuffle)  # epoch k's order, resumed or not
    model.stop_training = False
    for cb in cb_list:
        cb.model = model
        cb.on_train_begin({"epochs": epochs, "steps": steps})
    step_ms = np.empty(steps)
    loss = 0.0
    _sync_weights(net)
    try:
        _attach(model, net)
        net.set_rng_salt(me)  # each rank its own dropout / augmentation streams (rank 0: the model's)
        if resident:
            net.set_data(M._DATA_TRAIN, M._floats(x), y)
        for epoch in range(initial_epoch, epochs):
            for cb in cb_list:
                cb.on_epoch_begin(epoch)
            t0 = time.perf_counter()
            order = rng.permutation(n) if shuffle else np.arange(n)
            mine = _local_order(order[:used], used, batch_size, steps, me, world)
            if resident:  # this rank's samples first, then the rest (never reached)
                rest = np.ones(n, bool)
                rest[mine] = False
                net.set_order(np.concatenate([mine, np.flatnonzero(rest)]).astype(np.int32))
            loss_sum, correct, seen, i, pos = 0.0, 0, 0, 0, 0
            while i < steps:
                short = i >= full  # the last, shorter global batch
                k = 1 if short else min(spe, full - i)
                b = int(lcnt[me] if short else cnt[me])
                net.set_grad_batch(int(used - full * batch_size) if short else batch_size)
                if not resident:
                    xb, yb = M._gather(x, y, mine[pos:pos + k * b])
                    net.set_data(M._DATA_TRAIN, xb, yb)
                s0 = time.perf_counter()
                done, samples, lsum, right = net.train_steps(k, b)
                pos += samples
                # the call's loss, right answers and samples over all ranks (one small allreduce)
                lsum, right, samples = (float(v) for v in allreduce(np.array([lsum, right, samples], np.float64)))
                step_ms[i:i + done] = 1000.0 * (time.perf_counter() - s0) / done
                i += done
                loss = lsum / samples
                if not np.isfinite(loss) and any(isinstance(cb, cbks.TerminateOnNaN) for cb in cb_list):
                    for cb in cb_list:
                        if isinstance(cb, cbks.TerminateOnNaN):
                            cb.on_batch_end(i - 1, {"loss": float(loss)})
                    break
                if not np.isfinite(loss):
                    raise FloatingPointError(f"loss became {loss} at epoch {epoch + 1}, step {i}: lower the "
                                             "learning rate or check the inputs (the weights of that step were kept)")
                loss_sum += lsum
                correct += int(right)
                seen += int(samples)
                for cb in cb_list:
                    cb.on_batch_end(i - 1, {"loss": loss_sum / seen, "accuracy": correct / seen})
            if not np.isfinite(loss):
                break
            _average_state(net)
            epoch_time = time.perf_counter() - t0
            logs = {"loss": loss_sum / seen, "accuracy": correct / seen}
            if val is not None:
                logs["val_loss"], logs["val_accuracy"] = model.evaluate(*val, batch_size=max(batch_size, 256),
                                                                        distributed=True)
            logs.update(epoch_time_s=epoch_time, step_time_ms_p50=float(np.percentile(step_ms, 50)),
                        step_time_ms_p95=float(np.percentile(step_ms, 95)), images_per_s=seen / epoch_time)
            for cb in cb_list:
                cb.on_epoch_end(epoch, logs)
            # a callback on one rank only (an early stop) must stop them all
            if allreduce(np.array([int(bool(model.stop_training))], np.int64), "max")[0]:
                model.stop_training = True
                break
    finally:
        net.set_reducer(None)
        net.set_grad_batch(0)
        net.set_rng_salt(0)
        net.clear_data(M._DATA_TRAIN)
        for cb in cb_list:
            cb.on_train_end()
    model.history = history
    return history


def _span(n):
    """This rank's contiguous share [lo, hi) of n samples."""
    cnt, off = _shares(n, world_size())
    me = rank()
    return int(off[me]), int(off[me] + cnt[me])


def evaluate(model, x, y, batch_size=256, verbose=0):
    """Sequential.evaluate with the samples split over the ranks; the global (loss, accuracy)."""
    from . import _C

    if isinstance(x, _C.Tensor):
        x = x.numpy()
    if isinstance(y, _C.Tensor):
        y = y.numpy()
    n = len(x)
    check_same({"evaluate samples": n, "evaluate batch size": int(batch_size)}, "evaluate")
    if n == 0:
        raise ValueError("cannot evaluate on an empty data set")
    lo, hi = _span(n)
    if hi > lo:
        loss, acc = model.evaluate(x[lo:hi], np.asarray(y)[lo:hi], batch_size=batch_size, distributed=False)
        part = np.array([loss * (hi - lo), round(acc * (hi - lo)), hi - lo], np.float64)
    else:
        part = np.zeros(3)
    loss_sum, correct, _ = allreduce(part)
    if verbose and rank() == 0:
        print(f"loss: {loss_sum / n:.4f} - accuracy: {correct / n:.4f}")
    return float(loss_sum) / n, float(correct) / n


def predict(model, x, batch_size=256):
    """Sequential.predict with the samples split over the ranks; every rank gets all the logits."""
    from . import _C

    if isinstance(x, _C.Tensor):
        x = x.numpy()
    n = len(x)
    check_same({"predict samples": n}, "predict")
    lo, hi = _span(n)
    local = model.predict(x[lo:hi], batch_size=batch_size, distributed=False)
    out = np.zeros((n, local.shape[1]), np.float32)
    out[lo:hi] = local
    return allreduce(out) if world_size() > 1 else out  # + 0.0 elsewhere: the gather is exact
