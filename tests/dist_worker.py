"""Worker scripts for tests/test_distributed.py, run under mpirun (one process per rank):

    mpirun -np 2 python tests/dist_worker.py MODE OUTDIR [DEVICE]

MODE
  equal     50 steps (2 epochs of 25) at global batch 128, then a reference run of the
            same model in one process (rank 0, distributed=False) on the same data; a
            second run at a global batch the ranks do not divide (99, last batch 53,
            two steps a call) against its one-process twin; sharded evaluate / predict.
            Each rank writes OUTDIR/equal-RANK.json (losses, weight checksums per epoch).
  mismatch  rank 1 calls fit with another batch size: both must raise ValueError.
  stall     rank 1 sleeps past the timeout before its first collective: rank 0 must raise
            RuntimeError (timed out) from fit.
  kill      rank 1 SIGKILLs itself during training: rank 0 must not hang.
  raise     rank 1 raises from a callback during training: the job must end with an error.
Each mode writes OUTDIR/MODE-RANK.json with what happened (the test reads them)."""
import json
import os
import signal
import sys
import time

import numpy as np

import gpuaccel as ga
from gpuaccel import callbacks as cbks
from gpuaccel import layers as L

MODE, OUT = sys.argv[1], sys.argv[2]
DEVICE = sys.argv[3] if len(sys.argv) > 3 else "cpu"


def model(seed=7):
    m = ga.Sequential([L.Conv2D(6, 3, activation="relu"), L.MaxPool2D(), L.Flatten(), L.Dense(32, activation="relu"),
                       L.Dense(10)], input_shape=(1, 12, 12), seed=seed)
    m.compile(ga.optimizers.Adam(1e-3), device=DEVICE)
    return m


def data(n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 1, 12, 12)).astype(np.float32)
    y = (x[:, 0, :6].sum(axis=(1, 2)) > 0).astype(np.int32) + 2 * (x[:, 0, 6:].sum(axis=(1, 2)) > 0)
    return x, y


class Record(cbks.Callback):
    """The running loss after every call and a checksum of the weights after every epoch."""

    def __init__(self):
        self.losses, self.sums = [], []

    def on_batch_end(self, batch, logs=None):
        self.losses.append(float(logs["loss"]))

    def on_epoch_end(self, epoch, logs=None):
        p = self.model._net.get_params().astype(np.float64)
        self.sums.append([float(p.sum()), float(np.abs(p).sum()), float((p * np.arange(p.size)).sum() / p.size)])


def write(name, obj):
    with open(os.path.join(OUT, f"{name}-{ga.distributed.rank()}.json"), "w") as f:
        json.dump(obj, f)


def run(x, y, batch, epochs, distributed, spe=1):
    m = model()
    m.steps_per_execution = spe
    rec = Record()
    m.fit(x, y, batch_size=batch, epochs=epochs, verbose=0, seed=11, callbacks=[rec], distributed=distributed)
    return m, rec


def equal():
    x, y = data(25 * 128)
    m, rec = run(x, y, 128, 2, True)
    res = {"losses": rec.losses, "sums": rec.sums, "params": m._net.get_params().tolist()[:64],
           "world": ga.distributed.world_size()}
    xu, yu = data(251, seed=1)
    mu, recu = run(xu, yu, 99, 2, True, spe=2)
    res.update(uneven_losses=recu.losses, uneven_sums=recu.sums)
    xe, ye = data(301, seed=2)
    res["evaluate"] = list(m.evaluate(xe, ye, batch_size=64))
    res["predict"] = m.predict(xe, batch_size=64).tolist()
    # validation (sharded evaluate), ModelCheckpoint, CSVLogger, the progress bar: rank 0 only
    mv = model()
    ck = os.path.join(OUT, "ckpt-{epoch}.npz")
    hist = mv.fit(xu, yu, batch_size=64, epochs=2, verbose=1, validation_data=(xe, ye),
                  callbacks=[cbks.ModelCheckpoint(ck, monitor="val_loss"),
                             cbks.CSVLogger(os.path.join(OUT, "log.csv"))])
    res["val_loss"] = hist.history["val_loss"]
    mv.save(os.path.join(OUT, f"saved-by-{ga.distributed.rank()}.npz"))
    if ga.distributed.rank() == 0:
        ref_val = ga.models.load(os.path.join(OUT, "ckpt-2.npz")).evaluate(xe, ye, distributed=False)
        res["ckpt_val"] = list(ref_val)
    if ga.distributed.rank() == 0:  # the one-process reference runs, on rank 0 alone
        _, ref = run(x, y, 128, 2, False)
        res.update(ref_losses=ref.losses, ref_sums=ref.sums)
        mref, refu = run(xu, yu, 99, 2, False, spe=2)
        res.update(ref_uneven_losses=refu.losses, ref_uneven_sums=refu.sums)
        res["ref_evaluate"] = list(m.evaluate(xe, ye, batch_size=64, distributed=False))
        res["ref_predict"] = m.predict(xe, batch_size=64, distributed=False).tolist()
    write("equal", res)


def mismatch():
    x, y = data(512)
    try:
        run(x, y, 64 if ga.distributed.rank() == 0 else 32, 1, True)
        write("mismatch", {"raised": None})
    except ValueError as e:
        write("mismatch", {"raised": "ValueError", "message": str(e)})


def stall():
    x, y = data(512)
    if ga.distributed.rank() == 1:
        time.sleep(float(os.environ.get("STALL_S", "20")))
        return
    t0 = time.monotonic()
    try:
        run(x, y, 64, 1, True)
        write("stall", {"raised": None})
    except RuntimeError as e:
        write("stall", {"raised": "RuntimeError", "message": str(e), "seconds": time.monotonic() - t0})
        raise  # the process must exit nonzero


class Fail(cbks.Callback):
    def __init__(self, how):
        self.how = how

    def on_batch_end(self, batch, logs=None):
        if ga.distributed.rank() == 1 and batch == 3:
            if self.how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError("rank 1 fails on purpose")


def fail(how):
    x, y = data(64 * 400)
    m = model()
    write(how, {"started": time.time()})
    m.fit(x, y, batch_size=64, epochs=5, verbose=0, callbacks=[Fail(how)])
    write(how, {"finished": True})


if __name__ == "__main__":
    ga.set_num_threads(1)
    ga.distributed.init()
    {"equal": equal, "mismatch": mismatch, "stall": stall, "kill": lambda: fail("kill"),
     "raise": lambda: fail("raise")}[MODE]()
