"""Sequential models with a Keras-style API. The network, its training step and
its buffers live in C (gpuaccel._C.Net) on the chosen device; this file handles
the data loop, bookkeeping and files."""
import hashlib
import io
import json
import os
import tempfile
import time

import numpy as np

from . import _C, callbacks as cbks, layers as L, optimizers
from ._device import resolve

FORMAT = "gpuaccel-model-1"


def _as_images(x, input_shape=None):
    """x as float32 (N, C, H, W); (N, H, W) gains a channel axis."""
    if isinstance(x, _C.Tensor):
        x = x.numpy()
    x = np.asarray(x)
    if x.dtype.kind not in "fiub":
        raise TypeError(f"x must be numeric, got dtype {x.dtype}")
    if x.ndim == 3:
        x = x[:, None, :, :]
    if x.ndim != 4:
        raise ValueError(f"x must have shape (N, C, H, W) or (N, H, W), got {x.shape}")
    if input_shape is not None and tuple(x.shape[1:]) != tuple(input_shape):
        raise ValueError(f"x has samples of shape {tuple(x.shape[1:])}, the model expects {tuple(input_shape)}")
    return np.ascontiguousarray(x, dtype=np.float32)


def _as_labels(y, n, classes):
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.dtype.kind not in "iu":
        raise TypeError(f"labels must be integer class indices, got dtype {y.dtype}")
    if y.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {y.shape}")
    if n and (y.min() < 0 or y.max() >= classes):
        raise ValueError(f"labels must be in [0, {classes}), got values from {y.min()} to {y.max()}")
    return y.astype(np.int32)


def _check_finite(x, what):
    if not np.isfinite(x).all():
        raise ValueError(f"{what} contains NaN or Inf")


class Sequential:
    """A stack of layers. `input_shape` is (C, H, W); `seed` fixes the initial
    weights and the dropout masks (same seed, same run, on every device)."""

    def __init__(self, layers=None, input_shape=None, name="sequential", seed=None):
        self.layers = []
        self.name = name
        self.input_shape = tuple(int(d) for d in input_shape) if input_shape is not None else None
        self.seed = int(np.random.SeedSequence().entropy % 2**63) if seed is None else int(seed)
        self.optimizer = None
        self.loss = None
        self.metrics = []
        self.device = "cpu"
        self.stop_training = False
        self._net = None
        for layer in layers or []:
            self.add(layer)

    # ---- building -------------------------------------------------------------
    def add(self, layer):
        if not isinstance(layer, L.Layer):
            raise TypeError(f"expected a gpuaccel.layers.Layer, got {type(layer).__name__}")
        if self._net is not None:
            raise RuntimeError("layers cannot be added after the model is built")
        self.layers.append(layer)

    def build(self, input_shape=None):
        """Create the network in C on self.device (keeps the weights it had)."""
        if input_shape is not None:
            self.input_shape = tuple(int(d) for d in input_shape)
        if self.input_shape is None:
            raise ValueError("the model needs input_shape=(C, H, W) (or call fit/build with data)")
        if len(self.input_shape) != 3:
            raise ValueError(f"input_shape must be (C, H, W), got {self.input_shape}")
        if not self.layers:
            raise ValueError("the model has no layers")
        old = self._net.get_params() if self._net is not None else None
        net = _C.Net([layer._spec() for layer in self.layers], self.input_shape, self.device, self.seed)
        if old is not None:
            net.set_params(old)
        self._net = net
        if self.optimizer is not None:
            self._net.set_optimizer(*self.optimizer._args())
        return self

    @property
    def built(self):
        return self._net is not None

    def _require_net(self, x=None):
        if self._net is None:
            self.build(None if x is None or self.input_shape is not None else _as_images(x).shape[1:])
        return self._net

    def compile(self, optimizer="adam", loss="sparse_categorical_crossentropy", metrics=("accuracy",), device=None):
        """Choose optimizer, loss and device. Moving to another device keeps the weights
        (the optimizer state starts afresh)."""
        if loss not in ("sparse_categorical_crossentropy", "softmax_cross_entropy"):
            raise ValueError(f"unsupported loss {loss!r}: gpuaccel trains with 'sparse_categorical_crossentropy' on logits")
        for m in metrics or ():
            if m not in ("accuracy", "acc", "sparse_categorical_accuracy"):
                raise ValueError(f"unsupported metric {m!r}")
        self.optimizer = optimizers.get(optimizer)
        self.loss, self.metrics = loss, list(metrics or ())
        new_device = resolve(device) if device is not None else self.device
        moved = new_device != self.device
        self.device = new_device
        if self._net is not None and moved:
            self.build()
        elif self._net is not None:
            self._net.set_optimizer(*self.optimizer._args())
        elif self.input_shape is not None:
            self.build()
        return self

    # ---- training -------------------------------------------------------------
    def fit(self, x, y, epochs=1, batch_size=32, validation_data=None, verbose=1, seed=None, shuffle=True,
            callbacks=None, initial_epoch=0):
        """Train; returns a History whose `history` holds one value per epoch of:
        loss, accuracy, [val_loss, val_accuracy,] epoch_time_s, step_time_ms_p50,
        step_time_ms_p95, images_per_s.

        epoch_time_s covers the whole epoch: shuffling, batch gathering, the copies
        to the device and every step. Step times are wall-clock per train_step call,
        which returns only after the step finished on the device."""
        if self.optimizer is None:
            raise RuntimeError("call compile() before fit()")
        if not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if not isinstance(epochs, (int, np.integer)) or epochs < 0:
            raise ValueError(f"epochs must be an int >= 0, got {epochs!r}")
        if verbose not in (0, 1, 2):
            raise ValueError("verbose must be 0, 1 or 2")
        x = _as_images(x, self.input_shape)
        net = self._require_net(x)
        n = x.shape[0]
        if n == 0:
            raise ValueError("cannot fit on an empty data set")
        _check_finite(x, "x")
        y = _as_labels(y, n, net.classes)
        val = None
        if validation_data is not None:
            xv, yv = validation_data[:2]
            xv = _as_images(xv, self.input_shape)
            _check_finite(xv, "validation x")
            val = (xv, _as_labels(yv, xv.shape[0], net.classes))

        history = cbks.History()
        cb_list = [history] + list(callbacks or []) + ([cbks.ProgressBar(verbose)] if verbose else [])
        steps = -(-n // batch_size)
        rng = np.random.default_rng(self.seed if seed is None else seed)
        self.stop_training = False
        for cb in cb_list:
            cb.model = self
            cb.on_train_begin({"epochs": epochs, "steps": steps})
        step_ms = np.empty(steps)
        try:
            for epoch in range(initial_epoch, epochs):
                for cb in cb_list:
                    cb.on_epoch_begin(epoch)
                t0 = time.perf_counter()
                order = rng.permutation(n) if shuffle else np.arange(n)
                loss_sum, correct = 0.0, 0
                for i in range(steps):
                    idx = order[i * batch_size:(i + 1) * batch_size]
                    xb, yb = x[idx], y[idx]
                    s0 = time.perf_counter()
                    loss, right = net.train_step(xb, yb)
                    step_ms[i] = 1000.0 * (time.perf_counter() - s0)
                    if not np.isfinite(loss):
                        raise FloatingPointError(
                            f"loss became {loss} at epoch {epoch + 1}, step {i + 1}: lower the learning rate "
                            "or check the inputs (the weights of that step were kept)")
                    loss_sum += loss * len(idx)
                    correct += right
                    done = min((i + 1) * batch_size, n)
                    for cb in cb_list:
                        cb.on_batch_end(i, {"loss": loss_sum / done, "accuracy": correct / done})
                epoch_time = time.perf_counter() - t0
                logs = {"loss": loss_sum / n, "accuracy": correct / n}
                if val is not None:
                    logs["val_loss"], logs["val_accuracy"] = self.evaluate(*val, batch_size=max(batch_size, 256))
                logs.update(epoch_time_s=epoch_time, step_time_ms_p50=float(np.percentile(step_ms, 50)),
                            step_time_ms_p95=float(np.percentile(step_ms, 95)), images_per_s=n / epoch_time)
                for cb in cb_list:
                    cb.on_epoch_end(epoch, logs)
                if self.stop_training:
                    break
        finally:
            for cb in cb_list:
                cb.on_train_end()
        self.history = history
        return history

    def _batches(self, x, batch_size):
        if not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        for i in range(0, x.shape[0], batch_size):
            yield i, x[i:i + batch_size]

    def evaluate(self, x, y, batch_size=256, verbose=0):
        """Returns (loss, accuracy) in inference mode (dropout off)."""
        x = _as_images(x, self.input_shape)
        net = self._require_net(x)
        if x.shape[0] == 0:
            raise ValueError("cannot evaluate on an empty data set")
        _check_finite(x, "x")
        y = _as_labels(y, x.shape[0], net.classes)
        loss_sum, correct = 0.0, 0
        for i, xb in self._batches(x, batch_size):
            l, c = net.evaluate(xb, y[i:i + xb.shape[0]])
            loss_sum += l
            correct += c
        n = x.shape[0]
        if verbose:
            print(f"loss: {loss_sum / n:.4f} - accuracy: {correct / n:.4f}")
        return loss_sum / n, correct / n

    def predict(self, x, batch_size=256):
        """Logits (N, classes) in inference mode."""
        x = _as_images(x, self.input_shape)
        net = self._require_net(x)
        if x.shape[0] == 0:
            return np.zeros((0, net.classes), np.float32)
        return np.concatenate([net.predict(xb) for _, xb in self._batches(x, batch_size)])

    # ---- weights --------------------------------------------------------------
    def _shapes(self):
        """Per layer: list of parameter shapes, from the layer table in C."""
        net = self._require_net()
        shapes, in_shape = [], self.input_shape
        for layer, (out_shape, *_rest) in zip(self.layers, net.layer_info()):
            shapes.append(layer._param_shapes(in_shape))
            in_shape = out_shape
        return shapes

    def get_weights(self):
        """[W, b] per layer with parameters, in layer order, PyTorch layouts (copies)."""
        net = self._require_net()
        flat = net.get_params()
        out = []
        for shapes, (_, w_off, nw, b_off, nb) in zip(self._shapes(), net.layer_info()):
            if nw:
                out.append(flat[w_off:w_off + nw].reshape(shapes[0]).copy())
            if nb:
                out.append(flat[b_off:b_off + nb].reshape(shapes[1]).copy())
        return out

    def set_weights(self, weights):
        net = self._require_net()
        expected = [s for shapes in self._shapes() for s in shapes]
        weights = list(weights)
        if len(weights) != len(expected):
            raise ValueError(f"expected {len(expected)} arrays, got {len(weights)}")
        parts = []
        for i, (w, shape) in enumerate(zip(weights, expected)):
            w = np.asarray(w)
            if w.shape != tuple(shape):
                raise ValueError(f"weight {i}: expected shape {tuple(shape)}, got {w.shape}")
            if w.dtype.kind != "f":
                raise TypeError(f"weight {i}: expected floats, got dtype {w.dtype}")
            _check_finite(w, f"weight {i}")
            parts.append(w.astype(np.float32).ravel())
        flat = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        net.set_params(flat)

    def count_params(self):
        return self._require_net().nparams

    def summary(self, print_fn=print):
        net = self._require_net()
        rows = [("Layer (type)", "Output Shape", "Param #")]
        for layer, (out_shape, _, nw, _, nb) in zip(self.layers, net.layer_info()):
            shape = (None, out_shape[0]) if out_shape[1:] == (1, 1) else (None,) + tuple(out_shape)
            rows.append((f"{layer.name} ({type(layer).__name__})", str(shape), f"{nw + nb:,}"))
        widths = [max(len(r[i]) for r in rows) + 2 for i in range(3)]
        line = "-" * sum(widths)
        text = [f'Model: "{self.name}"  (device: {self.device})', line]
        text += ["".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows[:1]] + ["=" * sum(widths)]
        text += ["".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows[1:]]
        text += ["=" * sum(widths), f"Total params: {net.nparams:,}", line]
        print_fn("\n".join(text))

    # ---- files ----------------------------------------------------------------
    def get_config(self):
        return {"format": FORMAT, "name": self.name, "input_shape": list(self.input_shape or []), "seed": self.seed,
                "layers": [{"class": type(l).__name__, "config": l.get_config(), "trainable": l.trainable}
                           for l in self.layers],
                "optimizer": optimizers.serialize(self.optimizer) if self.optimizer else None,
                "loss": self.loss, "metrics": self.metrics}

    def save(self, path):
        """Write config (JSON) and weights to one .npz file, atomically: the data goes to
        a temporary file in the same folder, is flushed to disk, and only then renamed
        over `path`, so an interrupted save leaves the previous file intact."""
        path = os.fspath(path)
        weights = self.get_weights()
        digest = hashlib.sha256()
        for w in weights:
            digest.update(np.ascontiguousarray(w).tobytes())
        config = dict(self.get_config(), weights_sha256=digest.hexdigest())
        arrays = {f"w{i:03d}": w for i, w in enumerate(weights)}
        arrays["config"] = np.frombuffer(json.dumps(config).encode(), dtype=np.uint8)
        folder = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise


def load(path, device=None):
    """Rebuild a model written by Sequential.save (checksum verified), compiled
    with its saved optimizer on `device` (default 'cpu')."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            blob = f.read()
        with np.load(io.BytesIO(blob), allow_pickle=False) as data:
            config = json.loads(bytes(data["config"]).decode())
            names = sorted(k for k in data.files if k.startswith("w"))
            weights = [data[k] for k in names]
    except FileNotFoundError:
        raise
    except Exception as e:
        raise ValueError(f"{path}: not a readable gpuaccel model file ({type(e).__name__}: {e})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ValueError(f"{path}: not a gpuaccel model file (format {config.get('format') if isinstance(config, dict) else None!r})")
    digest = hashlib.sha256()
    for w in weights:
        digest.update(np.ascontiguousarray(w).tobytes())
    if digest.hexdigest() != config.get("weights_sha256"):
        raise ValueError(f"{path}: weights do not match their checksum (file corrupted)")
    try:
        layers = []
        for spec in config["layers"]:
            cls = L.LAYERS[spec["class"]]
            layer = cls.from_config(spec["config"])
            layer.trainable = spec.get("trainable", True)
            layers.append(layer)
        model = Sequential(layers, input_shape=config["input_shape"], name=config.get("name", "sequential"),
                           seed=config.get("seed", 0))
    except (KeyError, TypeError) as e:
        raise ValueError(f"{path}: bad model config ({e})") from None
    model.device = resolve(device)
    model.build()
    model.set_weights(weights)
    if config.get("optimizer"):
        model.compile(optimizer=optimizers.get(config["optimizer"]), loss=config.get("loss") or "sparse_categorical_crossentropy",
                      metrics=config.get("metrics") or ("accuracy",))
    return model


def reference_cnn(seed=None):
    """The reference CNN of the study (DESIGN.md section 3), uncompiled:
    Conv(32, 3x3 same, ReLU) -> MaxPool 2 -> Conv(64, 3x3 same, ReLU) -> MaxPool 2 ->
    Flatten -> Dense(128, ReLU) -> Dense(10) logits, for (1, 28, 28) images."""
    return Sequential([L.Conv2D(32, 3, padding="same", activation="relu"), L.MaxPool2D(2),
                       L.Conv2D(64, 3, padding="same", activation="relu"), L.MaxPool2D(2),
                       L.Flatten(), L.Dense(128, activation="relu"), L.Dense(10)],
                      input_shape=(1, 28, 28), name="reference_cnn", seed=seed)
