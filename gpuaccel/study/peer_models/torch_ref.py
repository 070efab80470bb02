"""The reference CNN of DESIGN.md section 3 in PyTorch (CPU), as a peer for gpuaccel.

    python -m gpuaccel.study.peer_models.torch_ref [--epochs 1] [--batch-size 128] [--threads 2]
                                               [--limit N] [--seed 0]

Same model, data, batch, optimizer and initialisation scheme as gpuaccel's reference CNN:
Conv2d(32, 3x3, pad 1) ReLU -> MaxPool 2 -> Conv2d(64, 3x3, pad 1) ReLU -> MaxPool 2 ->
Flatten -> Linear(128) ReLU -> Linear(10) logits; Glorot-uniform weights
(nn.init.xavier_uniform_) and zero biases; Adam(lr 1e-3, eps 1e-7 as Keras) ; cross-entropy
from logits; batch 128; the training set shuffled each epoch. Input: channels-first float32
(N, 1, 28, 28) in [0, 1], as gpuaccel takes it.

How it is timed (the same as gpuaccel's Sequential.fit()):
- epoch_time_s: perf_counter around the whole training loop of one epoch: the shuffle
  (a NumPy permutation, as gpuaccel), gathering each batch, and every step; the test-set
  evaluation after it is not included;
- step times: perf_counter around forward + loss + backward + optimizer step + reading the
  loss and the number right (the part gpuaccel's one C call does), per batch;
- images_per_s = training images / epoch time.

Only NumPy and torch are needed; gpuaccel is used only to load Fashion-MNIST when this file
is run as a script. ``train()`` is what ``gpuaccel.peers.run('torch', ...)`` calls.
"""
import time

import numpy as np

NAME = "torch"
DEVICE = "torch-cpu"


def versions():
    import torch

    return {"torch": torch.__version__}


def set_threads(threads):
    """torch.set_num_threads(threads) (intra-op) and one inter-op thread; returns what is in force."""
    import torch

    if threads:
        torch.set_num_threads(int(threads))
        try:  # allowed once per process, before any inter-op work
            torch.set_num_interop_threads(1)
        except RuntimeError:
            pass
    return torch.get_num_threads()


def build_model(seed=0, input_shape=(1, 28, 28), classes=10):
    """The reference CNN for (C, H, W) images and `classes` classes, Glorot-uniform
    weights and zero biases, seeded."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(input_shape[0], 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * (input_shape[1] // 4) * (input_shape[2] // 4), 128),
        nn.ReLU(), nn.Linear(128, classes))
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    return model


def make_optimizer(model):
    """Adam(1e-3, eps 1e-7); the fused CPU kernel when this torch has it (gpuaccel's is fused too)."""
    import torch

    try:
        return torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7, fused=True), "Adam(lr=1e-3, eps=1e-7, fused=True)"
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7), "Adam(lr=1e-3, eps=1e-7)"


def evaluate(model, xt, yt, batch_size=256):
    """(mean loss, accuracy) on (xt, yt), no gradients, eval mode."""
    import torch
    import torch.nn.functional as F

    model.eval()
    loss_sum, correct = 0.0, 0
    with torch.no_grad():
        for i in range(0, xt.shape[0], batch_size):
            xb, yb = xt[i:i + batch_size], yt[i:i + batch_size]
            out = model(xb)
            loss_sum += float(F.cross_entropy(out, yb, reduction="sum"))
            correct += int((out.argmax(1) == yb).sum())
    model.train()
    return loss_sum / xt.shape[0], correct / xt.shape[0]


def train(x, y, xt, yt, epochs=1, batch_size=128, seed=0, threads=None, verbose=0):
    """Train a fresh reference CNN; return {'history': key -> per-epoch list (the keys of
    gpuaccel's History), 'threads', 'versions', 'config'}.

    x, xt: float32 (N, C, H, W) in [0, 1]; y, yt: integer labels 0..classes-1."""
    import torch
    import torch.nn.functional as F

    threads_in_force = set_threads(threads)
    x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    y = torch.from_numpy(np.asarray(y, dtype=np.int64))
    xt = torch.from_numpy(np.ascontiguousarray(xt, dtype=np.float32))
    yt = torch.from_numpy(np.asarray(yt, dtype=np.int64))
    if x.ndim != 4 or tuple(xt.shape[1:]) != tuple(x.shape[1:]):
        raise ValueError(f"x and xt must be (N, C, H, W) of one image shape, got {tuple(x.shape)} and {tuple(xt.shape)}")
    model = build_model(seed, tuple(x.shape[1:]), int(max(y.max(), yt.max())) + 1)
    opt, opt_name = make_optimizer(model)
    model.train()
    n = x.shape[0]
    steps = -(-n // batch_size)
    rng = np.random.default_rng(seed)
    step_ms = np.empty(steps)
    hist = {k: [] for k in ("loss", "accuracy", "val_loss", "val_accuracy", "epoch_time_s",
                            "step_time_ms_p50", "step_time_ms_p95", "images_per_s")}
    for epoch in range(epochs):
        t0 = time.perf_counter()
        order = torch.from_numpy(rng.permutation(n))
        loss_sum, correct = 0.0, 0
        for i in range(steps):
            idx = order[i * batch_size:(i + 1) * batch_size]
            xb, yb = x[idx], y[idx]
            s0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            out = model(xb)
            loss = F.cross_entropy(out, yb)
            loss.backward()
            opt.step()
            loss_value = loss.item()
            right = int((out.detach().argmax(1) == yb).sum())
            step_ms[i] = 1000.0 * (time.perf_counter() - s0)
            loss_sum += loss_value * len(idx)
            correct += right
        epoch_time = time.perf_counter() - t0
        val_loss, val_acc = evaluate(model, xt, yt, max(batch_size, 256))
        for k, v in (("loss", loss_sum / n), ("accuracy", correct / n), ("val_loss", val_loss),
                     ("val_accuracy", val_acc), ("epoch_time_s", epoch_time),
                     ("step_time_ms_p50", float(np.percentile(step_ms, 50))),
                     ("step_time_ms_p95", float(np.percentile(step_ms, 95))), ("images_per_s", n / epoch_time)):
            hist[k].append(float(v))
        if verbose:
            print(f"torch epoch {epoch + 1}/{epochs}: {epoch_time:.2f} s, {n / epoch_time:,.0f} images/s, "
                  f"loss {loss_sum / n:.4f}, test acc {val_acc:.4f}", flush=True)
    return {"history": hist, "threads": threads_in_force, "versions": versions(),
            "config": {"optimizer": opt_name, "layout": "NCHW (channels-first)", "mode": "eager",
                       "interop_threads": torch.get_num_interop_threads()}}


def main(argv=None):
    import argparse
    import json
    import os
    import sys

    p = argparse.ArgumentParser(description="The reference CNN in PyTorch on Fashion-MNIST (CPU).")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--limit", type=int)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    from gpuaccel.study.bench import load_fashion

    x, y, xt, yt = load_fashion(args.limit)
    out = train(x, y, xt, yt, args.epochs, args.batch_size, args.seed, args.threads, verbose=1)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
