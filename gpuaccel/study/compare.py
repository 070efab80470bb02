"""Comparing machines: several bench reports side by side.

    python -m gpuaccel.bench --compare A/report.json B/report.json ... [--out DIR]

The CPU and the GPU users weigh are often in different machines, so each run of
``python -m gpuaccel.bench`` writes a report.json and this puts several of them in one
report (DIR/compare.md, compare.json and PNG plots): what each machine is, the steady epoch
time, images/s and final accuracy of every device of every run, images/s per batch size
from the sweeps, and the speedup of each over the first run's first device. Runs whose
settings make a comparison unfair (other data, batch, epochs, precision, ...) get a warning
naming the setting; thread counts are reported, not warned about: they are often the point.
"""
import json
import os

# settings that change what a run measures: a difference makes the comparison unfair
FAIR_KEYS = (("data", "data set"), ("image_shape", "image shape"), ("train_images", "training images"),
             ("test_images", "test images"), ("batch_size", "batch size"), ("epochs", "epochs"),
             ("precision", "precision"), ("steps_per_execution", "steps per call"), ("model", "model"),
             ("optimizer", "optimizer"), ("sweep_images", "sweep images"))


def load_report(path):
    """A bench report.json (or the folder holding one), checked; ValueError says what is wrong."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, "report.json")
    try:
        with open(path) as f:
            report = json.load(f)
    except OSError as e:
        raise ValueError(f"{path}: cannot read it ({e.strerror or e})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not JSON ({e})") from None
    if not isinstance(report, dict) or report.get("tool") != "gpuaccel.bench" or "devices" not in report:
        raise ValueError(f"{path}: not a report of python -m gpuaccel.bench")
    report["_path"] = path
    return report


def _machine(report):
    info = report.get("info", {})
    cpu, cuda = info.get("cpu", {}), info.get("cuda", {})
    gpus = [d.get("name") for d in cuda.get("devices", [])] if cuda.get("available") else []
    threads = report.get("settings", {}).get("threads")
    text = f"{cpu.get('model', '?')} ({cpu.get('usable_cores', '?')} usable cores, {threads} thread(s))"
    return text + (f", GPU: {', '.join(map(str, gpus))}" + (" (emulated)" if cuda.get("emulated") else "")
                   if gpus else "")


def _label(i, report):
    return f"run {chr(ord('A') + i)}" if i < 26 else f"run {i + 1}"


def rows(reports):
    """One row per (run, device or peer): label, steady epoch s, images/s, accuracy, speedup."""
    out = []
    for i, r in enumerate(reports):
        for d in r.get("devices", []) + r.get("peers", []):
            s = d.get("summary", {})
            steady = s.get("steady_epoch_time_s") or s.get("warmup_epoch_time_s")
            ips = s.get("steady_images_per_s")
            if ips is None and d.get("epochs"):
                ips = d["epochs"][-1].get("images_per_s")
            name = f"{d['device']} (emulated)" if d.get("emulated") else d["device"]
            out.append({"run": _label(i, r), "device": name, "threads": r.get("settings", {}).get("threads"),
                        "epoch_s": steady, "images_per_s": ips, "accuracy": s.get("final_val_accuracy"),
                        "error": d.get("error"), "emulated": bool(d.get("emulated"))})
    base = next((x for x in out if x["epoch_s"] and not x["error"]), None)
    for x in out:
        ok = base is not None and x["epoch_s"] and not x["error"]
        x["speedup"] = base["epoch_s"] / x["epoch_s"] if ok else None
    return out


def unfair(reports):
    """[(setting, {run: value})] for every setting that differs between the runs."""
    out = []
    for key, name in FAIR_KEYS:
        values = {_label(i, r): r.get("settings", {}).get(key) for i, r in enumerate(reports)}
        if len({json.dumps(v, sort_keys=True) for v in values.values()}) > 1:
            out.append((name, values))
    return out


def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


def format_markdown(reports, table, warnings, plots):
    lines = ["# gpuaccel: runs from several machines side by side", ""]
    for i, r in enumerate(reports):
        lines.append(f"- **{_label(i, r)}** ({r.get('created', '?')}): {_machine(r)}; `{r.get('command', '?')}`"
                     f" ({r['_path']})")
    lines.append("")
    if warnings:
        lines += ["> **Warning: these runs are not directly comparable.** They differ in:", ">"]
        for name, values in warnings:
            lines.append("> - " + name + ": " + ", ".join(f"{k} {v}" for k, v in values.items()))
        lines += ["", "Ratios between such runs mix the hardware with the setting; rerun with equal settings "
                      "before quoting them.", ""]
    busy = [f"{_label(i, r)}: {r['_busy']}" for i, r in enumerate(reports) if r.get("_busy")]
    if busy:
        lines += ["> **Note (busy machines):** " + " ".join(busy), ""]
    base = next((x for x in table if x["speedup"] == 1.0), None)
    lines += ["## Steady state (mean of the epochs after the first)", "",
              f"Speedup: the steady epoch time of {base['run']} {base['device']} over each row's."
              if base else "No run has a usable epoch time.", "",
              "| run | device | threads | epoch s | images/s | final test acc | speedup |", "|---|---|---|---|---|---|---|"]
    for x in table:
        if x["error"]:
            lines.append(f"| {x['run']} | {x['device']} | {x['threads']} | failed: {x['error']} | | | |")
            continue
        lines.append(f"| {x['run']} | {x['device']} | {x['threads']} | {_fmt(x['epoch_s'], '.2f')} | "
                     f"{_fmt(x['images_per_s'], ',.0f')} | {_fmt(x['accuracy'], '.4f')} | "
                     f"{_fmt(x['speedup'], '.2f') + 'x' if x['speedup'] is not None else '-'} |")
    sweep = sweep_table(reports)
    if sweep:
        sizes = sorted({b for _, pts in sweep for b in pts})
        lines += ["", "## Images/s per batch size (each run's sweep)", "",
                  "| run / device | " + " | ".join(map(str, sizes)) + " |", "|---" * (len(sizes) + 1) + "|"]
        for name, pts in sweep:
            lines.append(f"| {name} | " + " | ".join(_fmt(pts.get(b), ',.0f') for b in sizes) + " |")
    if plots:
        lines += ["", "## Plots", ""] + [f"![{k}]({os.path.basename(p)})" for k, p in plots.items()]
    return "\n".join(lines) + "\n"


def sweep_table(reports):
    """[(run + column label, {batch: images/s})] from each run's batch-size sweep."""
    out = []
    for i, r in enumerate(reports):
        cols = {}
        for row in r.get("sweep") or []:
            if row.get("images_per_s") is not None and not row.get("error"):
                label = row.get("label", row.get("device"))
                if row.get("threads") and "thr" not in label:
                    label += f" {row['threads']} thr"
                cols.setdefault(label, {})[row["batch_size"]] = row["images_per_s"]
        out += [(f"{_label(i, r)} {label}", pts) for label, pts in cols.items()]
    return out


def write_plots(reports, table, out_dir):
    """compare_images_per_s.png (bars), compare_batch_sweep.png, compare_accuracy.png."""
    from .plots import _pyplot

    plt = _pyplot()
    paths = {}
    ok = [x for x in table if not x["error"] and x["images_per_s"]]
    if ok:
        fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(ok)), 3.8))
        names = [f"{x['run']}\n{x['device']}\n{x['threads']} thr" for x in ok]
        bars = ax.bar(names, [x["images_per_s"] for x in ok], color="tab:blue")
        for b, x in zip(bars, ok):
            ax.annotate(f"{x['images_per_s']:,.0f}" + (f"\n{x['speedup']:.2f}x" if x["speedup"] else ""),
                        (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom", fontsize=8)
        ax.set_ylabel("training images/s (steady epochs)")
        ax.set_title("Steady-state training throughput per run and device")
        ax.margins(y=0.2)
        fig.tight_layout()
        paths["images_per_s"] = os.path.join(out_dir, "compare_images_per_s.png")
        fig.savefig(paths["images_per_s"], dpi=110)
        plt.close(fig)
    sweep = sweep_table(reports)
    if sweep:
        fig, ax = plt.subplots(figsize=(6.5, 4))
        for name, pts in sweep:
            b = sorted(pts)
            ax.plot(b, [pts[k] for k in b], marker="o", label=name)
        sizes = sorted({b for _, pts in sweep for b in pts})
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes)
        ax.set_xticklabels([str(b) for b in sizes])
        ax.set_xlabel("batch size")
        ax.set_ylabel("training images/s")
        ax.set_title("Images/s against batch size, each run's sweep")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        paths["batch_sweep"] = os.path.join(out_dir, "compare_batch_sweep.png")
        fig.savefig(paths["batch_sweep"], dpi=110)
        plt.close(fig)
    curves = [(f"{_label(i, r)} {d['device']} {r.get('settings', {}).get('threads')} thr",
               [e.get("val_accuracy") for e in d.get("epochs", [])])
              for i, r in enumerate(reports) for d in r.get("devices", []) + r.get("peers", []) if not d.get("error")]
    curves = [(n, c) for n, c in curves if c and all(v is not None for v in c)]
    if curves:
        fig, ax = plt.subplots(figsize=(6.5, 4))
        for name, c in curves:
            ax.plot(range(1, len(c) + 1), c, marker="o", label=name)
        ax.set_xticks(range(1, max(len(c) for _, c in curves) + 1))
        ax.set_xlabel("epoch")
        ax.set_ylabel("test accuracy")
        ax.set_title("Test accuracy per epoch, every run and device")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        paths["accuracy"] = os.path.join(out_dir, "compare_accuracy.png")
        fig.savefig(paths["accuracy"], dpi=110)
        plt.close(fig)
    return paths


def compare(paths, out_dir, plots=True):
    """Load the reports, write compare.md / compare.json (and plots) into out_dir; returns
    (markdown path, the table rows, the unfairness warnings)."""
    from .bench import busy_note
    from .report import write_atomic as _write_atomic

    if len(paths) < 2:
        raise ValueError("--compare needs at least two reports")
    reports = [load_report(p) for p in paths]
    for r in reports:
        r["_busy"] = busy_note(r.get("settings", {}))
    table = rows(reports)
    warnings = unfair(reports)
    os.makedirs(out_dir, exist_ok=True)
    plot_paths, plots_error = {}, None
    if plots:
        try:
            plot_paths = write_plots(reports, table, out_dir)
        except ModuleNotFoundError as e:
            from .._extras import hint

            plots_error = f"{e.name or 'matplotlib'} is not installed: {hint('plots', 'matplotlib')}"
    md = format_markdown(reports, table, warnings, plot_paths)
    if plots_error:
        md += f"\nNo plots: {plots_error}\n"
    md_path = os.path.join(out_dir, "compare.md")
    _write_atomic(md_path, md)
    _write_atomic(os.path.join(out_dir, "compare.json"),
                  json.dumps({"reports": [r["_path"] for r in reports], "rows": table,
                              "unfair": [{"setting": n, "values": v} for n, v in warnings],
                              "plots": plot_paths, "plots_error": plots_error}, indent=2) + "\n")
    return md_path, table, warnings
