"""Decoding throughput of ga.datasets.image_dataset_from_directory, in images/s.

    python benchmarks/decode_images.py [--fm 10000] [--colour 2000] [--repeat 3] [--dir /tmp/x]

Two folders are generated first (not timed):
  (a) Fashion-MNIST test images as 28x28 grey PNGs (fashion_mnist.to_image_folder), read
      back at 28x28 grayscale;
  (b) colour JPEGs, 256x256 (smooth shapes + a little noise), 4 classes, read at 64x64 rgb.
For each, with workers=1 and workers=2 (threads, as the loader does) and, for comparison, a
process pool of 2 decoding the same files with the same function:
  cold          cache=False: scan + decode everything into memory;
  cold+write    an empty cache: decode straight into the cache's .npy and commit it;
  warm          cache hit: scan, stat every file, compare the manifest, map the .npy,
                then read every byte once (np.array), so the data really came in.
Best and median of --repeat runs. The load average before and after is printed: this
machine is shared, so read the numbers with it. Prints a table; asserts nothing.
"""
import argparse
import concurrent.futures
import os
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import gpuaccel as ga  # noqa: E402
from gpuaccel import image_folder  # noqa: E402


def loadavg():
    try:
        return open("/proc/loadavg").read().split()[:3]
    except OSError:
        return ["?"] * 3


def colour_folder(root, n, size=256, seed=0):
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    classes = ["circles", "squares", "stripes", "triangles"]
    for c in classes:
        os.makedirs(os.path.join(root, c), exist_ok=True)
    for i in range(n):
        k = i % len(classes)
        bg = tuple(int(v) for v in rng.integers(0, 256, 3))
        im = Image.new("RGB", (size, size), bg)
        d = ImageDraw.Draw(im)
        for _ in range(4):
            x0, y0 = (int(v) for v in rng.integers(0, size * 3 // 4, 2))
            s = int(rng.integers(size // 8, size // 3))
            fill = tuple(int(v) for v in rng.integers(0, 256, 3))
            if k == 0:
                d.ellipse([x0, y0, x0 + s, y0 + s], fill=fill)
            elif k == 1:
                d.rectangle([x0, y0, x0 + s, y0 + s], fill=fill)
            elif k == 2:
                d.rectangle([0, y0, size, y0 + s // 4], fill=fill)
            else:
                d.polygon([(x0, y0 + s), (x0 + s, y0 + s), (x0 + s // 2, y0)], fill=fill)
        a = np.asarray(im).astype(np.int16) + rng.integers(-12, 13, (size, size, 3), dtype=np.int16)
        Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(
            os.path.join(root, classes[k], f"{i:05d}.jpg"), quality=90)
    return root


def _chunk(paths, settings):
    out = np.empty((len(paths), *settings["shape"]), np.uint8)
    for i, p in enumerate(paths):
        out[i] = image_folder.decode_image(p, settings["image_size"], settings["color_mode"])
    return out


def process_pool(files, image_size, color_mode, workers):
    """The alternative the loader does not use: decode in processes, arrays pickled back."""
    c = 1 if color_mode == "grayscale" else 3
    settings = {"image_size": image_size, "color_mode": color_mode, "shape": (c, *image_size)}
    step = max(1, len(files) // (workers * 8))
    with concurrent.futures.ProcessPoolExecutor(workers) as pool:
        parts = list(pool.map(_chunk, [files[i:i + step] for i in range(0, len(files), step)],
                              [settings] * len(range(0, len(files), step))))
    return np.concatenate(parts)


def measure(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def bench(name, root, image_size, color_mode, repeat, rows):
    kw = dict(image_size=image_size, color_mode=color_mode, verbose=0)
    files = image_folder.image_dataset_from_directory(root, cache=False, workers=2, **kw).files
    n = len(files)
    cache = os.path.join(root, ".gpuaccel-cache")
    for workers in (1, 2):
        best, med = measure(lambda: image_folder.image_dataset_from_directory(
            root, cache=False, workers=workers, **kw), repeat)
        rows.append((name, n, f"threads x{workers}", "cold", n / best, n / med))

        def cold_write():
            shutil.rmtree(cache, ignore_errors=True)
            r = image_folder.image_dataset_from_directory(root, workers=workers, **kw)
            assert not r.from_cache

        best, med = measure(cold_write, repeat)
        rows.append((name, n, f"threads x{workers}", "cold+write", n / best, n / med))
    best, med = measure(lambda: process_pool(files, image_size, color_mode, 2), repeat)
    rows.append((name, n, "processes x2", "cold", n / best, n / med))

    def warm():
        r = image_folder.image_dataset_from_directory(root, workers=2, **kw)
        assert r.from_cache
        np.array(r.images)

    warm()
    best, med = measure(warm, repeat)
    rows.append((name, n, "-", "warm", n / best, n / med))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fm", type=int, default=10000, help="Fashion-MNIST test images to write (0: skip)")
    ap.add_argument("--colour", type=int, default=2000, help="256x256 colour JPEGs to write (0: skip)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", default=None, help="where to write the folders (default: a temporary folder)")
    args = ap.parse_args()
    base = args.dir or tempfile.mkdtemp(prefix="gpuaccel-decode-")
    print(f"gpuaccel {ga.__version__}, Pillow {__import__('PIL').__version__}, {os.cpu_count()} CPUs, "
          f"folders in {base}")
    rows = []
    before = loadavg()
    t0 = time.perf_counter()
    if args.fm:
        fm_dir = os.path.join(base, "fashion-mnist-png")
        if not os.path.isdir(fm_dir):
            ga.datasets.fashion_mnist.to_image_folder(fm_dir, split="test", limit=args.fm)
        bench("fashion-mnist png 28x28 -> 28x28 grey", fm_dir, (28, 28), "grayscale", args.repeat, rows)
    if args.colour:
        c_dir = os.path.join(base, "colour-jpeg")
        if not os.path.isdir(c_dir):
            colour_folder(c_dir, args.colour)
        bench("colour jpeg 256x256 -> 64x64 rgb", c_dir, (64, 64), "rgb", args.repeat, rows)
    after = loadavg()
    print(f"load average (1, 5, 15 min) before: {' '.join(before)}; after: {' '.join(after)}; "
          f"{time.perf_counter() - t0:.0f} s in all")
    print(f"\n{'folder':40s} {'files':>6s} {'decoder':13s} {'run':11s} {'best img/s':>11s} {'median img/s':>13s}")
    for name, n, how, run, best, med in rows:
        print(f"{name:40s} {n:6d} {how:13s} {run:11s} {best:11.0f} {med:13.0f}")
    if not args.dir:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
