"""Keras-style callbacks: History, the progress bar, EarlyStopping, ModelCheckpoint,
CSVLogger, LearningRateScheduler, ReduceLROnPlateau, TerminateOnNaN (Keras's argument names)."""
import csv
import math
import os
import sys
import time


class Callback:
    """Hooks called by Sequential.fit; `self.model` is set before training starts."""

    model = None

    def on_train_begin(self, logs=None): ...
    def on_train_end(self, logs=None): ...
    def on_epoch_begin(self, epoch, logs=None): ...
    def on_epoch_end(self, epoch, logs=None): ...
    def on_batch_end(self, batch, logs=None): ...


class History(Callback):
    """`history[key]` is a list with one value per epoch."""

    def __init__(self):
        self.history = {}
        self.epoch = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(v)


def _in_notebook():
    try:
        from IPython import get_ipython

        shell = get_ipython()
        return shell is not None and "ZMQ" in type(shell).__name__
    except Exception:
        return False


def _fmt_time(s):
    if s >= 3600:
        return f"{int(s // 3600)}:{int(s % 3600 // 60):02d}:{int(s % 60):02d}"
    if s >= 60:
        return f"{int(s // 60)}:{int(s % 60):02d}"
    return f"{s:.0f}s"


class ProgressBar(Callback):
    """The progress shown by ``fit(verbose=...)``.

    verbose=1: per epoch, a Keras-like bar ``12/47 [=====>....] - ETA: 3s - loss: ...``
    that ends as ``47/47 [======] - 5s 98ms/step - loss: ... - val_accuracy: ...``.
    Where it is redrawn depends on where it runs:

    - Jupyter: one output line per epoch, updated in place through an IPython display
      handle at most every ``interval`` seconds (0.5), so a notebook is never flooded;
    - a terminal: the line is rewritten with ``\\r`` at most every ``interval`` s (0.1);
    - a pipe or a log file: no intermediate redraws, only the finished line per epoch.

    verbose=2: one line per epoch (time, ms/step, metrics); verbose=0: silent.
    """

    METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")

    def __init__(self, verbose=1, stream=None, interval=None, notebook=None):
        if verbose not in (0, 1, 2):
            raise ValueError("verbose must be 0, 1 or 2")
        self.verbose = verbose
        self.notebook = (_in_notebook() and stream is None) if notebook is None else notebook
        self.stream = stream or sys.stdout
        self.interval = interval if interval is not None else (0.5 if self.notebook else 0.1)
        self.epochs, self.steps, self.handle = 1, 1, None

    def _live(self):
        """True when intermediate redraws are wanted (a notebook or a terminal)."""
        if self.notebook:
            return True
        isatty = getattr(self.stream, "isatty", None)
        try:
            return bool(isatty and isatty())
        except ValueError:  # closed stream
            return False

    def on_train_begin(self, logs=None):
        self.epochs = (logs or {}).get("epochs", 1)
        self.steps = (logs or {}).get("steps", 1)

    def _show(self, text, final=False):
        """Draw ``text`` as the current epoch's line."""
        if self.notebook:
            try:
                from IPython.display import display

                if self.handle is None:
                    self.handle = display({"text/plain": text}, raw=True, display_id=True)
                else:
                    self.handle.update({"text/plain": text}, raw=True)
                return
            except Exception:  # no usable IPython after all: fall back to the stream
                self.notebook = False
        if self._live():
            self.stream.write("\r" + text + ("\n" if final else ""))
        elif final:
            self.stream.write(text + "\n")
        self.stream.flush()

    def on_epoch_begin(self, epoch, logs=None):
        self.t0 = time.perf_counter()
        self.last_draw = -math.inf  # the first step is drawn at once
        self.handle = None
        if self.verbose == 1:
            header = f"Epoch {epoch + 1}/{self.epochs}"
            if self.notebook:
                self.header = header + "\n"  # kept on the epoch's own display line
            else:
                self.header = ""
                self.stream.write(header + "\n")
                self.stream.flush()

    def _metrics(self, logs):
        return " - ".join(f"{k}: {logs[k]:.4f}" for k in self.METRICS if k in logs)

    def _bar(self, step, logs, final):
        elapsed = logs.get("epoch_time_s") if final else None
        elapsed = elapsed if elapsed is not None else time.perf_counter() - self.t0
        ms = logs.get("step_time_ms_p50") if final else None
        ms = ms if ms is not None else 1000.0 * elapsed / max(step, 1)
        width = 30
        done = width if final else int(width * step / self.steps)
        bar = "=" * max(done - 1, 0) + (">" if not final and done else "=" if done else "") + "." * (width - done)
        tail = f"{_fmt_time(elapsed)} {ms:.0f}ms/step" if final else f"ETA: {_fmt_time(ms * (self.steps - step) / 1000)}"
        return f"{step}/{self.steps} [{bar}] - {tail} - {self._metrics(logs)}"

    def on_batch_end(self, batch, logs=None):
        if self.verbose != 1 or batch + 1 >= self.steps:  # the last step is drawn by on_epoch_end
            return
        now = time.perf_counter()
        if now - self.last_draw < self.interval or not self._live():
            return
        self.last_draw = now
        self._show(self.header + self._bar(batch + 1, logs or {}, final=False))

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.verbose == 1:
            self._show(self.header + self._bar(self.steps, logs, final=True), final=True)
        elif self.verbose == 2:
            self.stream.write(f"Epoch {epoch + 1}/{self.epochs} - {logs.get('epoch_time_s', 0):.1f}s - "
                              f"{logs.get('step_time_ms_p50', 0):.0f}ms/step - {self._metrics(logs)}\n")
            self.stream.flush()


def _better(mode, monitor):
    if mode == "auto":
        mode = "max" if "acc" in monitor else "min"
    return (lambda a, b: a > b) if mode == "max" else (lambda a, b: a < b)


class EarlyStopping(Callback):
    """Stop when `monitor` has not improved by `min_delta` for `patience` epochs."""

    def __init__(self, monitor="val_loss", min_delta=0.0, patience=0, mode="auto", restore_best_weights=False):
        self.monitor, self.min_delta, self.patience = monitor, abs(min_delta), patience
        sign = -1 if (mode == "max" or (mode == "auto" and "acc" in monitor)) else 1
        self.improved = lambda cur, best: sign * (best - cur) > self.min_delta
        self.restore_best_weights = restore_best_weights

    def on_train_begin(self, logs=None):
        self.best, self.wait, self.best_weights, self.stopped_epoch = None, 0, None, None

    def on_epoch_end(self, epoch, logs=None):
        cur = (logs or {}).get(self.monitor)
        if cur is None or (isinstance(cur, float) and math.isnan(cur)):
            return
        if self.best is None or self.improved(cur, self.best):
            self.best, self.wait = cur, 0
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            return
        self.wait += 1
        if self.wait > self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True
            if self.restore_best_weights and self.best_weights is not None:
                self.model.set_weights(self.best_weights)


class ModelCheckpoint(Callback):
    """Save the model after each epoch (or only when `monitor` improves). The file
    is written to a temporary name and renamed, so a crash never leaves half a file.
    `filepath` may contain {epoch} and any log key, e.g. 'ckpt-{epoch:02d}.npz'.

    Each file holds the optimizer's state too (Sequential.save(include_optimizer=True)),
    so training resumes from it: ga.models.load(file).fit(..., initial_epoch=epoch).
    save_weights_only=True (Keras's name) leaves the optimizer state out.

    keep_last=K (not a Keras argument): only the K newest files this callback wrote
    remain; an older one is deleted after the new one is in place. Files it did not
    write (earlier runs, other callbacks) are never touched. None (the default) keeps
    every file."""

    def __init__(self, filepath, monitor="val_loss", save_best_only=False, mode="auto", save_weights_only=False,
                 keep_last=None):
        if keep_last is not None and (not isinstance(keep_last, int) or isinstance(keep_last, bool) or keep_last < 1):
            raise ValueError(f"keep_last must be None or an int >= 1, got {keep_last!r}")
        self.filepath, self.monitor, self.save_best_only = str(filepath), monitor, save_best_only
        self.save_weights_only, self.keep_last = bool(save_weights_only), keep_last
        self.better = _better(mode, monitor)
        self.best = None
        self._written = []  # absolute paths this callback wrote, oldest first

    def on_epoch_end(self, epoch, logs=None):
        from . import distributed as dist

        logs = logs or {}
        if self.save_best_only:
            cur = logs.get(self.monitor)
            if cur is None or (self.best is not None and not self.better(cur, self.best)):
                return
            self.best = cur
        path = self.filepath.format(epoch=epoch + 1, **logs)
        self.model.save(path, include_optimizer=not self.save_weights_only)
        if self.keep_last is None or dist._skip_io():  # ranks other than 0 write (and delete) nothing
            return
        path = os.path.abspath(path)
        if path in self._written:  # the same name again (no {epoch} in it): one file
            self._written.remove(path)
        self._written.append(path)
        while len(self._written) > self.keep_last:
            old = self._written.pop(0)
            try:
                os.remove(old)
            except FileNotFoundError:
                pass


class CSVLogger(Callback):
    """One CSV row per epoch: 'epoch' then every log key (sorted), flushed as written, so
    a crash keeps the finished epochs. append=True adds to an existing file (its header
    kept)."""

    def __init__(self, filename, separator=",", append=False):
        self.filename, self.sep, self.append = os.fspath(filename), separator, bool(append)
        self._file = self._writer = self._keys = None

    def on_train_begin(self, logs=None):
        had_rows = self.append and os.path.exists(self.filename) and os.path.getsize(self.filename) > 0
        self._file = open(self.filename, "a" if self.append else "w", newline="")
        self._writer, self._keys = None, None
        if had_rows:  # the columns are the file's own
            with open(self.filename, newline="") as f:
                header = next(csv.reader(f, delimiter=self.sep), None)
            self._keys = header[1:] if header else None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self._writer is None:
            new_file = self._keys is None
            self._keys = self._keys or sorted(logs)
            self._writer = csv.writer(self._file, delimiter=self.sep)
            if new_file:
                self._writer.writerow(["epoch"] + self._keys)
        self._writer.writerow([epoch] + [logs.get(k, "NA") for k in self._keys])
        self._file.flush()

    def on_train_end(self, logs=None):
        if self._file is not None:
            self._file.close()
        self._file = self._writer = None


class LearningRateScheduler(Callback):
    """Before each epoch: learning rate = schedule(epoch, current learning rate) (epochs
    count from 0), set in place: the optimizer's moments and step count are kept."""

    def __init__(self, schedule, verbose=0):
        if not callable(schedule):
            raise TypeError("schedule must be callable as schedule(epoch, lr)")
        self.schedule, self.verbose = schedule, verbose

    def on_epoch_begin(self, epoch, logs=None):
        lr = self.schedule(epoch, float(self.model.optimizer.learning_rate))
        if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not math.isfinite(lr) or lr < 0:
            raise ValueError(f"the schedule must return a finite float >= 0, got {lr!r} at epoch {epoch}")
        self.model._set_learning_rate(lr)
        if self.verbose:
            print(f"\nEpoch {epoch + 1}: LearningRateScheduler setting learning rate to {float(lr):g}.")


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by `factor` (never below `min_lr`) when `monitor` has
    not improved by `min_delta` for `patience` epochs; then wait `cooldown` epochs
    before counting again."""

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, verbose=0, mode="auto", min_delta=1e-4,
                 cooldown=0, min_lr=0.0):
        if not 0 <= factor < 1:
            raise ValueError(f"factor must be in [0, 1), got {factor!r}")
        self.monitor, self.factor, self.patience, self.verbose = monitor, float(factor), patience, verbose
        self.min_delta, self.cooldown, self.min_lr = abs(min_delta), cooldown, float(min_lr)
        sign = -1 if (mode == "max" or (mode == "auto" and "acc" in monitor)) else 1
        self.improved = lambda cur, best: sign * (best - cur) > self.min_delta
        self.best, self.wait, self.cooldown_counter = None, 0, 0

    def on_train_begin(self, logs=None):
        self.best, self.wait, self.cooldown_counter = None, 0, 0

    def on_epoch_end(self, epoch, logs=None):
        cur = (logs or {}).get(self.monitor)
        if cur is None or (isinstance(cur, float) and math.isnan(cur)):
            return
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self.best is None or self.improved(cur, self.best):
            self.best, self.wait = cur, 0
            return
        if self.cooldown_counter > 0:
            return
        self.wait += 1
        if self.wait < self.patience:
            return
        old = float(self.model.optimizer.learning_rate)
        if old > self.min_lr:
            new = max(old * self.factor, self.min_lr)
            self.model._set_learning_rate(new)
            if self.verbose:
                print(f"\nEpoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {new:g}.")
            self.cooldown_counter, self.wait = self.cooldown, 0


class TerminateOnNaN(Callback):
    """Stop training at the first batch whose loss is NaN or infinite, instead of fit()
    raising FloatingPointError (the weights of that step are kept, as then)."""

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            print(f"Batch {batch}: invalid loss {loss}, terminating training")
            self.model.stop_training = True
