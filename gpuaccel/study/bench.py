"""The main job: train the reference CNN on Fashion-MNIST (or a folder of your images,
--data DIR) on each device and report.

    python -m gpuaccel.bench [--device cpu,cuda] [--epochs 3] [--batch-size 128]
                             [--batch-sizes 32,128,512 | --no-sweep] [--sweep-limit 2048]
                             [--limit N] [--test-limit N] [--peers] [--threads T] [--seed S]
                             [--data DIR [--image-size 64] [--color-mode rgb] [--validation-split 0.2]]
                             [--out DIR] [--no-plots] [--quiet]

Prints, per device, one row per epoch (epoch time, step time p50/p95, images/s, train
loss, test accuracy; epoch 1 is the warm-up and is reported apart), then a summary with
the steady-state figures (mean of the epochs after the first) and the speedup over the
CPU. A batch-size sweep measures images/s per device on a short run (``--sweep-limit``
images, one warm-up epoch then one measured epoch) and marks where the GPU overtakes the
CPU. ``--peers`` trains the same model with Keras and PyTorch (``gpuaccel.peers``) in the
same run. Writes ``report.json``, ``report.md`` and PNG plots (``gpuaccel.plots``) into
``--out`` with the machine description of ``gpuaccel.info()``. How every figure is
measured is written into the report itself.
"""
import argparse
import datetime
import functools
import json
import os
import shlex
import sys
import time

import numpy as np

from .._extras import hint
from ..callbacks import Callback
from .report import EPOCH_KEYS, device_label, history_rows, summarize  # noqa: F401 (bench.* names)
from .report import write_atomic as _write_atomic

HOW_MEASURED = [
    ("Epoch time: fit()'s epoch_time_s, the wall clock of one training epoch, including data "
     "shuffling and host-to-device copies; the test-set evaluation after it is not included."),
    ("Epoch 1 is the warm-up (allocation, JIT, caches) and is reported apart; steady-state figures "
     "are the mean over epochs 2..E (none when E = 1)."),
    ("Step time: median (p50) and 95th percentile over the steps of the epoch; GPU steps are timed "
     "after a synchronisation."),
    ("Step-time distribution (plot): the interval between consecutive batch ends as seen by a "
     "callback, so it also holds batch gathering (and, for the first step of an epoch, the shuffle)."),
    "Images/s: training images / epoch time.",
    "Test accuracy: on the test set (all of it unless --test-limit) after each epoch.",
    ("Batch-size sweep: per device and batch size, a fresh model trains one warm-up epoch and one "
     "measured epoch on the first --sweep-limit training images; images/s is the measured epoch's."),
    "Speedup: CPU steady epoch time / device steady epoch time, from the same run.",
    ("Peers (--peers): Keras and PyTorch train the same model, data, batch and optimizer in the same "
     "process right after gpuaccel; their ratios come from this one run."),
]


# ------------------------------------------------------------------------------ model
def compiled_reference_cnn(device, seed=0, precision="fp32", steps_per_execution=1, input_shape=(1, 28, 28),
                           classes=10):
    """The reference CNN (gpuaccel.models.reference_cnn) compiled as DESIGN.md section 3
    says: Adam 1e-3, sparse categorical cross-entropy, accuracy; `seed` fixes the weights.
    precision applies to GPUs (the CPU computes in fp32). input_shape and classes: those
    of the data (Fashion-MNIST's by default, a folder's with --data)."""
    from .. import models, optimizers

    model = models.reference_cnn(seed=seed, input_shape=input_shape, classes=classes)
    model.compile(optimizer=optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], device=device, steps_per_execution=steps_per_execution,
                  precision=precision if device.startswith("cuda") else "fp32")
    return model


# ------------------------------------------------------------------------------- data
def load_fashion(limit=None, test_limit=None):
    """Fashion-MNIST as float32 (N, 1, 28, 28) in [0, 1] with uint8 labels; the first
    ``limit`` training and ``test_limit`` test images (all when None)."""
    from ..datasets import fashion_mnist

    (x, y), (xt, yt) = fashion_mnist.load_data()
    x, y = x[:limit], y[:limit]
    xt, yt = xt[:test_limit], yt[:test_limit]

    def scale(images):
        return (images.astype(np.float32) / np.float32(255.0)).reshape(-1, 1, 28, 28)

    return scale(x), y, scale(xt), yt


def load_folder(path, image_size, color_mode="rgb", validation_split=0.2, seed=0, limit=None, test_limit=None):
    """A folder of your images (one sub-folder per class, gpuaccel.datasets.
    image_dataset_from_directory) as (x, y, xt, yt, class_names): float32 (N, C, H, W) in
    [0, 1] like load_fashion's, the validation split (by `seed`) standing in for the test set."""
    from ..datasets import image_dataset_from_directory

    train_set, val_set = image_dataset_from_directory(path, image_size=image_size, color_mode=color_mode,
                                                      validation_split=validation_split, subset="both", seed=seed)

    def scale(images):
        return images.astype(np.float32) / np.float32(255.0)

    return (scale(train_set.images[:limit]), train_set.labels[:limit], scale(val_set.images[:test_limit]),
            val_set.labels[:test_limit], list(train_set.class_names))


def _classes(data):
    """Classes of a (x, y, xt, yt) data set: the largest label + 1."""
    return int(max(np.max(data[1]), np.max(data[3]) if len(data[3]) else 0)) + 1


# ---------------------------------------------------------------------------- devices
def _cuda_status():
    """(available, reason) without ever raising."""
    try:
        from .. import cuda

        if cuda.is_available():
            return True, ""
        return False, cuda.unavailable_reason() or "unknown reason"
    except Exception as e:
        return False, f"gpuaccel.cuda unusable ({type(e).__name__}: {e})"


EMULATED_SKIP = ("the CUDA emulator (GPUACCEL_CUDA_EMU build) is not a GPU; ask for it with "
                 "--device cpu,cuda to run it anyway")
EMULATED_NOTE = "emulated: not GPU timings"
EMULATED_DEVICE = ("EMULATED: the CUDA kernels ran on the CPU emulator of the CUDA execution model "
                   "(GPUACCEL_CUDA_EMU build); its figures show that they run, they are not GPU timings "
                   "and give no GPU speedup")


def _cuda_emulated():
    """True when 'cuda' is the CPU emulator (gpuaccel.cuda.is_emulated()), never raising."""
    try:
        from .. import cuda

        return cuda.is_emulated()
    except Exception:
        return False


def default_devices():
    """'cpu', plus 'cuda' when gpuaccel.cuda.is_available() and it is a real GPU: the
    emulator's timings would make a meaningless CPU-vs-GPU comparison."""
    return ["cpu"] + (["cuda"] if _cuda_status()[0] and not _cuda_emulated() else [])


def _cuda_skip_reason():
    """Why default_devices() left 'cuda' out."""
    ok, reason = _cuda_status()
    return EMULATED_SKIP if ok and _cuda_emulated() else reason


# --------------------------------------------------------------------------- training
def speedups(results):
    """Per non-CPU device: CPU epoch time / device epoch time (steady-state; warm-up if E = 1)."""
    cpu = next((r for r in results if r["device"] == "cpu" and r.get("summary", {}).get("epochs")), None)
    out = {}
    if cpu is None:
        return out
    for r in results:
        s = r.get("summary", {})
        if r is cpu or not s.get("epochs") or r.get("emulated"):
            continue  # the emulator's time is the CPU's time again: no GPU speedup to give
        basis = "steady" if s.get("steady_epoch_time_s") and cpu["summary"].get("steady_epoch_time_s") else "warmup"
        mine, theirs = s.get(f"{basis}_epoch_time_s"), cpu["summary"].get(f"{basis}_epoch_time_s")
        if mine and theirs:
            out[r["device"]] = {"speedup": theirs / mine, "basis": basis}
    return out


class StepTimer(Callback):
    """A fit() callback that keeps every step's duration, per epoch, in ``epochs``: the
    interval between consecutive batch ends (the first from the start of the epoch), in ms."""

    def __init__(self):
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append([])
        self.last, self.last_batch = time.perf_counter(), -1

    def on_batch_end(self, batch, logs=None):
        # with steps_per_execution = N, batch ends come every N steps: each of them
        # gets the call's time over its steps
        now, k = time.perf_counter(), max(1, batch - self.last_batch)
        self.epochs[-1].extend([round(1000.0 * (now - self.last) / k, 3)] * k)
        self.last, self.last_batch = now, batch


def train(device, data, epochs, batch_size, seed, verbose=0, build=None, validate=True):
    """Train a fresh reference CNN on ``device``; return {'device', 'emulated', 'epochs': rows,
    'summary', 'error'}; 'emulated' is True on the CUDA emulator, whose times are not a GPU's.

    Each row also carries 'step_times_ms' (every step of that epoch, see StepTimer).
    validate=False skips the test-set evaluation after each epoch (used by the sweep)."""
    x, y, xt, yt = data
    build = build or functools.partial(compiled_reference_cnn, input_shape=x.shape[1:], classes=_classes(data))
    result = {"device": device, "emulated": device.startswith("cuda") and _cuda_emulated(),
              "epochs": [], "summary": {"epochs": 0}, "error": None}
    if device.startswith("cuda"):
        ok, reason = _cuda_status()
        if not ok:
            result["error"] = f"CUDA not available: {reason}"
            return result
    timer = StepTimer()
    try:
        model = build(device, seed)
        hist = model.fit(x, y, epochs=epochs, batch_size=batch_size,
                         validation_data=(xt, yt) if validate else None,
                         verbose=verbose, seed=seed, callbacks=[timer])
    except Exception as e:
        result["error"] = f"{type(e).__name__}: {e}"
        return result
    result["epochs"] = history_rows(hist.history)
    # the convolution algorithm each conv layer ran (kernel='auto' measures it per machine)
    net = getattr(model, "_net", None)
    result["conv_kernels"] = [k for k in net.conv_kernels() if k] if net is not None else []
    result["precision"] = getattr(model, "precision", "fp32")
    result["steps_per_execution"] = getattr(model, "steps_per_execution", 1)
    for row, steps in zip(result["epochs"], timer.epochs):
        row["step_times_ms"] = steps
    result["summary"] = summarize(result["epochs"])
    return result


def _sweep_row(label, device, threads, bs, result):
    last = result["epochs"][-1] if result.get("epochs") else {}
    emulated = bool(result.get("emulated"))
    return {"label": f"{label} (emulated)" if emulated else label, "device": device, "emulated": emulated,
            "threads": threads, "batch_size": bs,
            "images_per_s": last.get("images_per_s"), "step_time_ms_p50": last.get("step_time_ms_p50"),
            "epoch_time_s": last.get("epoch_time_s"), "error": result.get("error")}


def sweep(devices, data, batch_sizes, seed, epochs=2, threads=None, peers=()):
    """Images/s per device (and peer framework) and batch size: a fresh model per point,
    ``epochs`` epochs on ``data`` (no evaluation); the last epoch is measured, the first
    is the warm-up. ``threads``: CPU thread counts to measure each CPU point at (the
    thread-scaling numbers; None: the count in force); GPU points run once. ``peers``:
    peer frameworks (gpuaccel.peers names) swept like the CPU, each point in a child process.
    Returns rows {'label', 'device', 'emulated', 'threads', 'batch_size', 'images_per_s',
    'step_time_ms_p50', 'epoch_time_s', 'error'}; 'label' names the column ('cpu', or
    'cpu 1 thr' when several thread counts are swept, 'cuda (emulated)' on the emulator)."""
    import gpuaccel as ga

    rows = []
    counts = list(threads) if threads else [None]
    tag = (lambda name, t: name) if len(counts) == 1 else (lambda name, t: f"{name} {t} thr")
    before = ga.get_num_threads()
    try:
        for device in devices:
            cpu = not device.startswith("cuda")
            for t in (counts if cpu else [None]):
                if t:
                    ga.set_num_threads(t)
                used = ga.get_num_threads() if cpu else None
                for bs in batch_sizes:
                    r = train(device, data, epochs, bs, seed, validate=False)
                    rows.append(_sweep_row(tag(device, used) if cpu else device, device, used, bs, r))
                ga.set_num_threads(before)
        for name in peers:
            from . import peers as peer_mod

            for t in counts:
                for bs in batch_sizes:
                    try:
                        r = peer_mod.run(name, data, epochs, bs, seed, threads=t or before, isolate=True)
                    except Exception as e:
                        r = {"epochs": [], "error": f"{type(e).__name__}: {e}"}
                    rows.append(_sweep_row(tag(f"{name}-cpu", t or before), f"{name}-cpu", t or before, bs, r))
    finally:
        ga.set_num_threads(before)
    return rows


PEER_NAMES = ("keras", "torch")


def run_peers(data, epochs, batch_size, seed, names=PEER_NAMES):
    """Train the reference CNN with each peer framework via ``gpuaccel.peers.run``; a
    missing module or framework gives a result with 'error' set, never an exception."""
    try:
        from . import peers
    except Exception as e:
        return [{"device": f"{n}-cpu", "epochs": [], "summary": {"epochs": 0},
                 "error": f"gpuaccel.peers is not available ({type(e).__name__}: {e})"} for n in names]
    results = []
    for name in names:
        try:
            r = peers.run(name, data, epochs, batch_size, seed, isolate=True)
        except Exception as e:
            r = {"device": f"{name}-cpu", "epochs": [], "summary": {"epochs": 0},
                 "error": f"{type(e).__name__}: {e}"}
        results.append(r)
    return results


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
    with_speedup = bool(speed) or any(r.get("emulated") for r in results)
    if with_speedup:
        headers.append("speedup vs cpu")
    cells = []
    for r in results:
        s = r.get("summary", {})
        if r.get("error"):
            row = [device_label(r), "failed"] + ["-"] * (len(headers) - 2)
        else:
            row = [device_label(r), str(s.get("epochs", 0)), _fmt(s.get("warmup_epoch_time_s"), ".2f"),
                   _fmt(s.get("steady_epoch_time_s"), ".2f"), _fmt(s.get("steady_step_time_ms_p50"), ".1f"),
                   _fmt(s.get("steady_images_per_s"), ",.0f"), _fmt(s.get("final_val_accuracy"), ".4f")]
            if with_speedup:
                sp = speed.get(r["device"])
                row.append("n/a (emulated)" if r.get("emulated") else
                           "1.00x (baseline)" if r["device"] == "cpu" else
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
        if cuda.get("emulated"):
            lines.append(f"cuda:{dev.get('index')}: {dev.get('name')} -- {EMULATED_NOTE}")
            continue
        lines.append(f"GPU {dev.get('index')}: {dev.get('name')}, compute capability "
                     f"{dev.get('compute_capability', '?')}; {dev.get('code_detail', '')}")
    if cuda.get("available"):
        lines.append(f"CUDA runtime {v.get('runtime', '?')}, driver {v.get('driver', '?')}, "
                     f"cuBLAS {v.get('cublas', '?')}" + (" (all emulated)" if cuda.get("emulated") else ""))
    else:
        lines.append(f"CUDA: not used ({cuda.get('diagnosis') or cuda.get('reason') or 'unavailable'})")
    return lines


def format_sweep(rows, markdown=False):
    """The batch-size sweep: one row per batch size, one images/s column per device
    (per device and thread count when several were swept)."""
    devices = list(dict.fromkeys(r.get("label", r["device"]) for r in rows))
    sizes = sorted({r["batch_size"] for r in rows})
    by = {(r.get("label", r["device"]), r["batch_size"]): r for r in rows}
    cells = []
    for bs in sizes:
        row = [str(bs)]
        for d in devices:
            r = by.get((d, bs), {})
            row.append("failed" if r.get("error") else _fmt(r.get("images_per_s"), ",.0f"))
        cells.append(row)
    return _table(["batch size"] + [f"{d} images/s" for d in devices], cells, markdown)


def cpu_snapshot():
    """A point to measure other processes' CPU use from: (monotonic s, busy CPU s of the
    whole machine, CPU s of this process and its waited-for children), or None where
    /proc/stat is missing. Busy = all but idle and iowait; a VM's steal counts as busy
    (the CPU was not ours)."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
        hz = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, AttributeError):
        return None
    t = os.times()
    return (time.monotonic(), (sum(v) - v[3] - v[4]) / hz, t.user + t.system + t.children_user + t.children_system)


def other_cpu_load(start, end=None):
    """Cores' worth of CPU that everything but this process (and its children) used,
    on average, between two cpu_snapshot()s (end: now); None when unknown."""
    end = end or cpu_snapshot()
    if not start or not end or end[0] - start[0] <= 0:
        return None
    return max(0.0, ((end[1] - start[1]) - (end[2] - start[2])) / (end[0] - start[0]))


def busy_note(settings):
    """A warning when other processes loaded the machine while we measured, else ''.

    Prefers the measured CPU use of other processes over the run ('other_cpu_load', or
    'cpu_snapshot': a cpu_snapshot() taken at the start); the 1-minute load average
    ('load_average', the fallback off Linux) lags by a minute, so it also blames a run
    for whatever finished just before it started."""
    cores = settings.get("usable_cores") or 1
    other = settings.get("other_cpu_load")
    if other is None and settings.get("cpu_snapshot"):
        other = other_cpu_load(settings["cpu_snapshot"])
    tail = ("other processes shared the CPU, so the timings are unreliable, slower and noisier than on a "
            "quiet machine. Read them as a demonstration of the method, not as this CPU's speed, and rerun "
            "on a quiet machine before quoting them.")
    if other is not None:
        if other <= 0.25 * cores:
            return ""
        return (f"The machine was busy while this ran (other processes used {other:.1f} of {cores} usable cores "
                f"on average, from /proc/stat): " + tail)
    load = settings.get("load_average")
    if not load or any(v is None for v in load):
        return ""
    # load[0] is read before training, the others after it: those count this
    # run's own threads too, which are not "other processes"
    ours = settings.get("threads") or cores
    others = [load[0]] + [max(v - ours, 0.0) for v in load[1:]]
    worst = max(others)
    if worst <= 0.5 * cores:
        return ""
    return (f"The machine was busy while this ran (other processes' 1-minute load average up to {worst:.1f} on "
            f"{cores} usable cores): " + tail)


PLOT_TITLES = {
    "epoch_time": "Epoch time per device (warm-up apart)",
    "step_time": "Step-time distribution",
    "batch_sweep": "Images/s against batch size",
    "accuracy": "Test accuracy per epoch",
    "speedup": "Speedup over the CPU",
}


def format_markdown(report):
    """The whole report as Markdown."""
    from ..info import format_info

    s = report["settings"]
    out = [f"# gpuaccel benchmark: reference CNN on {s.get('data', 'Fashion-MNIST')}", "",
           f"Run {report['created']}:", "", "```", report["command"], "```", "",
           (f"{s['train_images']} training / {s['test_images']} test images, batch {s['batch_size']}, "
            f"{s['epochs']} epoch(s), seed {s['seed']}, {s['model']}, {s['optimizer']}."), ""]
    note = busy_note(s)
    if note:
        out += [f"> **Note:** {note}", ""]
    emulated = [device_label(r) for r in report["devices"] if r.get("emulated")]
    if emulated:
        out += [f"> **Note:** {', '.join(emulated)}: {EMULATED_DEVICE}.", ""]
    out += ["## Machine", ""]
    out += [f"- {line}" for line in machine_lines(report["info"])]
    for skipped in report.get("skipped_devices", []):
        out.append(f"- {skipped['device']} not measured: {skipped['reason']}")
    for r in report["devices"] + report.get("peers", []):
        out += ["", f"## {device_label(r)}", ""]
        if r.get("emulated"):
            out += [f"*{EMULATED_NOTE}*", ""]
        if r.get("error"):
            out.append(f"Failed: {r['error']}")
        else:
            if r.get("conv_kernels"):
                out += [f"Convolutions ran: {', '.join(r['conv_kernels'])}.", ""]
            if r.get("precision"):
                out += [f"Precision: {r['precision']}; steps per call: {r.get('steps_per_execution', 1)}.", ""]
            out.append(format_epochs(r["epochs"], markdown=True))
    out += ["", "## Summary", "", format_summary(report["devices"] + report.get("peers", []), markdown=True)]
    if report.get("sweep"):
        out += ["", "## Batch-size sweep", "",
                f"{s.get('sweep_images')} training images, one warm-up epoch then one measured epoch per point.",
                "", format_sweep(report["sweep"], markdown=True)]
        if report.get("crossover"):
            out += ["", f"Crossover: {report['crossover']['note']}."]
    plots = report.get("plots") or {}
    if plots:
        out += ["", "## Plots", ""]
        for name, file in plots.items():
            out += [f"![{PLOT_TITLES.get(name, name)}]({file})", ""]
    elif report.get("plots_error"):
        out += ["", "## Plots", "", f"No plots: {report['plots_error']}"]
    out += ["", "## How it was measured", ""]
    out += [f"- {line}" for line in report["how_measured"]]
    out += ["", "## Environment (`python -m gpuaccel.info`)", "", "```", format_info(report["info"]).rstrip(), "```"]
    return "\n".join(out) + "\n"


def write_report(out_dir, report, plots=True):
    """Write the PNG plots (unless plots=False), report.json and report.md into ``out_dir``;
    return the paths of the two reports. A plotting failure is recorded, not raised."""
    os.makedirs(out_dir, exist_ok=True)
    if plots:
        try:
            from .plots import write_plots

            report["plots"] = write_plots(report, out_dir)
        except ModuleNotFoundError as e:
            report["plots"] = {}
            report["plots_error"] = (f"{e.name or 'matplotlib'} is not installed: {hint('plots', 'matplotlib')}"
                                     if (e.name or "").startswith("matplotlib") else f"{type(e).__name__}: {e}")
        except Exception as e:
            report["plots"] = {}
            report["plots_error"] = f"{type(e).__name__}: {e}"
    json_path, md_path = os.path.join(out_dir, "report.json"), os.path.join(out_dir, "report.md")
    _write_atomic(json_path, json.dumps(report, indent=2, default=str) + "\n")
    _write_atomic(md_path, format_markdown(report))
    return json_path, md_path


# ------------------------------------------------------------------------------- main
def _int_list(text):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"batch sizes must be integers >= 1, got {text!r}")
    return values


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m gpuaccel.bench",
                                description="Train the reference CNN on Fashion-MNIST (or --data DIR) on each device "
                                            "and report.")
    p.add_argument("--device", help="comma-separated devices, e.g. cpu,cuda (default: every available one)")
    p.add_argument("--epochs", type=int, default=3, help="epochs per device (default 3; epoch 1 is the warm-up)")
    p.add_argument("--batch-size", type=int, default=128, help="batch size of the main run (default 128)")
    p.add_argument("--batch-sizes", type=_int_list, default=[1, 8, 32, 128, 512],
                   help="batch sizes of the images/s sweep (default 1,8,32,128,512)")
    p.add_argument("--sweep-threads", type=_int_list, default=None,
                   help="CPU thread counts of the sweep, e.g. 1,2 for thread scaling (default: --threads)")
    p.add_argument("--sweep-limit", type=int, default=2048,
                   help="training images per sweep point (default 2048)")
    p.add_argument("--no-sweep", action="store_true", help="skip the batch-size sweep")
    p.add_argument("--data", metavar="DIR",
                   help="train on a folder of your images instead of Fashion-MNIST: one sub-folder per class "
                        "(JPEG, PNG, BMP, GIF); --validation-split of it is the test set")
    p.add_argument("--image-size", type=_image_size, default=(64, 64), metavar="N|HxW",
                   help="with --data: images are resized to this (default 64)")
    p.add_argument("--color-mode", choices=["rgb", "grayscale"], default="rgb", help="with --data (default rgb)")
    p.add_argument("--validation-split", type=float, default=0.2,
                   help="with --data: the fraction held out as the test set, split by --seed (default 0.2)")
    p.add_argument("--limit", type=int, help="train on the first N training images only")
    p.add_argument("--test-limit", type=int, help="evaluate on the first N test images only")
    p.add_argument("--peers", action="store_true", help="also train the model with Keras and PyTorch (gpuaccel.peers)")
    p.add_argument("--threads", type=int, help="CPU threads (default: gpuaccel's default)")
    p.add_argument("--precision", choices=["fp32", "tf32"], default="fp32",
                   help="the GPU's matrix products (tf32: tensor cores, sm_80+; the CPU stays fp32)")
    p.add_argument("--steps-per-execution", type=int, default=1,
                   help="training steps per C call in the main run (Keras's steps_per_execution)")
    p.add_argument("--seed", type=int, default=0, help="seed for weights and shuffling (default 0)")
    p.add_argument("--out", default="bench-out", help="folder for report.json, report.md and plots (default bench-out)")
    p.add_argument("--no-plots", action="store_true", help="write no PNG plots")
    p.add_argument("--quiet", action="store_true", help="print only the summary")
    p.add_argument("--ranks", type=_int_list, default=None, metavar="R,R,...",
                   help="the data-parallel study instead (gpuaccel.dist_bench): images/s and scaling efficiency "
                        "per number of MPI processes, each launched under mpirun (1 thread each unless --threads)")
    p.add_argument("--dist-steps", type=int, default=60, help="with --ranks: timed steps per run (default 60)")
    p.add_argument("--compare", nargs="+", metavar="REPORT",
                   help="instead of running: set two or more report.json files (or their folders), e.g. from "
                        "different machines, side by side in --out/compare.md (gpuaccel.compare)")
    args = p.parse_args(argv)
    for name in ("epochs", "batch_size", "limit", "test_limit", "sweep_limit", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if not 0.0 < args.validation_split < 1.0:
        p.error("--validation-split must be in (0, 1)")
    return args


def _image_size(text):
    """'64' -> (64, 64); '48x64' -> (48, 64)."""
    try:
        parts = [int(v) for v in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"expected N or HxW with positive integers, got {text!r}")
    return tuple(parts)


def _threads(requested):
    """Apply --threads and return the thread count in force (None when unknown)."""
    try:
        import gpuaccel as ga

        if requested:
            ga.set_num_threads(requested)
        return ga.get_num_threads()
    except Exception:
        return requested


def _load_average():
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def main(argv=None):
    """Entry point of ``python -m gpuaccel.bench``: 0 on success, 1 when a device failed, 2 without data."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.compare:  # runs from several machines side by side (gpuaccel.compare)
        from . import compare

        try:
            md_path, table, warnings = compare.compare(args.compare, args.out, plots=not args.no_plots)
        except ValueError as e:
            print(f"gpuaccel.bench --compare: {e}", file=sys.stderr)
            return 2
        for name, values in warnings:
            print(f"warning: the runs differ in {name}: " + ", ".join(f"{k} {v}" for k, v in values.items()),
                  file=sys.stderr)
        for x in table:
            print(f"{x['run']} {x['device']:>12} {x['threads']} thr: "
                  + (f"failed: {x['error']}" if x["error"] else
                     f"{x['images_per_s'] or 0:,.0f} images/s" + (f", {x['speedup']:.2f}x" if x["speedup"] else "")))
        print(f"wrote {md_path}")
        return 0
    if args.ranks:  # the data-parallel study (issue 16), a separate report
        from . import dist_bench

        dist_bench.run(args.ranks, args.batch_size, args.dist_steps, args.threads or 1, args.seed, args.out)
        return 0
    say = (lambda *a: None) if args.quiet else print
    from ..info import info

    devices = [d.strip() for d in args.device.split(",") if d.strip()] if args.device else default_devices()
    skipped = []
    if not args.device and "cuda" not in devices:
        skipped.append({"device": "cuda", "reason": _cuda_skip_reason()})
    threads = _threads(args.threads)
    load = [_load_average()]
    snap = cpu_snapshot()
    machine = info()
    for line in machine_lines(machine):
        say(line)
    for sk in skipped:
        say(f"{sk['device']} not measured: {sk['reason']}")
    class_names = None
    try:
        if args.data:
            *data, class_names = load_folder(args.data, args.image_size, args.color_mode, args.validation_split,
                                             args.seed, args.limit, args.test_limit)
            data = tuple(data)
        else:
            data = load_fashion(args.limit, args.test_limit)
    except (FileNotFoundError, NotADirectoryError, ValueError, ImportError) as e:
        print(f"gpuaccel.bench: cannot load {args.data or 'Fashion-MNIST'}: {e}", file=sys.stderr)
        return 2
    data_name = (f"{args.data} ({len(class_names)} classes, {data[0].shape[1]}x{data[0].shape[2]}x"
                 f"{data[0].shape[3]})" if args.data else "Fashion-MNIST")
    classes = _classes(data) if class_names is None else len(class_names)
    verbose = 0 if args.quiet else (1 if sys.stdout.isatty() else 2)
    results = []
    for device in devices:
        emulated = device.startswith("cuda") and _cuda_emulated()
        say(f"\n== {device}{' (emulated)' if emulated else ''}: {len(data[0])} images, batch {args.batch_size}, "
            f"{args.epochs} epoch(s){' -- ' + EMULATED_NOTE if emulated else ''} ==")
        result = train(device, data, args.epochs, args.batch_size, args.seed, verbose=verbose,
                       build=functools.partial(compiled_reference_cnn, precision=args.precision,
                                               steps_per_execution=args.steps_per_execution,
                                               input_shape=data[0].shape[1:], classes=classes))
        results.append(result)
        if result["error"]:
            print(f"{device} failed: {result['error']}", file=sys.stderr)
        else:
            say("\n" + format_epochs(result["epochs"]))
    peer_results = []
    if args.peers:
        say(f"\n== peers: {', '.join(PEER_NAMES)} ==")
        peer_results = run_peers(data, args.epochs, args.batch_size, args.seed)
        for r in peer_results:
            say(f"{r['device']}: {'failed: ' + r['error'] if r['error'] else 'done'}")
    sweep_rows, cross = [], None
    sweep_data = (data[0][:args.sweep_limit], data[1][:args.sweep_limit], data[2], data[3])
    if not args.no_sweep:
        say(f"\n== batch-size sweep: {', '.join(map(str, args.batch_sizes))} on {len(sweep_data[0])} images ==")
        sweep_rows = sweep(devices, sweep_data, args.batch_sizes, args.seed, threads=args.sweep_threads,
                           peers=PEER_NAMES if args.peers else ())
        say(format_sweep(sweep_rows))
        # no crossover with the emulator: its images/s are the CPU's, not a GPU's
        gpus = [r["device"] for r in results if r["device"].startswith("cuda") and not r["emulated"]]
        if "cpu" in devices and gpus:
            from .plots import crossover

            main_rows = [r for r in sweep_rows if r["device"] != "cpu" or r["threads"] == threads]
            cross = crossover(main_rows, "cpu", gpus[0])
            say(f"crossover: {cross['note']}")
    load.append(_load_average())
    report = {
        "tool": "gpuaccel.bench",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python -m gpuaccel.bench" + (" " + shlex.join(argv) if argv else ""),
        "argv": argv,
        "settings": {"devices": devices, "epochs": args.epochs, "batch_size": args.batch_size,
                     "limit": args.limit, "test_limit": args.test_limit, "threads": threads, "seed": args.seed,
                     "precision": args.precision, "steps_per_execution": args.steps_per_execution,
                     "train_images": len(data[0]), "test_images": len(data[2]),
                     "data": data_name, "image_shape": list(data[0].shape[1:]), "classes": classes,
                     "class_names": class_names,
                     "sweep_batch_sizes": [] if args.no_sweep else args.batch_sizes,
                     "sweep_threads": args.sweep_threads or [threads],
                     "sweep_images": len(sweep_data[0]), "sweep_epochs": 2,
                     "load_average": [v for v in load if v is not None],
                     "other_cpu_load": other_cpu_load(snap),
                     "usable_cores": machine["cpu"].get("usable_cores"),
                     "model": "reference CNN (DESIGN.md section 3)", "optimizer": "Adam(1e-3)"},
        "how_measured": HOW_MEASURED,
        "info": machine,
        "devices": results,
        "skipped_devices": skipped,
        "peers": peer_results,
        "speedup": speedups(results + peer_results),
        "sweep": sweep_rows,
        "crossover": cross,
    }
    json_path, md_path = write_report(args.out, report, plots=not args.no_plots)
    print("\nSummary (steady state = mean of epochs after the first)\n" + format_summary(results + peer_results))
    for r in results:
        if r.get("emulated"):
            print(f"{device_label(r)}: {EMULATED_DEVICE}")
    note = busy_note(report["settings"])
    if note:
        print(f"\nnote: {note}")
    if report.get("plots_error"):
        print(f"no plots: {report['plots_error']}", file=sys.stderr)
    say(f"\nwrote {json_path}, {md_path}" + "".join(f", {p}" for p in (report.get("plots") or {}).values()))
    return 1 if any(r["error"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
