"""Images/s of the reference CNN with each GPU-speed feature of issue 14 on and off.

    python benchmarks/gpu_features.py [--device cuda] [--batches 128,512,2048] [--seconds 3]
                                      [--json OUT.json] [--torch] [--resnet-target 0.93]

One table row per (batch size, configuration), all in one process, interleaved:

    baseline      device_data=False, steps_per_execution=1, GPUACCEL_CUDA_GRAPHS=0
    +device_data  the data set uploaded once, batches gathered on the device
    +spe16        ... and 16 steps per C call
    +graphs       ... and the calls recorded and replayed as CUDA graphs
    +tf32 / +implicit  where this build has them (compile(precision='tf32'),
                  Conv2D(kernel='implicit')), on top of +graphs

Each configuration trains on random images of Fashion-MNIST's shape for about
--seconds after a warm-up epoch (the kernels do not look at values), and reports
images/s of whole fit() epochs. --torch adds PyTorch eager (gpuaccel/study/peer_models/
torch_ref.py's model, the same data and batch) on the same device when torch with
CUDA is importable. --resnet-target trains ga.applications.resnet(depth=8) on
Fashion-MNIST (when the data set is there) and reports the time to that test
accuracy. Runs on the CPU too (--device cpu), where only device_data and
steps_per_execution apply.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def configs(device):
    import gpuaccel as ga

    base = dict(device_data=False, spe=1, graphs="0", precision=None, kernel=None)
    rows = [("baseline", base),
            ("+device_data", dict(base, device_data=True)),
            ("+spe16", dict(base, device_data=True, spe=16))]
    if device != "cpu":
        rows.append(("+graphs", dict(base, device_data=True, spe=16, graphs="1")))
        import inspect

        if "precision" in inspect.signature(ga.Sequential.compile).parameters:
            rows.append(("+tf32", dict(rows[-1][1], precision="tf32")))
        if "implicit" in ga.ops.CONV_KERNELS:
            rows.append(("+implicit", dict(rows[-2 if rows[-1][0] == "+tf32" else -1][1], kernel="implicit")))
    return rows


def build(device, cfg, model="reference"):
    import gpuaccel as ga
    from gpuaccel.layers import Dense, Flatten

    if model == "tiny":  # where Python's per-step cost shows: a 50k-weight MLP
        m = ga.Sequential([Flatten(), Dense(64, activation="relu"), Dense(10)], input_shape=(1, 28, 28), seed=0)
    else:
        m = ga.models.reference_cnn(seed=0)
    if cfg["kernel"]:
        for layer in m.layers:
            if type(layer).__name__ == "Conv2D":
                layer.algorithm = cfg["kernel"]
    kw = {"precision": cfg["precision"]} if cfg["precision"] else {}
    m.compile(optimizer=ga.optimizers.Adam(1e-3), device=device, steps_per_execution=cfg["spe"], **kw)
    return m


def time_config(device, cfg, batch, seconds, model="reference"):
    os.environ["GPUACCEL_CUDA_GRAPHS"] = cfg["graphs"]
    steps = 64 if device != "cpu" or model == "tiny" else 8
    n = batch * steps
    g = np.random.default_rng(0)
    x = g.random((n, 1, 28, 28), dtype=np.float32)
    y = g.integers(0, 10, n).astype(np.int32)
    m = build(device, cfg, model)
    m.fit(x, y, epochs=2, batch_size=batch, verbose=0, device_data=cfg["device_data"])  # warm-up, recordings
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or done == 0:
        m.fit(x, y, epochs=1, batch_size=batch, verbose=0, device_data=cfg["device_data"])
        done += n
    return done / (time.perf_counter() - t0)


def torch_eager(device, batch, seconds):
    try:
        import torch
    except ImportError:
        return None
    if device != "cpu" and not torch.cuda.is_available():
        return None
    from gpuaccel.study.peer_models import torch_ref

    dev = torch.device("cuda" if device != "cpu" else "cpu")
    model = torch_ref.build_model().to(dev)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    lossf = torch.nn.CrossEntropyLoss()
    g = np.random.default_rng(0)
    n = batch * 64
    x = torch.tensor(g.random((n, 1, 28, 28), dtype=np.float32), device=dev)
    y = torch.tensor(g.integers(0, 10, n), device=dev)

    def epoch():
        perm = torch.randperm(n, device=dev)
        for i in range(0, n, batch):
            idx = perm[i:i + batch]
            opt.zero_grad(set_to_none=True)
            loss = lossf(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()

    epoch()
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or done == 0:
        epoch()
        done += n
    return done / (time.perf_counter() - t0)


def resnet_time_to(device, target, max_epochs=15):
    import gpuaccel as ga

    try:
        (x, y), (xt, yt) = ga.datasets.fashion_mnist.load_data()
    except Exception as e:  # no data set on this machine
        return {"error": f"no Fashion-MNIST: {e}"}
    x = (x.astype(np.float32) / 255.0)[:, None]
    xt = (xt.astype(np.float32) / 255.0)[:, None]
    m = ga.applications.resnet(depth=8, input_shape=(1, 28, 28), classes=10, seed=0)
    m.compile(optimizer=ga.optimizers.Adam(2e-3), device=device, steps_per_execution=16)
    t0, acc = time.perf_counter(), 0.0
    for epoch in range(max_epochs):
        m.fit(x, y, epochs=1, batch_size=256, verbose=0, seed=epoch)
        acc = m.evaluate(xt, yt, batch_size=1024)[1]
        if acc >= target:
            return {"seconds": time.perf_counter() - t0, "epochs": epoch + 1, "test_accuracy": acc}
    return {"seconds": None, "epochs": max_epochs, "test_accuracy": acc, "note": "target not reached"}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--batches", default="128,512,2048")
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--json", default=None)
    p.add_argument("--model", choices=["reference", "tiny"], default="reference")
    p.add_argument("--repeat", type=int, default=1, help="rounds over the configurations (median kept)")
    p.add_argument("--torch", action="store_true")
    p.add_argument("--resnet-target", type=float, default=None)
    args = p.parse_args(argv)

    import gpuaccel as ga

    if args.device != "cpu" and not ga.cuda.is_available():
        print(f"no CUDA device: {ga.cuda.unavailable_reason()}; nothing measured")
        return 0
    out = {"device": args.device, "rows": [], "torch": {}, "emulated": ga.cuda.is_emulated()}
    print(f"{args.model} model on {args.device}, images/s of whole fit() epochs (median of {args.repeat})")
    print(f"{'batch':>6} {'configuration':<14} {'images/s':>12} {'x baseline':>10}")
    for batch in (int(b) for b in args.batches.split(",")):
        rows = configs(args.device)
        seen = {name: [] for name, _ in rows}
        for _ in range(args.repeat):  # interleaved rounds: drift hits every configuration alike
            for name, cfg in rows:
                try:
                    seen[name].append(time_config(args.device, cfg, batch, args.seconds, args.model))
                except Exception as e:  # a feature this build lacks: reported, not fatal
                    print(f"{batch:>6} {name:<14} failed: {e}")
        base = None
        for name, _ in rows:
            if not seen[name]:
                continue
            ips = float(np.median(seen[name]))
            base = base or ips
            out["rows"].append({"batch": batch, "config": name, "images_per_s": ips, "runs": seen[name]})
            print(f"{batch:>6} {name:<14} {ips:>12.0f} {ips / base:>10.2f}")
        if args.torch:
            t = torch_eager(args.device, batch, args.seconds)
            out["torch"][batch] = t
            print(f"{batch:>6} {'torch eager':<14} {t:>12.0f}" if t else f"{batch:>6} torch eager: not available")
    if args.resnet_target:
        out["resnet"] = r = resnet_time_to(args.device, args.resnet_target)
        print(f"small ResNet to {args.resnet_target:.0%} test accuracy: {r}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
