"""Pretrain a small ResNet on some Fashion-MNIST classes and write its weights.

    python -m gpuaccel.pretrain                      # ResNet-8, width 8, classes 0-4, 5 epochs
    python -m gpuaccel.pretrain --width 16 --epochs 5 --device cuda --out my_backbone.npz

Writes the whole trained classifier (backbone + head) with Sequential.save to --out,
and a model card (--out with .md) next to it: the command, the data, the epochs with
their loss, accuracy and time, the test accuracy and the machine. Load the backbone with
`ga.applications.resnet(depth, width=..., include_top=False, weights=PATH)`; the package
ships the default run as weights='fmnist-0to4' (gpuaccel/weights/)."""
import argparse
import datetime
import hashlib
import os
import platform
import sys
import time

import numpy as np

from . import _C, applications, datasets, optimizers
from .info import cpu_model

DEFAULT_OUT = os.path.join(applications.WEIGHTS_DIR, "resnet8_w8_fmnist0to4.npz")


def parse_classes(text):
    """'0-4' or '0,1,2' -> sorted list of ints in [0, 9]."""
    out = set()
    for part in text.split(","):
        part = part.strip()
        if "-" in part:
            a, b = part.split("-", 1)
            out.update(range(int(a), int(b) + 1))
        elif part:
            out.add(int(part))
    if not out or min(out) < 0 or max(out) > 9:
        raise argparse.ArgumentTypeError(f"classes must be within 0-9, got {text!r}")
    return sorted(out)


def subset(x, y, classes, limit=None):
    """Images of `classes` as float32 (N, 1, 28, 28) in [0, 1], labels renumbered 0..k-1."""
    keep = np.isin(y, classes)
    x, y = x[keep], y[keep]
    if limit:
        x, y = x[:limit], y[:limit]
    remap = np.full(10, -1, np.int32)
    remap[classes] = np.arange(len(classes), dtype=np.int32)
    return (x.astype(np.float32) / 255.0)[:, None], remap[y]


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m gpuaccel.pretrain", description=__doc__.split("\n")[0])
    p.add_argument("--depth", type=int, default=8, help="ResNet depth, 6n+2 (default 8)")
    p.add_argument("--width", type=int, default=8, help="filters of the first stage (default 8)")
    p.add_argument("--classes", type=parse_classes, default=parse_classes("0-4"), help="e.g. 0-4 (default)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--bn-momentum", type=float, default=0.9,
                   help="BatchNormalization momentum (default 0.9; Keras uses 0.99, slow to converge in a short run)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N training images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: gpuaccel's)")
    p.add_argument("--data", default=None, help="folder with the Fashion-MNIST IDX files")
    p.add_argument("--out", default=DEFAULT_OUT)
    args = p.parse_args(argv)
    if args.threads:
        _C.set_num_threads(args.threads)

    (x, y), (xt, yt) = datasets.fashion_mnist.load_data(args.data)
    x, y = subset(x, y, args.classes, args.limit)
    xt, yt = subset(xt, yt, args.classes)
    names = [datasets.fashion_mnist.classes[c] for c in args.classes]
    print(f"pretrain: ResNet-{args.depth} width {args.width} on Fashion-MNIST classes {args.classes} "
          f"({', '.join(names)}): {len(x)} training / {len(xt)} test images, device {args.device}, "
          f"{_C.get_num_threads()} CPU threads", flush=True)

    model = applications.resnet(args.depth, width=args.width, input_shape=(1, 28, 28), classes=len(args.classes),
                                seed=args.seed, name=f"resnet{args.depth}_w{args.width}_fmnist",
                                bn_momentum=args.bn_momentum)
    model.compile(optimizer=optimizers.Adam(args.lr), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], device=args.device)
    t0 = time.perf_counter()
    hist = model.fit(x, y, epochs=args.epochs, batch_size=args.batch_size, validation_data=(xt, yt), verbose=2,
                     seed=args.seed)
    total = time.perf_counter() - t0
    test_loss, test_acc = model.evaluate(xt, yt)
    print(f"pretrain: test accuracy {test_acc:.4f} (loss {test_loss:.4f}) after {args.epochs} epochs, "
          f"{total:.0f} s", flush=True)

    out = os.path.abspath(args.out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    model.save(out)
    with open(out, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    h = hist.history
    rows = "\n".join(
        f"| {e + 1} | {h['loss'][e]:.4f} | {h['accuracy'][e]:.4f} | {h['val_loss'][e]:.4f} | "
        f"{h['val_accuracy'][e]:.4f} | {h['epoch_time_s'][e]:.1f} | {h['step_time_ms_p50'][e]:.0f} |"
        for e in range(len(h["loss"])))
    cmd = "python -m gpuaccel.pretrain " + " ".join(argv if argv is not None else sys.argv[1:])
    card = f"""# {os.path.basename(out)}

A ResNet-{args.depth} (width {args.width}: {args.width}/{2 * args.width}/{4 * args.width} filters per stage,
{model.count_params():,} parameters including {len(args.classes)}-class head and batch-norm statistics)
trained from scratch by gpuaccel on Fashion-MNIST classes {args.classes} ({', '.join(names)}).
Loaded by `ga.applications.resnet{args.depth}(width={args.width}, include_top=False, weights=...)`
(the head is dropped; with include_top=True and classes={len(args.classes)} it is kept).

- Command: `{cmd.strip()}`
- Data: Fashion-MNIST (Debian `dataset-fashion-mnist`), the {len(x):,} training images of those classes,
  scaled to [0, 1]; test: the {len(xt):,} test images of those classes. No augmentation.
- Training: Adam (learning rate {args.lr:g}), batch {args.batch_size}, {args.epochs} epochs, seed {args.seed},
  batch-norm momentum {args.bn_momentum:g},
  device {args.device}, {_C.get_num_threads()} CPU thread(s).
- Result: **test accuracy {test_acc:.4f}** (loss {test_loss:.4f}) on those classes; {total:.0f} s of training.
- Machine: {cpu_model() or platform.processor()}, {os.cpu_count()} logical CPUs; date {datetime.date.today()}.
- File: SHA-256 `{digest}`.

| epoch | loss | accuracy | val_loss | val_accuracy | epoch time (s) | step p50 (ms) |
|---|---|---|---|---|---|---|
{rows}

Validation here is the test split of the same classes (there is no separate model selection:
the weights are those after the last epoch).
"""
    card_path = os.path.splitext(out)[0] + ".md"
    with open(card_path, "w") as f:
        f.write(card)
    print(f"pretrain: wrote {out} ({os.path.getsize(out):,} bytes) and {card_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
