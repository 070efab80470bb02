"""What bench, peers, plots and compare share: per-epoch rows from a Keras-style history,
the warm-up / steady-state summary, device labels, atomic writes. Imports nothing of
the study's other modules, so none of them imports another at module level to get these."""
import os
import tempfile

import numpy as np

EPOCH_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy", "epoch_time_s",
              "step_time_ms_p50", "step_time_ms_p95", "images_per_s")


def device_label(result):
    """A result's device name for tables and plots: 'cuda (emulated)' for the emulator."""
    return f"{result['device']} (emulated)" if result.get("emulated") else result["device"]


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


def write_atomic(path, text):
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
