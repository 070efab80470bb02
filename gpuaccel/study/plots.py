"""Plots of a benchmark report (``gpuaccel.bench``), drawn with matplotlib.

Every function takes the report dict that ``python -m gpuaccel.bench`` writes to
``report.json`` (or the parts of it named below), draws on a new figure and returns it;
``write_plots(report, out_dir)`` saves them all as PNG files and returns their names.
matplotlib is imported only here, with the Agg backend when no other is chosen, so the
plots are drawn the same way on any server; inside Jupyter the inline backend is kept.

The first epoch (warm-up: allocation, JIT, cold caches) is always drawn apart from the
steady epochs: hatched bars, separate boxes, or left out with a note.
"""
import math
import os

import numpy as np

from .report import device_label

# One colour per run, the same in every plot of a report.
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]

PLOT_FILES = {
    "epoch_time": "epoch_time.png",
    "step_time": "step_time.png",
    "batch_sweep": "batch_sweep.png",
    "accuracy": "accuracy.png",
    "speedup": "speedup.png",
}


def _pyplot():
    """matplotlib.pyplot, switched to the file-only Agg backend unless pyplot is already in
    use or we run inside IPython/Jupyter (where the inline backend shows the figures)."""
    import sys

    import matplotlib

    if "matplotlib.pyplot" not in sys.modules and "IPython" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _runs(report):
    """The runs that trained: gpuaccel devices first, then the peers."""
    runs = list(report.get("devices", [])) + list(report.get("peers", []))
    return [r for r in runs if not r.get("error") and r.get("epochs")]


def _color(report, name):
    names = [r["device"] for r in list(report.get("devices", [])) + list(report.get("peers", []))]
    return COLORS[names.index(name) % len(COLORS)] if name in names else "gray"


def _note(ax, text):
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", wrap=True,
            fontsize=10, color="dimgray")


def _failed_note(report):
    """'cuda: CUDA not available: ...' lines for the runs that did not train."""
    runs = list(report.get("devices", [])) + list(report.get("peers", []))
    lines = [f"{r['device']}: {r['error']}" for r in runs if r.get("error")]
    lines += [f"{r['device']}: {r['reason']}" for r in report.get("skipped_devices", [])]
    return "\n".join(_wrap(line) for line in lines)


def _wrap(text, width=90):
    words, lines, line = text.split(), [], ""
    for w in words:
        if line and len(line) + 1 + len(w) > width:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    return "\n".join(lines + [line])


def _subtitle(fig, report):
    s = report.get("settings", {})
    if s:
        text = f"{s.get('train_images')} train / {s.get('test_images')} test images, batch {s.get('batch_size')}"
        if report.get("created"):
            text += f", run {report['created']}"
        fig.text(0.01, 0.005, text, fontsize=7, color="gray", va="bottom")


# ------------------------------------------------------------------------ the plots
def plot_epoch_time(report):
    """Epoch time per device and epoch; the warm-up epoch 1 hatched and labelled apart."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    runs = _runs(report)
    if not runs:
        _note(ax, "no run trained\n" + _failed_note(report))
    width = 0.8 / max(len(runs), 1)
    for i, r in enumerate(runs):
        epochs = [row["epoch"] for row in r["epochs"]]
        times = [row["epoch_time_s"] for row in r["epochs"]]
        x = np.array(epochs) + (i - (len(runs) - 1) / 2) * width
        bars = ax.bar(x, times, width * 0.95, color=_color(report, r["device"]), label=device_label(r))
        for bar, row in zip(bars, r["epochs"]):
            if row.get("warmup"):
                bar.set_hatch("//")
                bar.set_alpha(0.6)
            ax.annotate(f"{row['epoch_time_s']:.1f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=7)
    if runs:
        n = max(len(r["epochs"]) for r in runs)
        ax.set_xticks(range(1, n + 1), ["1\n(warm-up)"] + [str(e) for e in range(2, n + 1)])
        ax.legend(title="hatched: warm-up epoch", fontsize=8, title_fontsize=8)
    ax.set_xlabel("epoch")
    ax.set_ylabel("epoch time (s)")
    ax.set_title("Epoch time per device (epoch 1 = warm-up, shown hatched)")
    _subtitle(fig, report)
    fig.tight_layout()
    return fig


def plot_step_time(report):
    """Distribution of step times per device: warm-up epoch and steady epochs as separate
    boxes (from each run's 'step_times_ms'); runs without it show their p50/p95 only."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    runs = _runs(report)
    positions, labels = [], []
    pos = 0
    for r in runs:
        color = _color(report, r["device"])
        warm = [t for row in r["epochs"] if row.get("warmup") for t in row.get("step_times_ms", [])]
        steady = [t for row in r["epochs"] if not row.get("warmup") for t in row.get("step_times_ms", [])]
        for part, times, hatch in (("warm-up", warm, "//"), ("steady", steady, "")):
            rows = [row for row in r["epochs"] if bool(row.get("warmup")) == (part == "warm-up")]
            if not rows:
                continue
            pos += 1
            positions.append(pos)
            labels.append(f"{device_label(r)}\n{part}")
            if times:
                box = ax.boxplot([times], positions=[pos], widths=0.6, whis=(5, 95), showfliers=True,
                                 patch_artist=True, flierprops={"markersize": 2, "alpha": 0.4})
                box["boxes"][0].set(facecolor=color, alpha=0.35 if hatch else 0.6, hatch=hatch)
                for med in box["medians"]:
                    med.set(color="black")
            else:  # only the summary percentiles are known
                p50 = np.mean([row["step_time_ms_p50"] for row in rows])
                p95 = np.mean([row["step_time_ms_p95"] for row in rows])
                ax.plot([pos, pos], [p50, p95], color=color, lw=2)
                ax.plot([pos], [p50], "o", color=color)
                ax.plot([pos], [p95], "^", color=color)
        pos += 0.5
    if positions:
        ax.set_xticks(positions, labels, fontsize=8)
        ax.set_yscale("log")
    else:
        _note(ax, "no run trained\n" + _failed_note(report))
    ax.set_ylabel("step time (ms, log scale)")
    ax.set_title("Step-time distribution: warm-up epoch apart (box 25-75 %, whiskers 5-95 %)")
    _subtitle(fig, report)
    fig.tight_layout()
    return fig


def crossover(sweep, slow="cpu", fast="cuda"):
    """Where ``fast`` overtakes ``slow`` in images/s as the batch grows.

    sweep: rows {'device', 'batch_size', 'images_per_s'}. Returns a dict with 'batch_size'
    (the crossing, interpolated on a log2 batch axis; None when the order never changes
    or a device is missing) and 'note' (what was found, in words)."""
    def series(device):
        rows = [r for r in sweep if r.get("device") == device and r.get("images_per_s")]
        return {r["batch_size"]: r["images_per_s"] for r in rows}

    a, b = series(slow), series(fast)
    common = sorted(set(a) & set(b))
    if not common:
        missing = [d for d, s in ((slow, a), (fast, b)) if not s]
        return {"batch_size": None, "note": f"no crossover: no sweep results for {', '.join(missing) or 'common batch sizes'}"}
    ratio = [b[k] / a[k] for k in common]  # > 1: fast device wins
    for (k0, r0), (k1, r1) in zip(zip(common, ratio), zip(common[1:], ratio[1:])):
        if (r0 - 1) * (r1 - 1) < 0:
            t = (1 - r0) / (r1 - r0)
            at = 2 ** (math.log2(k0) + t * (math.log2(k1) - math.log2(k0)))
            winner = fast if r1 > 1 else slow
            return {"batch_size": at, "note": f"{winner} is faster above a batch of about {at:.0f}"}
    if all(r > 1 for r in ratio):
        return {"batch_size": None, "note": f"{fast} is faster at every batch size measured ({common[0]}..{common[-1]})"}
    return {"batch_size": None, "note": f"{slow} is faster at every batch size measured ({common[0]}..{common[-1]})"}


def plot_batch_sweep(report):
    """Images/s against batch size per device (log-2 axis); the CPU/GPU crossover marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    sweep = [r for r in report.get("sweep", []) if r.get("images_per_s")]
    labels = list(dict.fromkeys(r.get("label", r["device"]) for r in sweep))
    devices = list(dict.fromkeys(r["device"] for r in sweep))
    threads = sorted({r.get("threads") for r in sweep if r.get("threads")})
    for label in labels:
        rows = sorted((r for r in sweep if r.get("label", r["device"]) == label), key=lambda r: r["batch_size"])
        # one colour per device or framework; fewer threads dashed
        fewer = rows[0].get("threads") and len(threads) > 1 and rows[0]["threads"] < threads[-1]
        ax.plot([r["batch_size"] for r in rows], [r["images_per_s"] for r in rows], "o--" if fewer else "o-",
                color=_color(report, rows[0]["device"]), label=label)
        for r in rows:
            ax.annotate(f"{r['images_per_s']:,.0f}", (r["batch_size"], r["images_per_s"]),
                        textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7)
    failed = [r for r in report.get("sweep", []) if r.get("error")]
    # the emulator's images/s are the CPU's: no CPU/GPU crossover to mark with it
    gpus = [d for d in devices if d.startswith("cuda")
            and not any(r.get("emulated") for r in sweep if r["device"] == d)]
    if "cpu" in devices and gpus:
        main = report.get("settings", {}).get("threads")
        cross = crossover([r for r in sweep if r["device"] != "cpu" or r.get("threads") in (None, main)],
                          "cpu", gpus[0])
        if cross["batch_size"]:
            ax.axvline(cross["batch_size"], color="black", ls="--", lw=1)
        ax.text(0.98, 0.96, "crossover: " + cross["note"], transform=ax.transAxes, va="top", ha="right",
                fontsize=8, bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8})
    elif sweep:
        why = sorted({f"{r['device']}: {r['error']}" for r in failed}
                     | {f"{r['device']}: {r['reason']}" for r in report.get("skipped_devices", [])}
                     | {f"{r['label']}: the CUDA emulator is not a GPU" for r in sweep if r.get("emulated")})
        emulated = [d for d in devices if d.startswith("cuda") and d not in gpus]
        text = "no crossover to mark: only " + ", ".join(d for d in devices if d not in emulated) + " measured"
        ax.text(0.02, 0.96, _wrap(text + ("\n" + "; ".join(why) if why else ""), 100),
                transform=ax.transAxes, va="top", fontsize=7, color="dimgray")
    if sweep:
        ax.set_xscale("log", base=2)
        sizes = sorted({r["batch_size"] for r in sweep})
        ax.set_xticks(sizes, [str(s) for s in sizes])
        ax.set_ylim(0, max(r["images_per_s"] for r in sweep) * 1.25)
        ax.legend(loc="lower right", fontsize=8)
    else:
        _note(ax, "no batch-size sweep in this report (python -m gpuaccel.bench --batch-sizes 32,128,512)")
    s = report.get("settings", {})
    basis = "steady epoch after one warm-up epoch" if s.get("sweep_epochs", 2) > 1 else "single epoch"
    ax.set_xlabel("batch size")
    ax.set_ylabel("training images / s")
    ax.set_title(f"Images/s vs batch size ({s.get('sweep_images', '?')} images, {basis})")
    _subtitle(fig, report)
    fig.tight_layout()
    return fig


def plot_accuracy(report):
    """Test accuracy after each epoch, per device."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    runs = [r for r in _runs(report) if any("val_accuracy" in row for row in r["epochs"])]
    for r in runs:
        rows = [row for row in r["epochs"] if "val_accuracy" in row]
        ax.plot([row["epoch"] for row in rows], [100 * row["val_accuracy"] for row in rows], "o-",
                color=_color(report, r["device"]), label=device_label(r))
        last = rows[-1]
        ax.annotate(f"{100 * last['val_accuracy']:.1f} %", (last["epoch"], 100 * last["val_accuracy"]),
                    textcoords="offset points", xytext=(4, -10), fontsize=8)
    if runs:
        n = max(len(r["epochs"]) for r in runs)
        ax.set_xticks(range(1, n + 1))
        ax.legend(fontsize=8)
    else:
        _note(ax, "no run trained\n" + _failed_note(report))
    test_images = report.get("settings", {}).get("test_images", "?")
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"Test accuracy after each epoch ({test_images} test images)")
    _subtitle(fig, report)
    fig.tight_layout()
    return fig


def plot_speedup(report):
    """Steady-state images/s of every run relative to gpuaccel on the CPU (1.0 = the CPU)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    runs = _runs(report)
    # the emulator is left out: its ratio to the CPU is no GPU speedup
    emulated = [r for r in runs if r.get("emulated")]
    runs = [r for r in runs if not r.get("emulated")]
    cpu = next((r for r in runs if r["device"] == "cpu"), None)

    def rate(r):
        s = r.get("summary", {})
        return s.get("steady_images_per_s") or (r["epochs"][0].get("images_per_s") if r["epochs"] else None)

    if cpu is None or not rate(cpu):
        _note(ax, "no gpuaccel CPU run to compare against\n" + _failed_note(report))
    else:
        names = [r["device"] for r in runs]
        values = [rate(r) / rate(cpu) for r in runs]
        bars = ax.bar(names, values, color=[_color(report, n) for n in names])
        for bar, v in zip(bars, values):
            ax.annotate(f"{v:.2f}x", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=9)
        ax.axhline(1.0, color="black", lw=0.8)
        ax.set_ylim(0, max(values) * 1.25)
        missing = _failed_note(report)
        left_out = [f"{device_label(r)}: the CUDA emulator is not a GPU" for r in emulated]
        text = "\n".join((["not measured:", missing] if missing else [])
                         + (["left out:"] + left_out if left_out else []))
        if text:
            ax.text(0.02, 0.97, text, transform=ax.transAxes, va="top", fontsize=7, color="dimgray")
        steady = all(r.get("summary", {}).get("steady_images_per_s") for r in runs)
        basis = "steady epochs, warm-up excluded" if steady else "epoch 1 only, warm-up included"
        ax.set_xlabel(f"run (images/s over the {basis})")
    ax.set_ylabel("images/s relative to gpuaccel cpu")
    ax.set_title("Speedup over gpuaccel on the CPU (same run, higher is faster)")
    _subtitle(fig, report)
    fig.tight_layout()
    return fig


PLOTTERS = {
    "epoch_time": plot_epoch_time,
    "step_time": plot_step_time,
    "batch_sweep": plot_batch_sweep,
    "accuracy": plot_accuracy,
    "speedup": plot_speedup,
}


def write_plots(report, out_dir, dpi=110):
    """Draw every plot of ``report`` into ``out_dir``; return {name: file name}."""
    plt = _pyplot()
    os.makedirs(out_dir, exist_ok=True)
    written = {}
    for name, plot in PLOTTERS.items():
        if name == "batch_sweep" and not report.get("sweep"):
            continue
        fig = plot(report)
        fig.savefig(os.path.join(out_dir, PLOT_FILES[name]), dpi=dpi)
        plt.close(fig)
        written[name] = PLOT_FILES[name]
    return written
