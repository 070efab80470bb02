"""The main job: train the reference CNN on Fashion-MNIST on each device and report.

    python -m gpuaccel.bench [--device cpu,cuda] [--epochs 3] [--batch-size 128]
                             [--limit N] [--threads T] [--seed S] [--out DIR] [--quiet]

Prints, per device, one row per epoch (epoch time, step time p50/p95, images/s, train
loss, test accuracy; epoch 1 is the warm-up and is reported apart), then a summary with
the steady-state figures (mean of the epochs after the first) and the GPU/CPU speedup.
Writes ``report.json`` and ``report.md`` into ``--out`` with the machine description of
``gpuaccel.info()``. How every figure is measured is written into the report itself.
"""
import argparse
import datetime
import json
import os
import shlex
import sys
import tempfile

import numpy as np

EPOCH_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy", "epoch_time_s",
              "step_time_ms_p50", "step_time_ms_p95", "images_per_s")

HOW_MEASURED = [
    ("Epoch time: fit()'s epoch_time_s, the wall clock of one training epoch, including data "
     "shuffling and host-to-device copies; the test-set evaluation after it is not included."),
    ("Epoch 1 is the warm-up (allocation, JIT, caches) and is reported apart; steady-state figures "
     "are the mean over epochs 2..E (none when E = 1)."),
    ("Step time: median (p50) and 95th percentile over the steps of the epoch; GPU steps are timed "
     "after a synchronisation."),
    "Images/s: training images / epoch time.",
    "Test accuracy: on the full test set after each epoch.",
    "Speedup: CPU steady epoch time / device steady epoch time, from the same run.",
]


# ------------------------------------------------------------------------------ model
def compiled_reference_cnn(device, seed=0):
    """The reference CNN (gpuaccel.models.reference_cnn) compiled as DESIGN.md section 3
    says: Adam 1e-3, sparse categorical cross-entropy, accuracy; `seed` fixes the weights."""
    from . import models, optimizers

    model = models.reference_cnn(seed=seed)
    model.compile(optimizer=optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], device=device)
    return model


# ------------------------------------------------------------------------------- data
def load_fashion(limit=None):
    """Fashion-MNIST as float32 (N, 1, 28, 28) in [0, 1] with uint8 labels; first ``limit`` train images."""
    from .datasets import fashion_mnist

    (x, y), (xt, yt) = fashion_mnist.load_data()
    if limit is not None:
        x, y = x[:limit], y[:limit]

    def scale(images):
        return (images.astype(np.float32) / np.float32(255.0)).reshape(-1, 1, 28, 28)

    return scale(x), y, scale(xt), yt


# ---------------------------------------------------------------------------- devices
def _cuda_status():
    """(available, reason) without ever raising."""
    try:
        from . import cuda

        if cuda.is_available():
            return True, ""
        return False, cuda.unavailable_reason() or "unknown reason"
    except Exception as e:
        return False, f"gpuaccel.cuda unusable ({type(e).__name__}: {e})"


def default_devices():
    """'cpu', plus 'cuda' when gpuaccel.cuda.is_available()."""
    return ["cpu"] + (["cuda"] if _cuda_status()[0] else [])


# --------------------------------------------------------------------------- training
def history_rows(history):
    """Turn Keras-style ``hist.history`` (key -> per-epoch list) into one dict per epoch."""
    n = len(history.get("epoch_time_s", history.get("loss", [])))
    rows = []
    for i in range(n):
        row = {"epoch": i + 1, "warmup": i == 0}
        row.update({k: float(history[k][i]) for k in EPOCH_KEYS if k in history and i < len(history[k])})
        rows.append(row)
    return rows


def summarize(rows):
    """Warm-up and steady-state (mean of epochs after the first) figures for one device."""
    if not rows:
        return {"epochs": 0}

    def steady(key):
        values = [r[key] for r in rows[1:] if key in r]
        return float(np.mean(values)) if values else None

    last = rows[-1]
    return {
        "epochs": len(rows),
        "warmup_epoch_time_s": rows[0].get("epoch_time_s"),
        "steady_epoch_time_s": steady("epoch_time_s"),
        "steady_step_time_ms_p50": steady("step_time_ms_p50"),
        "steady_step_time_ms_p95": steady("step_time_ms_p95"),
        "steady_images_per_s": steady("images_per_s"),
        "final_loss": last.get("loss"),
        "final_val_accuracy": last.get("val_accuracy"),
    }


def speedups(results):
    """Per non-CPU device: CPU epoch time / device epoch time (steady-state; warm-up if E = 1)."""
    cpu = next((r for r in results if r["device"] == "cpu" and r.get("summary", {}).get("epochs")), None)
    out = {}
    if cpu is None:
        return out
    for r in results:
        s = r.get("summary", {})
        if r is cpu or not s.get("epochs"):
            continue
        basis = "steady" if s.get("steady_epoch_time_s") and cpu["summary"].get("steady_epoch_time_s") else "warmup"
        mine, theirs = s.get(f"{basis}_epoch_time_s"), cpu["summary"].get(f"{basis}_epoch_time_s")
        if mine and theirs:
            out[r["device"]] = {"speedup": theirs / mine, "basis": basis}
    return out


def train(device, data, epochs, batch_size, seed, verbose=0, build=None):
    """Train a fresh reference CNN on ``device``; return {'device', 'epochs': rows, 'summary', 'error'}."""
    x, y, xt, yt = data
    build = build or compiled_reference_cnn
    result = {"device": device, "epochs": [], "summary": {"epochs": 0}, "error": None}
    if device.startswith("cuda"):
        ok, reason = _cuda_status()
        if not ok:
            result["error"] = f"CUDA not available: {reason}"
            return result
    try:
        model = build(device, seed)
        hist = model.fit(x, y, epochs=epochs, batch_size=batch_size, validation_data=(xt, yt),
                         verbose=verbose, seed=seed)
    except Exception as e:
        result["error"] = f"{type(e).__name__}: {e}"
        return result
    result["epochs"] = history_rows(hist.history)
    result["summary"] = summarize(result["epochs"])
    return result


# ------------------------------------------------------------------------- formatting
def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def _table(headers, rows, markdown=False):
    """Right-aligned plain-text table, or a Markdown pipe table."""
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---:" for _ in headers) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)


EPOCH_HEADERS = ["epoch", "time s", "step ms p50", "step ms p95", "images/s", "train loss", "test acc"]


def format_epochs(rows, markdown=False):
    """One device's per-epoch table; epoch 1 is labelled as the warm-up."""
    cells = [[f"{r['epoch']} (warm-up)" if r.get("warmup") else str(r["epoch"]),
              _fmt(r.get("epoch_time_s"), ".2f"), _fmt(r.get("step_time_ms_p50"), ".1f"),
              _fmt(r.get("step_time_ms_p95"), ".1f"), _fmt(r.get("images_per_s"), ",.0f"),
              _fmt(r.get("loss"), ".4f"), _fmt(r.get("val_accuracy"), ".4f")] for r in rows]
    return _table(EPOCH_HEADERS, cells, markdown)


def format_summary(results, markdown=False):
    """Per device: warm-up and steady epoch time, steady step p50 and images/s, final accuracy, speedup."""
    speed = speedups(results)
    headers = ["device", "epochs", "warm-up s", "steady epoch s", "steady step ms p50",
               "steady images/s", "final test acc"]
    if speed:
        headers.append("speedup vs cpu")
    cells = []
    for r in results:
        s = r.get("summary", {})
        if r.get("error"):
            row = [r["device"], "failed"] + ["-"] * (len(headers) - 2)
        else:
            row = [r["device"], str(s.get("epochs", 0)), _fmt(s.get("warmup_epoch_time_s"), ".2f"),
                   _fmt(s.get("steady_epoch_time_s"), ".2f"), _fmt(s.get("steady_step_time_ms_p50"), ".1f"),
                   _fmt(s.get("steady_images_per_s"), ",.0f"), _fmt(s.get("final_val_accuracy"), ".4f")]
            if speed:
                sp = speed.get(r["device"])
                row.append("1.00x (baseline)" if r["device"] == "cpu" else
                           "-" if sp is None else
                           f"{sp['speedup']:.2f}x" + (" (warm-up)" if sp["basis"] == "warmup" else ""))
        cells.append(row)
    return _table(headers, cells, markdown)


def machine_lines(d):
    """Short description of the machine from an ``info()`` dict, one fact per line."""
    cpu, build, cuda = d.get("cpu", {}), d.get("build", {}), d.get("cuda", {})
    lines = [f"gpuaccel {d.get('gpuaccel')}, Python {d.get('python')}, NumPy {d.get('numpy')}, {d.get('platform')}",
             f"CPU: {cpu.get('model')}, {cpu.get('logical_cores')} logical cores ({cpu.get('usable_cores')} usable)"]
    if "error" in build:
        lines.append(f"build: {build['error']}")
    else:
        lines.append(f"build: {build.get('compiler')}, OpenMP {'on' if build.get('openmp') else 'off'}, "
                     f"GEMM {build.get('gemm_isa')}, {build.get('num_threads')} threads")
    v = cuda.get("versions") or {}
    for dev in cuda.get("devices", []):
        lines.append(f"GPU {dev.get('index')}: {dev.get('name')}, compute capability "
                     f"{dev.get('compute_capability', '?')}; {dev.get('code_detail', '')}")
    if cuda.get("available"):
        lines.append(f"CUDA runtime {v.get('runtime', '?')}, driver {v.get('driver', '?')}, "
                     f"cuBLAS {v.get('cublas', '?')}")
    else:
        lines.append(f"CUDA: not used ({cuda.get('diagnosis') or cuda.get('reason') or 'unavailable'})")
    return lines


def format_markdown(report):
    """The whole report as Markdown."""
    s = report["settings"]
    out = ["# gpuaccel benchmark: reference CNN on Fashion-MNIST", "",
           f"Run {report['created']}:", "", "```", report["command"], "```", "",
           (f"{s['train_images']} training / {s['test_images']} test images, batch {s['batch_size']}, "
            f"{s['epochs']} epoch(s), seed {s['seed']}, {s['model']}, {s['optimizer']}."), "",
           "## Machine", ""]
    out += [f"- {line}" for line in machine_lines(report["info"])]
    for r in report["devices"]:
        out += ["", f"## {r['device']}", ""]
        if r.get("error"):
            out.append(f"Failed: {r['error']}")
        else:
            out.append(format_epochs(r["epochs"], markdown=True))
    out += ["", "## Summary", "", format_summary(report["devices"], markdown=True), "",
            "## How it was measured", ""]
    out += [f"- {line}" for line in report["how_measured"]]
    return "\n".join(out) + "\n"


def _write_atomic(path, text):
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_report(out_dir, report):
    """Write report.json and report.md into ``out_dir``; return their paths."""
    os.makedirs(out_dir, exist_ok=True)
    json_path, md_path = os.path.join(out_dir, "report.json"), os.path.join(out_dir, "report.md")
    _write_atomic(json_path, json.dumps(report, indent=2, default=str) + "\n")
    _write_atomic(md_path, format_markdown(report))
    return json_path, md_path


# ------------------------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m gpuaccel.bench",
                                description="Train the reference CNN on Fashion-MNIST on each device and report.")
    p.add_argument("--device", help="comma-separated devices, e.g. cpu,cuda (default: every available one)")
    p.add_argument("--epochs", type=int, default=3, help="epochs per device (default 3; epoch 1 is the warm-up)")
    p.add_argument("--batch-size", type=int, default=128, help="batch size (default 128)")
    p.add_argument("--limit", type=int, help="train on the first N training images only")
    p.add_argument("--threads", type=int, help="CPU threads (default: gpuaccel's default)")
    p.add_argument("--seed", type=int, default=0, help="seed for weights and shuffling (default 0)")
    p.add_argument("--out", default="bench-out", help="folder for report.json and report.md (default bench-out)")
    p.add_argument("--quiet", action="store_true", help="print only the summary")
    args = p.parse_args(argv)
    for name in ("epochs", "batch_size", "limit", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def _threads(requested):
    """Apply --threads and return the thread count in force (None when unknown)."""
    try:
        import gpuaccel as ga

        if requested:
            ga.set_num_threads(requested)
        return ga.get_num_threads()
    except Exception:
        return requested


def main(argv=None):
    """Entry point of ``python -m gpuaccel.bench``: 0 on success, 1 when a device failed, 2 without data."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    say = (lambda *a: None) if args.quiet else print
    from .info import info

    devices = [d.strip() for d in args.device.split(",") if d.strip()] if args.device else default_devices()
    threads = _threads(args.threads)
    machine = info()
    for line in machine_lines(machine):
        say(line)
    try:
        data = load_fashion(args.limit)
    except (FileNotFoundError, ValueError) as e:
        print(f"gpuaccel.bench: cannot load Fashion-MNIST: {e}", file=sys.stderr)
        return 2
    verbose = 0 if args.quiet else (1 if sys.stdout.isatty() else 2)
    results = []
    for device in devices:
        say(f"\n== {device}: {len(data[0])} images, batch {args.batch_size}, {args.epochs} epoch(s) ==")
        result = train(device, data, args.epochs, args.batch_size, args.seed, verbose=verbose)
        results.append(result)
        if result["error"]:
            print(f"{device} failed: {result['error']}", file=sys.stderr)
        else:
            say("\n" + format_epochs(result["epochs"]))
    report = {
        "tool": "gpuaccel.bench",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python -m gpuaccel.bench" + (" " + shlex.join(argv) if argv else ""),
        "argv": argv,
        "settings": {"devices": devices, "epochs": args.epochs, "batch_size": args.batch_size,
                     "limit": args.limit, "threads": threads, "seed": args.seed,
                     "train_images": len(data[0]), "test_images": len(data[2]),
                     "model": "reference CNN (DESIGN.md section 3)", "optimizer": "Adam(1e-3)"},
        "how_measured": HOW_MEASURED,
        "info": machine,
        "devices": results,
        "speedup": speedups(results),
    }
    json_path, md_path = write_report(args.out, report)
    print("\nSummary (steady state = mean of epochs after the first)\n" + format_summary(results))
    say(f"\nwrote {json_path} and {md_path}")
    return 1 if any(r["error"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
