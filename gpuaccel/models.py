"""Sequential models with a Keras-style API. The network, its training step and
its buffers live in C (gpuaccel._C.Net) on the chosen device; this file handles
the data loop, bookkeeping and files."""
import concurrent.futures
import hashlib
import io
import json
import math
import os
import re
import tempfile
import time
import weakref

import numpy as np

from . import _C, callbacks as cbks, layers as L, optimizers
from ._device import resolve

FORMAT = "gpuaccel-model-1"


def _as_images(x, input_shape=None):
    """x as float32 (N, C, H, W), or uint8 as it is (a folder's images: a memory map of
    the loader's cache is read a batch at a time, never copied whole as floats);
    (N, H, W) gains a channel axis."""
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
    return x if x.dtype == np.uint8 else np.ascontiguousarray(x, dtype=np.float32)


def _shuffle_rng(seed, initial_epoch, n, shuffle):
    """fit's order generator: default_rng(seed), one permutation(n) per epoch, advanced
    past the `initial_epoch` epochs a resumed run skips, so epoch k gets the same order
    whether the run started at 0 or resumed at k (a run from epoch 0 is unchanged)."""
    rng = np.random.default_rng(seed)
    if shuffle:
        for _ in range(int(initial_epoch)):
            rng.permutation(n)
    return rng


def _floats(x):
    """Images as the contiguous float32 the C network reads (uint8 values kept: 0..255)."""
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
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise ValueError(f"{what} contains NaN or Inf")


# Where fit's data live. On the CPU "device memory" is host memory: the net reads
# the caller's array in place. On a GPU, data that fit (device_data='auto': at most
# a quarter of the device's memory) are uploaded once; the epoch's order is an
# index array on the device and each batch is gathered there by a kernel. Data
# too large for that go in chunks of steps_per_execution batches, gathered on the
# host (the next chunk in one worker thread while the C call for this one runs:
# the call releases the GIL and waits for the device) and uploaded once per call.
# "auto": prefetch chunks on every device but the CPU; True / False force it.
_PREFETCH = "auto"
_DATA_TRAIN, _DATA_EVAL = 0, 1


def _gather(x, y, idx):
    """The rows `idx`: new contiguous float32 images and int32 labels."""
    return _floats(x[idx]), y[idx]


def _tensor_images(x, input_shape, device, what="x"):
    """A Tensor of images (N, C, H, W) on `device`, checked."""
    if x.device != device:
        raise ValueError(f"{what} is a Tensor on {x.device}, the model is on {device} (move one of them)")
    if len(x.shape) != 4 or (input_shape is not None and tuple(x.shape[1:]) != tuple(input_shape)):
        raise ValueError(f"{what} must have shape (N, *{tuple(input_shape) if input_shape else '(C, H, W)'}), "
                         f"got {x.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{what} has no samples")
    return x


def _fits_on_device(device, nbytes):
    if device == "cpu":
        return True
    from . import cuda
    index = int(device.split(":")[1]) if ":" in device else 0
    return nbytes <= cuda.get_device_properties(index)["total_memory"] // 4


class Sequential:
    """A stack of layers. `input_shape` is (C, H, W); `seed` fixes the initial
    weights and the dropout masks (same seed, same run, on every device)."""

    def __init__(self, layers=None, input_shape=None, name="sequential", seed=None):
        self.layers = []
        self.name = name
        self.input_shape = tuple(int(d) for d in input_shape) if input_shape is not None else None
        self.seed = int(np.random.SeedSequence().entropy % 2**63) if seed is None else int(seed)
        self.optimizer = None
        self.steps_per_execution = 1
        self.precision = "fp32"
        self.loss = None
        self.metrics = []
        self.device = "cpu"
        self.stop_training = False
        self._net = None
        # id(layer) -> the built model it came from, held until this one is built: the
        # layers' weights must survive that model being dropped in between (Keras keeps
        # weights in the layer objects; here they live in the source model's C network)
        self._donor_models = {}
        for layer in layers or []:
            self.add(layer)

    # ---- building -------------------------------------------------------------
    def add(self, layer):
        if isinstance(layer, Sequential):  # a model as a layer: its layers (and their weights) join this one
            if self.input_shape is None and layer.input_shape is not None:
                self.input_shape = tuple(layer.input_shape)
            for inner in layer.layers:
                self.add(inner)
            return
        if not isinstance(layer, L.Layer):
            raise TypeError(f"expected a gpuaccel.layers.Layer, got {type(layer).__name__}")
        if self._net is not None:
            raise RuntimeError("layers cannot be added after the model is built")
        ref = getattr(layer, "_model", None)
        src = ref() if ref is not None else None
        if src is not None and src is not self and src._net is not None:
            self._donor_models[id(layer)] = src
        self.layers.append(layer)

    def build(self, input_shape=None):
        """Create the network in C on self.device (keeps the weights it had).

        Layers that were built in another (still existing) model bring their weights
        along, as Keras layers do: `Sequential(backbone.layers + [Dense(5)])` starts
        from the backbone's weights (and shares its layers' trainable flags)."""
        donors = self._donors()
        if input_shape is not None:
            self.input_shape = tuple(int(d) for d in input_shape)
        if self.input_shape is None and self.layers and donors and donors[0][0] == 0:
            self.input_shape = tuple(donors[0][1].input_shape)  # the first layer's model knows it
        if self.input_shape is None:
            raise ValueError("the model needs input_shape=(C, H, W) (or call fit/build with data)")
        if len(self.input_shape) != 3:
            raise ValueError(f"input_shape must be (C, H, W), got {self.input_shape}")
        if not self.layers:
            raise ValueError("the model has no layers")
        old = (self._net.get_params(), self._net.get_state()) if self._net is not None else None
        donated = [(k, src._layer_weights(self.layers[k])) for k, src in donors] if old is None else []
        entries = self._entries()
        try:
            net = _C.Net([entry._spec() for entry, _, _ in entries], self.input_shape, self.device, self.seed)
        except ValueError as e:
            m = re.match(r"layer (\d+) \(\w+\) comes after layer (\d+)", str(e))
            if m:  # the placement rule of random augmentation: name the two layers
                raise ValueError(f"{entries[int(m.group(1))][0].name!r} after {entries[int(m.group(2))][0].name!r}: "
                                 f"{e}") from None
            raise
        if old is not None:
            net.set_params(old[0])
            net.set_state(old[1])
        self._net = net
        self._trainable_synced = None
        self._sync_trainable()
        for k, arrays in donated:
            try:
                self._set_layer_weights(k, arrays)
            except ValueError as e:
                raise ValueError(f"layer {self.layers[k].name!r} cannot keep the weights it had in its previous "
                                 f"model: {e}") from None
        for layer in self.layers:
            layer._model = weakref.ref(self)
        self._donor_models = {}
        if self.optimizer is not None:
            self._net.set_optimizer(*self.optimizer._args())
        if self.precision != "fp32":
            from . import ops

            self._net.set_precision(ops.PRECISIONS[self.precision])
        return self

    def _donors(self):
        """[(layer index, other built model)] for layers last built in another model."""
        out = []
        for k, layer in enumerate(self.layers):
            ref = getattr(layer, "_model", None)
            src = ref() if ref is not None else None
            src = src if src is not None else self._donor_models.get(id(layer))
            if src is not None and src is not self and src._net is not None and any(l is layer for l in src.layers):
                out.append((k, src))
        return out

    def _entries(self):
        """The C layer table: [(entry, effective trainable, depth)] with Residual blocks expanded."""
        return [e for layer in self.layers for e in layer._flatten(True, 0)]

    def _sync_trainable(self):
        """Pass the layers' trainable flags to C when they changed (cheap: no data moves)."""
        if self._net is None:
            return
        flags = [tr for _, tr, _ in self._entries()]
        if flags != getattr(self, "_trainable_synced", None):
            self._net.set_trainable(flags)
            self._trainable_synced = flags

    @property
    def trainable(self):
        """False when no layer trains. Setting it sets every layer's flag (nested ones too)."""
        return any(tr for _, tr, _ in self._entries())

    @trainable.setter
    def trainable(self, value):
        for layer in self.layers:
            layer._set_trainable_all(bool(value))
        self._sync_trainable()

    @property
    def built(self):
        return self._net is not None

    def _require_net(self, x=None):
        if self._net is None:
            self.build(None if x is None or self.input_shape is not None else _as_images(x).shape[1:])
        return self._net

    def compile(self, optimizer="adam", loss="sparse_categorical_crossentropy", metrics=("accuracy",), device=None,
                steps_per_execution=1, precision="fp32"):
        """Choose optimizer, loss and device. Moving to another device keeps the weights
        (the optimizer state starts afresh). steps_per_execution: training steps per C
        call (one synchronisation each), as in Keras. precision: 'fp32', or 'tf32' on an
        NVIDIA GPU of compute capability 8.0+ (tensor cores for the matrix products, as
        TensorFlow does by default on Ampere and newer)."""
        from . import ops

        if precision not in ops.PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}: expected one of {sorted(ops.PRECISIONS)}")
        if (not isinstance(steps_per_execution, (int, np.integer)) or isinstance(steps_per_execution, bool)
                or steps_per_execution < 1):
            raise ValueError(f"steps_per_execution must be an int >= 1, got {steps_per_execution!r}")
        self.steps_per_execution = int(steps_per_execution)
        new_device = resolve(device) if device is not None else self.device
        if precision != "fp32" and not new_device.startswith("cuda"):
            raise ValueError(f"precision={precision!r} runs on NVIDIA tensor cores (sm_80+); the CPU computes in fp32")
        self.precision = precision
        if loss not in ("sparse_categorical_crossentropy", "softmax_cross_entropy"):
            raise ValueError(f"unsupported loss {loss!r}: gpuaccel trains with 'sparse_categorical_crossentropy' on logits")
        for m in metrics or ():
            if m not in ("accuracy", "acc", "sparse_categorical_accuracy"):
                raise ValueError(f"unsupported metric {m!r}")
        self.optimizer = optimizers.get(optimizer)
        self.loss, self.metrics = loss, list(metrics or ())
        moved = new_device != self.device
        self.device = new_device
        if self._net is not None and moved:
            self.build()
        elif self._net is not None:
            self._net.set_optimizer(*self.optimizer._args())
            self._net.set_precision(ops.PRECISIONS[self.precision])
        elif self.input_shape is not None:
            self.build()
        return self

    def _set_learning_rate(self, lr):
        """The optimizer's learning rate from now on (its moments and step count kept):
        what the learning-rate callbacks use."""
        lr = float(lr)
        if not (math.isfinite(lr) and lr >= 0):
            raise ValueError(f"learning rate must be finite and >= 0, got {lr!r}")
        if self.optimizer is None:
            raise RuntimeError("call compile() before changing the learning rate")
        self.optimizer.learning_rate = lr
        if self._net is not None:
            self._net.set_learning_rate(lr)

    # ---- training -------------------------------------------------------------
    def fit(self, x, y, epochs=1, batch_size=32, validation_data=None, verbose=1, seed=None, shuffle=True,
            callbacks=None, initial_epoch=0, device_data="auto", distributed=None):
        """Train; returns a History whose `history` holds one value per epoch of:
        loss, accuracy, [val_loss, val_accuracy,] epoch_time_s, step_time_ms_p50,
        step_time_ms_p95, images_per_s.

        x may be a NumPy array or a gpuaccel.Tensor on the model's device (read in place,
        not checked for NaN). device_data: 'auto' uploads NumPy data to a GPU once when
        they take at most a quarter of its memory, True always, False never (then each
        call's batches are copied in). compile(steps_per_execution=N) runs N steps per
        C call; callbacks and the progress bar see every N-th batch, as in Keras.

        epoch_time_s covers the whole epoch: shuffling, batch gathering, the copies
        to the device and every step. Step times are the wall-clock time of each call
        (which returns only after its steps finished on the device) over its steps.

        distributed: data-parallel over the MPI ranks (gpuaccel.distributed): None (the
        default) when gpuaccel.distributed.init() was called, True (initialises MPI) or
        False. batch_size is then the global batch, split over the ranks; losses and
        accuracies are global, and only rank 0 prints and saves.

        initial_epoch=k resumes: epoch k's shuffle order is the one a run from epoch 0
        with the same seed gives its epoch k, so a model saved after k epochs, loaded
        (ga.models.load restores the optimizer) and fit(epochs=E, initial_epoch=k) with
        the same seed loses what the uninterrupted run lost in epochs k..E-1."""
        from . import distributed as dist

        if dist._wanted(distributed):
            return dist.fit(self, x, y, epochs=epochs, batch_size=batch_size, validation_data=validation_data,
                            verbose=verbose, seed=seed, shuffle=shuffle, callbacks=callbacks,
                            initial_epoch=initial_epoch, device_data=device_data)
        if self.optimizer is None:
            raise RuntimeError("call compile() before fit()")
        if not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if not isinstance(epochs, (int, np.integer)) or epochs < 0:
            raise ValueError(f"epochs must be an int >= 0, got {epochs!r}")
        if verbose not in (0, 1, 2):
            raise ValueError("verbose must be 0, 1 or 2")
        if device_data not in ("auto", True, False):
            raise ValueError(f"device_data must be 'auto', True or False, got {device_data!r}")
        if isinstance(x, _C.Tensor):
            x = _tensor_images(x, self.input_shape, self.device)
            net = self._require_net() if self.input_shape is not None else self._require_net_shape(x.shape[1:])
        else:
            x = _as_images(x, self.input_shape)
            net = self._require_net(x)
            _check_finite(x, "x")
        self._sync_trainable()
        n = x.shape[0]
        if n == 0:
            raise ValueError("cannot fit on an empty data set")
        y = _as_labels(y.numpy() if isinstance(y, _C.Tensor) else y, n, net.classes)
        # uint8 images stay on the host on the CPU (converted a call's chunk at a time)
        resident = (isinstance(x, _C.Tensor)
                    or (not (x.dtype == np.uint8 and self.device == "cpu")
                        and (device_data is True
                             or (device_data == "auto" and _fits_on_device(self.device, x.size * 4)))))
        val = None
        if validation_data is not None:
            xv, yv = validation_data[:2]
            if isinstance(xv, _C.Tensor):
                xv = _tensor_images(xv, self.input_shape, self.device, "validation x")
            else:
                xv = _as_images(xv, self.input_shape)
                _check_finite(xv, "validation x")
            yv = _as_labels(yv.numpy() if isinstance(yv, _C.Tensor) else yv, xv.shape[0], net.classes)
            val = (xv, yv)
        spe = self.steps_per_execution
        history = cbks.History()
        cb_list = [history] + list(callbacks or []) + ([cbks.ProgressBar(verbose)] if verbose else [])
        steps = -(-n // batch_size)
        rng = _shuffle_rng(self.seed if seed is None else seed, initial_epoch, n, shuffle)
        self.stop_training = False
        for cb in cb_list:
            cb.model = self
            cb.on_train_begin({"epochs": epochs, "steps": steps})
        step_ms = np.empty(steps)
        prefetch = self.device != "cpu" if _PREFETCH == "auto" else bool(_PREFETCH)
        chunk = spe * batch_size  # samples per call when the data go in chunks
        # one worker, created here and joined in `finally`: no thread outlives fit
        pool = (concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="gpuaccel-fit-prefetch")
                if not resident and prefetch and n > chunk else None)
        loss = 0.0
        try:
            if resident:
                net.set_data(_DATA_TRAIN, x if isinstance(x, _C.Tensor) else _floats(x), y)
            val_bound = (val is not None and (device_data is not False or isinstance(val[0], _C.Tensor))
                         and self._in_one_call(val[0]))
            if val_bound:
                net.set_data(_DATA_EVAL, val[0] if isinstance(val[0], _C.Tensor) else _floats(val[0]), val[1])
            for epoch in range(initial_epoch, epochs):
                for cb in cb_list:
                    cb.on_epoch_begin(epoch)
                t0 = time.perf_counter()
                order = rng.permutation(n) if shuffle else None
                if resident:
                    net.set_order(order)
                loss_sum, correct, i, ahead = 0.0, 0, 0, None
                while i < steps:
                    k = min(spe, steps - i)
                    if not resident:  # this call's chunk, gathered on the host and uploaded
                        lo, hi = i * batch_size, min((i + k) * batch_size, n)
                        idx = order[lo:hi] if order is not None else slice(lo, hi)
                        xb, yb = _gather(x, y, idx) if ahead is None else ahead.result()
                        ahead = None
                        if pool is not None and hi < n:
                            nxt = slice(hi, min(hi + chunk, n))
                            ahead = pool.submit(_gather, x, y, order[nxt] if order is not None else nxt)
                        net.set_data(_DATA_TRAIN, xb, yb)
                    s0 = time.perf_counter()
                    done, samples, lsum, right = net.train_steps(k, batch_size)
                    step_ms[i:i + done] = 1000.0 * (time.perf_counter() - s0) / done
                    i += done
                    loss = lsum / samples
                    if not np.isfinite(loss) and any(isinstance(cb, cbks.TerminateOnNaN) for cb in cb_list):
                        for cb in cb_list:
                            if isinstance(cb, cbks.TerminateOnNaN):
                                cb.on_batch_end(i - 1, {"loss": float(loss)})
                        break  # the epoch ends here, without its epoch-end logs
                    if not np.isfinite(loss):
                        where = f"step {i}" if done == 1 else f"steps {i - done + 1}-{i}"
                        raise FloatingPointError(
                            f"loss became {loss} at epoch {epoch + 1}, {where}: lower the learning rate "
                            "or check the inputs (the weights of that step were kept)")
                    loss_sum += lsum
                    correct += right
                    seen = min(i * batch_size, n)
                    for cb in cb_list:
                        cb.on_batch_end(i - 1, {"loss": loss_sum / seen, "accuracy": correct / seen})
                if not np.isfinite(loss):  # TerminateOnNaN stopped the epoch
                    break
                epoch_time = time.perf_counter() - t0
                logs = {"loss": loss_sum / n, "accuracy": correct / n}
                if val is not None:
                    vb = max(batch_size, 256)
                    if val_bound:
                        vl, vc = net.evaluate_data(_DATA_EVAL, vb)
                        logs["val_loss"], logs["val_accuracy"] = vl / val[0].shape[0], vc / val[0].shape[0]
                    else:
                        logs["val_loss"], logs["val_accuracy"] = self.evaluate(*val, batch_size=vb)
                logs.update(epoch_time_s=epoch_time, step_time_ms_p50=float(np.percentile(step_ms, 50)),
                            step_time_ms_p95=float(np.percentile(step_ms, 95)), images_per_s=n / epoch_time)
                for cb in cb_list:
                    cb.on_epoch_end(epoch, logs)
                if self.stop_training:
                    break
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)  # at most one short gather to wait for
            net.clear_data(_DATA_TRAIN)  # the model keeps no reference to the caller's data
            net.clear_data(_DATA_EVAL)
            for cb in cb_list:
                cb.on_train_end()
        self.history = history
        return history

    def _require_net_shape(self, shape):
        if self._net is None:
            self.build(tuple(shape))
        return self._net

    def _batches(self, x, batch_size):
        if not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        for i in range(0, x.shape[0], batch_size):
            yield i, _floats(x[i:i + batch_size])

    def _inputs(self, x, finite=True):
        """x as checked images: a Tensor on the model's device, or float32 (N, C, H, W)
        (checked for NaN and Inf when `finite`; predict passes them through)."""
        if isinstance(x, _C.Tensor):
            x = _tensor_images(x, self.input_shape, self.device)
            return x, (self._require_net() if self.input_shape is not None else self._require_net_shape(x.shape[1:]))
        x = _as_images(x, self.input_shape)
        net = self._require_net(x)
        if x.shape[0] and finite:
            _check_finite(x, "x")
        return x, net

    def _in_one_call(self, x):
        """True when evaluate / predict can hand all of x to the device in one call
        (always on the CPU, where nothing is copied, unless x is uint8: then it goes a
        batch at a time as floats)."""
        if isinstance(x, _C.Tensor):
            return True
        if x.dtype == np.uint8 and self.device == "cpu":
            return False
        return _fits_on_device(self.device, int(np.prod(x.shape)) * 4)

    def evaluate(self, x, y, batch_size=256, verbose=0, distributed=None):
        """Returns (loss, accuracy) in inference mode (dropout off), in one C call per
        data set that fits on the device. x: NumPy array or Tensor on the model's device.
        distributed (as in fit): the samples split over the MPI ranks, the result global."""
        from . import distributed as dist

        if dist._wanted(distributed) and dist.world_size() > 1:
            return dist.evaluate(self, x, y, batch_size=batch_size, verbose=verbose)
        if not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        x, net = self._inputs(x)
        n = x.shape[0]
        if n == 0:
            raise ValueError("cannot evaluate on an empty data set")
        y = _as_labels(y.numpy() if isinstance(y, _C.Tensor) else y, n, net.classes)
        out = net.infer(x if isinstance(x, _C.Tensor) else _floats(x), y, batch_size) if self._in_one_call(x) else None
        if out is None:
            loss_sum, correct = 0.0, 0
            for i, xb in self._batches(x, batch_size):
                l, c = net.evaluate(xb, y[i:i + xb.shape[0]])
                loss_sum += l
                correct += c
        else:
            loss_sum, correct = out
        if verbose:
            print(f"loss: {loss_sum / n:.4f} - accuracy: {correct / n:.4f}")
        return loss_sum / n, correct / n

    def predict(self, x, batch_size=256, distributed=None):
        """Logits (N, classes) in inference mode. x: NumPy array or Tensor on the model's device.
        distributed (as in fit): the samples split over the MPI ranks, every rank gets all logits."""
        from . import distributed as dist

        if dist._wanted(distributed) and dist.world_size() > 1:
            return dist.predict(self, x, batch_size=batch_size)
        if not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        x, net = self._inputs(x, finite=False)
        if x.shape[0] == 0:
            return np.zeros((0, net.classes), np.float32)
        out = (net.infer(x if isinstance(x, _C.Tensor) else _floats(x), None, batch_size)
               if self._in_one_call(x) else None)
        if out is None:
            out = np.concatenate([net.predict(xb) for _, xb in self._batches(x, batch_size)])
        return out

    # ---- weights --------------------------------------------------------------
    def _slots(self):
        """Where each array of get_weights() lives: [(top-level layer index, block, offset,
        shape, trainable)], block 'p' (parameters) or 's' (non-trainable state), as the
        layer table in C describes it (the one place that knows each layer's shapes)."""
        net = self._require_net()
        return [(k, blk, off, tuple(shape), tr if blk == "p" else False)
                for (_, tr, _), k, row in zip(self._entries(), self._top_index(), net.slots())
                for _, blk, off, shape in row]

    def _top_index(self):
        return [k for k, layer in enumerate(self.layers) for _ in layer._flatten(True, 0)]

    def _shapes(self):
        """Per top-level layer: the shapes of its get_weights() arrays."""
        out = [[] for _ in self.layers]
        for k, _, _, shape, _ in self._slots():
            out[k].append(shape)
        return out

    def get_weights(self):
        """Per layer in order, PyTorch layouts (copies): [W, b] for Conv2D and Dense,
        [gamma, beta, moving_mean, moving_variance] for BatchNormalization, a Residual
        block's inner layers then its projection [W, b] (if any).

        Loading arrays from other frameworks (set_weights takes the same list), for a
        gpuaccel model of the same architecture:

            # PyTorch: the same layouts (conv.weight (out, in, kh, kw), linear.weight (out, in),
            # bn.weight, bn.bias, bn.running_mean, bn.running_var), in state_dict order;
            # drop the integer num_batches_tracked. (PyTorch's BatchNorm2d is momentum=0.9,
            # epsilon=1e-5 in Keras terms: build the gpuaccel layers with those.)
            model.set_weights([t.detach().cpu().numpy() for t in torch_model.state_dict().values()
                               if t.dtype.is_floating_point])

            # Keras: conv kernels are (kh, kw, in, out), dense kernels (in, out);
            # biases and batch-norm vectors are the same.
            def from_keras(w):
                return w.transpose(3, 2, 0, 1) if w.ndim == 4 else w.T if w.ndim == 2 else w
            model.set_weights([from_keras(w) for w in keras_model.get_weights()])

        Keras flattens NHWC, so a Dense right after Flatten also needs its input rows
        permuted from (h, w, c) to (c, h, w) order (GlobalAveragePooling2D avoids that)."""
        net = self._require_net()
        flat, state = net.get_params(), net.get_state()
        return [(flat if blk == "p" else state)[off:off + int(np.prod(shape))].reshape(shape).copy()
                for _, blk, off, shape, _ in self._slots()]

    def set_weights(self, weights):
        net = self._require_net()
        slots = self._slots()
        weights = list(weights)
        if len(weights) != len(slots):
            raise ValueError(f"expected {len(slots)} arrays, got {len(weights)}")
        self._write_slots(list(zip(slots, weights)), range(len(slots)))

    def _write_slots(self, pairs, labels):
        net = self._net
        flat, state = net.get_params(), net.get_state()
        for label, ((_, blk, off, shape, _), w) in zip(labels, pairs):
            w = np.asarray(w)
            if w.shape != tuple(shape):
                raise ValueError(f"weight {label}: expected shape {tuple(shape)}, got {w.shape}")
            if w.dtype.kind != "f":
                raise TypeError(f"weight {label}: expected floats, got dtype {w.dtype}")
            _check_finite(w, f"weight {label}")
            (flat if blk == "p" else state)[off:off + w.size] = w.astype(np.float32).ravel()
        net.set_params(flat)
        if state.size:
            net.set_state(state)

    def _layer_weights(self, layer):
        """get_weights() restricted to one top-level layer (found by identity)."""
        k = next(i for i, l in enumerate(self.layers) if l is layer)
        return [w for (idx, *_), w in zip(self._slots(), self.get_weights()) if idx == k]

    def _set_layer_weights(self, k, arrays):
        slots = [s for s in self._slots() if s[0] == k]
        if len(arrays) != len(slots):
            raise ValueError(f"expected {len(slots)} arrays, got {len(arrays)}")
        self._write_slots(list(zip(slots, arrays)), range(len(slots)))

    def count_params(self):
        net = self._require_net()
        return net.nparams + net.nstate

    def summary(self, print_fn=print):
        """Layer table with output shapes and parameter counts (Residual blocks expanded,
        their inner layers indented), then total, trainable and non-trainable counts
        (non-trainable: frozen layers' weights and the batch-norm moving statistics)."""
        net = self._require_net()
        self._sync_trainable()
        entries, info, sinfo = self._entries(), net.layer_info(), net.state_info()
        kernels = net.conv_kernels()

        def shape_str(out_shape):
            return str((None, out_shape[0]) if tuple(out_shape[1:]) == (1, 1) else (None,) + tuple(out_shape))

        rows = [("Layer (type)", "Output Shape", "Param #", "Trainable")]
        stack = []  # open Residual rows: [row index, params so far]
        trainable = frozen = 0
        for (entry, tr, depth), (out_shape, _, nw, _, nb), (_, ns), kernel in zip(entries, info, sinfo, kernels):
            count = nw + nb + ns
            trainable += (nw + nb) if tr else 0
            frozen += ns + (0 if tr else nw + nb)
            for st in stack:
                st[1] += count
            pad = "  " * depth
            if isinstance(entry, L._ResEnd):
                row, total = stack.pop()
                name, _, _, flag = rows[row]
                rows[row] = (name, shape_str(out_shape), f"{total:,}", flag)
                if nw:
                    rows.append((f"{pad}  {entry.name}/projection (1x1 Conv2D)", shape_str(out_shape),
                                 f"{nw + nb:,}", "yes" if tr else "no"))
                continue
            if isinstance(entry, L._ResBegin):
                rows.append((f"{pad}{entry.name} (Residual)", "", "", "yes" if tr else "no"))
                stack.append([len(rows) - 1, 0])
                continue
            algo = f" [{kernel}]" if kernel else ""  # a convolution's algorithm (Conv2D kernel=)
            rows.append((f"{pad}{entry.name} ({type(entry).__name__}){algo}", shape_str(out_shape), f"{count:,}",
                         ("yes" if tr else "no") if count else ""))
        widths = [max(len(r[i]) for r in rows) + 2 for i in range(4)]
        line = "-" * sum(widths)
        text = [f'Model: "{self.name}"  (device: {self.device})', line]
        text += ["".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows[:1]] + ["=" * sum(widths)]
        text += ["".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows[1:]]
        text += ["=" * sum(widths), f"Total params: {net.nparams + net.nstate:,}",
                 f"Trainable params: {trainable:,}", f"Non-trainable params: {frozen:,}", line]
        print_fn("\n".join(text))

    # ---- files ----------------------------------------------------------------
    def get_config(self):
        return {"format": FORMAT, "name": self.name, "input_shape": list(self.input_shape or []), "seed": self.seed,
                "layers": [{"class": type(l).__name__, "config": l.get_config(), "trainable": l.trainable}
                           for l in self.layers],
                "optimizer": optimizers.serialize(self.optimizer) if self.optimizer else None,
                "loss": self.loss, "metrics": self.metrics}

    def _optimizer_state(self):
        """(the config's "optimizer_state" entry, {array name: array}) for save: the
        optimizer's moment blocks (Adam m and v, SGD's momentum velocity) and its step
        counters (Adam's t, the random masks drawn so far)."""
        kind, m1, m2, steps, draws = self._net.get_opt_state()
        arrays = {"opt_m1": m1} if m2 is None else {"opt_m1": m1, "opt_m2": m2}
        digest = hashlib.sha256()
        for k in sorted(arrays):
            digest.update(np.ascontiguousarray(arrays[k]).tobytes())
        return ({"kind": kind, "steps": int(steps), "draws": int(draws), "arrays": sorted(arrays),
                 "shapes": [list(arrays[k].shape) for k in sorted(arrays)], "sha256": digest.hexdigest()}, arrays)

    def save(self, path, include_optimizer=True):
        """Write config (JSON) and weights to one .npz file, atomically: the data goes to
        a temporary file in the same folder, is flushed to disk, and only then renamed
        over `path`, so an interrupted save leaves the previous file intact.
        In a distributed job (gpuaccel.distributed.init()) only rank 0 writes: every rank
        holds the same weights.

        include_optimizer (as in Keras): a compiled model's file also holds the optimizer's
        state, its moments and step counters (arrays opt_m1 [, opt_m2] and the config's
        "optimizer_state", under the checksums), so ga.models.load then fit(initial_epoch=k)
        continues the run as if it had never stopped. False: the optimizer's configuration
        only (load compiles with it afresh, as files from before this option do)."""
        from . import distributed as dist

        path = os.fspath(path)
        if dist._skip_io():
            return
        weights = self.get_weights()
        digest = hashlib.sha256()
        for w in weights:
            digest.update(np.ascontiguousarray(w).tobytes())
        config = self.get_config()
        opt_arrays = {}
        if include_optimizer and self.optimizer is not None:
            config["optimizer_state"], opt_arrays = self._optimizer_state()
        config["weights_sha256"] = digest.hexdigest()
        # a second checksum covers the config itself and every array's shape and dtype
        config["config_sha256"] = hashlib.sha256((json.dumps(config, sort_keys=True) + json.dumps(
            [[list(w.shape), w.dtype.str] for w in weights])).encode()).hexdigest()
        arrays = {f"w{i:03d}": w for i, w in enumerate(weights)}
        arrays.update(opt_arrays)
        arrays["config"] = np.frombuffer(json.dumps(config).encode(), dtype=np.uint8)
        folder = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            try:  # make the rename itself durable (power loss, not only a killed process)
                dfd = os.open(folder, os.O_RDONLY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
            except OSError:
                pass
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise


def load(path, device=None):
    """Rebuild a model written by Sequential.save (checksum verified), compiled
    with its saved optimizer on `device` (default 'cpu'). When the file holds the
    optimizer's state (save(include_optimizer=True), the default) the optimizer
    continues from it: its moments, Adam's step count and the random-mask counter,
    so fit(..., initial_epoch=k) with the fit's seed continues the saved run exactly.
    Files without it (older ones, include_optimizer=False) start the optimizer afresh."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            blob = f.read()
        with np.load(io.BytesIO(blob), allow_pickle=False) as data:
            config = json.loads(bytes(data["config"]).decode())
            names = sorted(k for k in data.files if k.startswith("w"))
            weights = [data[k] for k in names]
            opt_arrays = {k: data[k] for k in data.files if k.startswith("opt_")}
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
    if "config_sha256" in config:  # files from before it was added have only the weights checksum
        rest = {k: v for k, v in config.items() if k != "config_sha256"}
        check = hashlib.sha256((json.dumps(rest, sort_keys=True) + json.dumps(
            [[list(w.shape), w.dtype.str] for w in weights])).encode()).hexdigest()
        if check != config["config_sha256"]:
            raise ValueError(f"{path}: config or array shapes do not match their checksum (file corrupted or edited)")
    try:
        layers = []
        for spec in config["layers"]:
            cls = L.LAYERS[spec["class"]]
            layer = cls.from_config(spec["config"])
            layer.trainable = spec.get("trainable", True)
            layers.append(layer)
        model = Sequential(layers, input_shape=config["input_shape"], name=config.get("name", "sequential"),
                           seed=config.get("seed", 0))
    except (KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{path}: bad model config ({type(e).__name__}: {e})") from None
    model.device = resolve(device)
    model.build()
    model.set_weights(weights)
    opt_state = config.get("optimizer_state")
    if opt_state is not None:
        opt_state = _check_optimizer_state(path, config, opt_state, opt_arrays)
    if config.get("optimizer"):
        model.compile(optimizer=optimizers.get(config["optimizer"]), loss=config.get("loss") or "sparse_categorical_crossentropy",
                      metrics=config.get("metrics") or ("accuracy",))
    if opt_state is not None:
        kind, m1, m2, steps, draws = opt_state
        try:
            model._net.set_opt_state(kind, m1, m2, steps, draws)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{path}: bad optimizer state ({e})") from None
    return model


def _check_optimizer_state(path, config, st, arrays):
    """The saved optimizer state as set_opt_state's arguments, checked against its
    checksum, the saved optimizer and the model's parameter count (ValueError if not)."""
    def bad(why):
        return ValueError(f"{path}: bad optimizer state: {why}")

    if not isinstance(st, dict) or not isinstance(st.get("arrays"), list):
        raise bad("the config's optimizer_state is not a dict with its array names")
    kind = st.get("kind")
    saved = config.get("optimizer") or {}
    if kind not in ("adam", "sgd") or not isinstance(saved, dict) or str(saved.get("class", "")).lower() != kind:
        raise bad(f"state for optimizer {kind!r}, the file's optimizer is {saved.get('class') if isinstance(saved, dict) else saved!r}")
    names = ["opt_m1", "opt_m2"] if kind == "adam" else ["opt_m1"]
    if sorted(st["arrays"]) != names or sorted(arrays) != names:
        raise bad(f"{kind} keeps arrays {names}, the file has {sorted(arrays)}")
    digest = hashlib.sha256()
    for k in names:
        digest.update(np.ascontiguousarray(arrays[k]).tobytes())
    if digest.hexdigest() != st.get("sha256"):
        raise ValueError(f"{path}: optimizer state does not match its checksum (file corrupted)")
    steps, draws = st.get("steps"), st.get("draws")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (steps, draws)):
        raise bad(f"step counters must be ints >= 0, got steps={steps!r}, draws={draws!r}")
    out = []
    for k in names:
        a = arrays[k]
        if a.dtype != np.float32 or a.ndim != 1:
            raise bad(f"{k} must be a 1-D float32 array, got {a.dtype} of shape {a.shape}")
        out.append(a)
    return kind, out[0], out[1] if kind == "adam" else None, steps, draws


def reference_cnn(seed=None, input_shape=(1, 28, 28), classes=10):
    """The reference CNN of the study (DESIGN.md section 3), uncompiled:
    Conv(32, 3x3 same, ReLU) -> MaxPool 2 -> Conv(64, 3x3 same, ReLU) -> MaxPool 2 ->
    Flatten -> Dense(128, ReLU) -> Dense(classes) logits, for (1, 28, 28) images by
    default; the same architecture for other (C, H, W) images and class counts (the
    study on your own folders: `python -m gpuaccel.bench --data DIR`)."""
    return Sequential([L.Conv2D(32, 3, padding="same", activation="relu"), L.MaxPool2D(2),
                       L.Conv2D(64, 3, padding="same", activation="relu"), L.MaxPool2D(2),
                       L.Flatten(), L.Dense(128, activation="relu"), L.Dense(classes)],
                      input_shape=tuple(input_shape), name="reference_cnn", seed=seed)
