"""gpuaccel: train image classifiers on CPUs and NVIDIA GPUs with hand-written
C/OpenMP and CUDA kernels, and measure the difference honestly."""
__version__ = "0.1.0"

import os as _os

# GNU OpenMP spins 300,000 rounds at each barrier before sleeping. On a machine
# shared with other work the spinning threads steal the cores the late ones need
# (a training step 1.5x slower with two busy processes); too short a spin lets the
# workers fall asleep between small calls, and waking them costs up to a
# millisecond: at 10,000 rounds a 128x128 matmul in Jupyter took 540 us instead
# of 25. 30,000 keeps both: small calls fast, most of the gain under load
# (measured: benchmarks/RESULTS.md). Must be set before libgomp loads with _C; a
# value the user set wins.
_os.environ.setdefault("GOMP_SPINCOUNT", "30000")

from . import _C
from ._C import Tensor
from . import applications, callbacks, cuda, datasets, distributed, layers, models, ops, optimizers
from ._device import resolve as _resolve
from .models import Sequential

__all__ = ["Tensor", "Sequential", "tensor", "devices", "set_num_threads", "get_num_threads", "info",
           "applications", "callbacks", "cuda", "datasets", "distributed", "layers", "models", "ops", "optimizers"]


def tensor(array, device="cpu"):
    """Copy a float32 array to `device` ('cpu', 'cuda', 'cuda:N') as a Tensor."""
    import numpy as np

    if isinstance(array, Tensor):
        array = array.numpy()
    arr = np.asarray(array)
    if arr.dtype != np.float32:
        raise TypeError(f"tensors are float32; got dtype {arr.dtype} (use .astype(np.float32))")
    return Tensor(arr, _resolve(device))


def devices():
    """Devices usable now: ['cpu', 'cuda:0', ...]."""
    return ["cpu"] + [f"cuda:{i}" for i in range(cuda.device_count())] if cuda.is_available() else ["cpu"]


def set_num_threads(n):
    """Threads used by the CPU kernels (all OpenMP regions of gpuaccel)."""
    _C.set_num_threads(int(n))


def get_num_threads():
    return _C.get_num_threads()


def __getattr__(name):
    # `ga.info` is the module gpuaccel.info, loaded on first use and callable:
    # `ga.info()` returns the environment dict. Importing it lazily keeps
    # `python -m gpuaccel.info` free of runpy's "already imported" warning.
    if name == "info":
        import importlib

        return importlib.import_module(".info", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
