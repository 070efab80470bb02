"""Training on colour images from a folder: images/s on one device, and what augmentation costs.

    python benchmarks/colour_training.py [--data DIR] [--images 6000] [--image-size 64]
                                         [--device cpu] [--batch-size 64] [--repeat 3]

The folder (default: the first --images Fashion-MNIST training images written as PNG files,
ga.datasets.fashion_mnist.to_image_folder, loaded back as RGB at --image-size) is loaded
once (not timed). Then the tutorial CNN (Rescaling, 3 conv + pool, dropout, Dense 128) trains
with and without its augmentation layers (RandomFlip + RandomTranslation), in interleaved
rounds, each a fresh model: one warm-up epoch, one measured epoch; images/s of the measured
epoch, median over --repeat rounds. Also the augmentation kernel alone
(ga.ops.random_affine on one batch), ms per batch. The load average before and after is
printed: this machine is shared. Asserts nothing.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import gpuaccel as ga  # noqa: E402
from gpuaccel.layers import (Conv2D, Dense, Dropout, Flatten, MaxPool2D, RandomFlip,  # noqa: E402
                             RandomTranslation, Rescaling)


def tutorial_cnn(shape, classes, augment, seed=0):
    head = [Rescaling(1 / 255)] + ([RandomFlip("horizontal"), RandomTranslation(0.1, 0.1)] if augment else [])
    return ga.Sequential(head + [
        Conv2D(16, 3, padding="same", activation="relu"), MaxPool2D(2),
        Conv2D(32, 3, padding="same", activation="relu"), MaxPool2D(2),
        Conv2D(64, 3, padding="same", activation="relu"), MaxPool2D(2),
        Dropout(0.2), Flatten(), Dense(128, activation="relu"), Dense(classes)], input_shape=shape, seed=seed)


def measured_epoch(model, x, y, device, batch):
    model.compile(optimizer=ga.optimizers.Adam(1e-3), device=device)
    h = model.fit(x, y, epochs=2, batch_size=batch, verbose=0, seed=0)
    return h.history["images_per_s"][1], h.history["step_time_ms_p50"][1]


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--data", help="a folder of class sub-folders (default: Fashion-MNIST written as PNG files)")
    p.add_argument("--images", type=int, default=6000)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.data
        if folder is None:
            folder = os.path.join(tmp, "fm-png")
            ga.datasets.fashion_mnist.to_image_folder(folder, split="train", limit=args.images)
        x, y = ga.datasets.image_dataset_from_directory(folder, image_size=(args.image_size,) * 2,
                                                        color_mode="rgb", verbose=0, cache=os.path.join(tmp, "c"))
        x = np.ascontiguousarray(x)
        classes = int(y.max()) + 1
        print(f"{x.shape[0]} images {x.shape[1:]} uint8, {classes} classes, device {args.device}, "
              f"batch {args.batch_size}, {ga.get_num_threads()} threads; load {os.getloadavg()[0]:.2f}")
        rounds = {False: [], True: []}
        for r in range(args.repeat):
            for augment in (False, True):
                ips, ms = measured_epoch(tutorial_cnn(x.shape[1:], classes, augment), x, y, args.device,
                                         args.batch_size)
                rounds[augment].append((ips, ms))
                print(f"  round {r + 1}, augmentation {'on ' if augment else 'off'}: {ips:8.0f} images/s, "
                      f"step p50 {ms:.1f} ms")
        batch = (x[:args.batch_size] / np.float32(255)).astype(np.float32)
        if args.device != "cpu":
            batch = ga.tensor(batch, device=args.device)
        times = []
        for k in range(20):
            t0 = time.perf_counter()
            out = ga.ops.random_affine(batch, flip="horizontal", height_translation=0.1, width_translation=0.1,
                                       seed=0, draw=k)
            if args.device != "cpu":
                out.numpy()
            times.append(time.perf_counter() - t0)
        off = statistics.median(v[0] for v in rounds[False])
        on = statistics.median(v[0] for v in rounds[True])
        print(f"\nmedian images/s: augmentation off {off:.0f}, on {on:.0f} ({on / off:.3f}x); "
              f"random_affine alone: {1000 * statistics.median(times):.2f} ms per batch of {args.batch_size} "
              f"(median of 20); load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
