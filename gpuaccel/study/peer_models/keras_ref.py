"""The reference CNN of DESIGN.md section 3 in Keras (tensorflow-cpu), as a peer for gpuaccel.

    python -m gpuaccel.study.peer_models.keras_ref [--epochs 1] [--batch-size 128] [--threads 2]
                                               [--limit N] [--seed 0]

Same model, data, batch, optimizer and initialisation scheme as gpuaccel's reference CNN
(the model of the original study): Conv2D(32, 3x3, same, ReLU) -> MaxPooling2D(2) ->
Conv2D(64, 3x3, same, ReLU) -> MaxPooling2D(2) -> Flatten -> Dense(128, ReLU) -> Dense(10)
logits; glorot_uniform kernels, zero biases; Adam(1e-3, epsilon 1e-7, Keras's default);
SparseCategoricalCrossentropy(from_logits=True); batch 128; fit(shuffle=True) shuffles the
training set each epoch. Input: channels-first float32 (N, 1, 28, 28) in [0, 1] as gpuaccel
takes it, converted once, before training and outside every timing, to the channels-last
(N, 28, 28, 1) that Keras's Conv2D uses on the CPU.

Threads: tf.config.threading.set_intra_op_parallelism_threads(threads) and
set_inter_op_parallelism_threads(1). TensorFlow accepts these only before its runtime starts,
so they hold for the whole process: the figure in force is returned, and a different
request later in the same process is reported, not silently ignored.

How it is timed (a Keras callback with time.perf_counter):
- epoch_time_s: from on_epoch_begin to the last on_train_batch_end of the epoch: the epoch's
  shuffle (in Keras's tf.data pipeline), batching, and every step; the validation pass
  that fit() runs after the last batch is not included (as in gpuaccel);
- step times: on_train_batch_begin to on_train_batch_end (one train_function call: it takes
  the next batch from the tf.data iterator, then forward, backward, the Adam update and the
  metrics; eager TF on the CPU returns when the step is done);
- images_per_s = training images / epoch time.
The model is compiled with Keras's defaults (jit_compile='auto', which Keras resolves to
False, no XLA, on a machine without GPU; steps_per_execution=1).

``train()`` is what ``gpuaccel.peers.run('keras', ...)`` calls.
"""
import os
import time

import numpy as np

NAME = "keras"
DEVICE = "keras-cpu"


def _import_tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # no start-up chatter about CPU features
    import tensorflow as tf

    return tf


def versions():
    tf = _import_tf()
    import keras

    return {"tensorflow": tf.__version__, "keras": keras.__version__}


def set_threads(threads):
    """Intra-op threads = ``threads``, inter-op threads = 1, if TF's runtime has not started;
    returns the intra-op figure in force (0 means TF's default: all cores)."""
    tf = _import_tf()
    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(int(threads))
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:
            pass  # already initialised in this process: keep what is in force, and say so
    return tf.config.threading.get_intra_op_parallelism_threads()


def build_model(seed=0, input_shape=(1, 28, 28), classes=10):
    """The reference CNN (channels-last input) for (C, H, W) images and `classes` classes,
    Glorot-uniform kernels, zero biases, compiled."""
    _import_tf()
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    init = dict(kernel_initializer="glorot_uniform", bias_initializer="zeros")
    model = keras.Sequential([
        keras.Input((input_shape[1], input_shape[2], input_shape[0])),
        layers.Conv2D(32, 3, padding="same", activation="relu", **init), layers.MaxPooling2D(2),
        layers.Conv2D(64, 3, padding="same", activation="relu", **init), layers.MaxPooling2D(2),
        layers.Flatten(), layers.Dense(128, activation="relu", **init), layers.Dense(classes, **init),
    ], name="reference_cnn")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3, epsilon=1e-7),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def _timer_callback():
    import keras

    class Timer(keras.callbacks.Callback):
        """Per-epoch training time and per-batch step times, with perf_counter."""

        def __init__(self):
            super().__init__()
            self.epoch_s, self.p50, self.p95 = [], [], []
            self._ms = []

        def on_epoch_begin(self, epoch, logs=None):
            self._ms = []
            self._t_end = None
            self._t0 = time.perf_counter()

        def on_train_batch_begin(self, batch, logs=None):
            self._s0 = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self._t_end = time.perf_counter()
            self._ms.append(1000.0 * (self._t_end - self._s0))

        def on_epoch_end(self, epoch, logs=None):
            end = self._t_end if self._t_end is not None else time.perf_counter()
            self.epoch_s.append(end - self._t0)
            ms = np.asarray(self._ms or [float("nan")])
            self.p50.append(float(np.percentile(ms, 50)))
            self.p95.append(float(np.percentile(ms, 95)))

    return Timer()


def train(x, y, xt, yt, epochs=1, batch_size=128, seed=0, threads=None, verbose=0):
    """Train a fresh reference CNN; return {'history': key -> per-epoch list (the keys of
    gpuaccel's History), 'threads', 'versions', 'config'}.

    x, xt: float32 (N, C, H, W) in [0, 1] (channels-first, as gpuaccel; Fashion-MNIST's
    (N, 1, 28, 28) or a folder of your images); y, yt: labels 0..classes-1."""
    threads_in_force = set_threads(threads)
    x = np.asarray(x, dtype=np.float32)
    xt = np.asarray(xt, dtype=np.float32)
    if x.ndim != 4 or xt.shape[1:] != x.shape[1:]:
        raise ValueError(f"x and xt must be (N, C, H, W) of one image shape, got {x.shape} and {xt.shape}")
    # Channels-first -> channels-last, once, outside the timings.
    x_cl = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    xt_cl = np.ascontiguousarray(xt.transpose(0, 2, 3, 1))
    y = np.asarray(y, dtype=np.int64)
    yt = np.asarray(yt, dtype=np.int64)
    model = build_model(seed, x.shape[1:], int(max(y.max(), yt.max())) + 1)
    n = x_cl.shape[0]
    timer = _timer_callback()
    hist = model.fit(x_cl, y, epochs=epochs, batch_size=batch_size, shuffle=True,
                     validation_data=(xt_cl, yt), validation_batch_size=max(batch_size, 256),
                     callbacks=[timer], verbose=verbose)
    h = hist.history
    out = {"loss": h["loss"], "accuracy": h["accuracy"], "val_loss": h["val_loss"],
           "val_accuracy": h["val_accuracy"], "epoch_time_s": timer.epoch_s,
           "step_time_ms_p50": timer.p50, "step_time_ms_p95": timer.p95,
           "images_per_s": [n / t for t in timer.epoch_s]}
    out = {k: [float(v) for v in vals] for k, vals in out.items()}
    tf = _import_tf()
    return {"history": out, "threads": threads_in_force, "versions": versions(),
            "config": {"optimizer": "Adam(learning_rate=1e-3, epsilon=1e-7)", "layout": "NHWC (channels-last)",
                       "jit_compile": bool(getattr(model, "jit_compile", False)),
                       "interop_threads": tf.config.threading.get_inter_op_parallelism_threads(),
                       "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on)")}}


def main(argv=None):
    import argparse
    import json
    import sys

    p = argparse.ArgumentParser(description="The reference CNN in Keras on Fashion-MNIST (CPU).")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--limit", type=int)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    from gpuaccel.study.bench import load_fashion

    x, y, xt, yt = load_fashion(args.limit)
    out = train(x, y, xt, yt, args.epochs, args.batch_size, args.seed, args.threads, verbose=2)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
