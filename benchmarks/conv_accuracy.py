"""Test accuracy of the reference CNN by convolution algorithm: im2col against 'auto' (Winograd
where it measured faster), Fashion-MNIST, 3 epochs, Adam 1e-3, batch 128, seeds 0-2.

    python benchmarks/conv_accuracy.py [--epochs 3] [--seeds 0,1,2] [--kernels im2col,auto]

Each (seed, kernel) trains a fresh reference_cnn(seed) on the full training set and
reports the test accuracy and the epoch time; the kernels of one seed start from the
same weights and see the same batches (the shuffle is seeded), so the difference is
the algorithms' rounding alone."""
import argparse
import os
import time

import numpy as np


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--kernels", default="im2col,auto")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)

    import gpuaccel as ga

    if args.threads:
        ga.set_num_threads(args.threads)
    (x, y), (xt, yt) = ga.datasets.fashion_mnist.load_data()
    x = (x.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
    xt = (xt.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
    print(f"threads {ga.get_num_threads()}, epochs {args.epochs}, load average {os.getloadavg()[0]:.2f}")
    acc = {}
    for seed in [int(s) for s in args.seeds.split(",")]:
        for kernel in args.kernels.split(","):
            m = ga.models.reference_cnn(seed=seed)
            for layer in m.layers:
                if isinstance(layer, ga.layers.Conv2D):
                    layer.algorithm = kernel
            m.compile(optimizer=ga.optimizers.Adam(1e-3), device="cpu")
            t = time.perf_counter()
            h = m.fit(x, y, batch_size=128, epochs=args.epochs, verbose=0, seed=seed)
            dt = time.perf_counter() - t
            _, a = m.evaluate(xt, yt)
            acc.setdefault(kernel, []).append(a)
            print(f"seed {seed} kernel {kernel:8s}: test accuracy {a:.4f}, train loss {h.history['loss'][-1]:.4f}, "
                  f"{dt / args.epochs:.1f} s/epoch, convs {[k for k in m._net.conv_kernels() if k]}")
    for kernel, v in acc.items():
        print(f"{kernel:8s}: mean test accuracy {np.mean(v):.4f} over seeds ({', '.join(f'{a:.4f}' for a in v)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
