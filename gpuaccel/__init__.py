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

__all__ = ["Tensor", "Sequential", "tensor", "from_dlpack", "devices", "set_num_threads", "get_num_threads", "info",
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


_KDLCPU, _KDLCUDA = 1, 2


def from_dlpack(x, device=None):
    """A Tensor sharing the memory of any DLPack producer `x` (a NumPy array, a PyTorch
    tensor, a gpuaccel Tensor, ...): no copy, on the CPU and on CUDA devices. `x` must be
    float32, C-contiguous, writable, with at most 8 dimensions; anything else raises
    TypeError/ValueError/BufferError saying what to change. Writes through either side
    are visible in the other, and `x`'s memory stays alive while the Tensor does.

    CUDA producers are asked for their data on the legacy default stream (stream=1, as
    the array API standard says) and the device is then synchronised, so gpuaccel's own
    stream sees finished data. `device`: when given and not `x`'s device, the shared
    tensor is copied there (the only case that copies)."""
    if isinstance(x, Tensor):
        cap = x.__dlpack__(max_version=(1, 0))  # synchronises our stream itself
        t = _C._from_dlpack(cap)
    else:
        if not hasattr(x, "__dlpack__") or not hasattr(x, "__dlpack_device__"):
            raise TypeError(f"from_dlpack takes a DLPack producer (__dlpack__ and __dlpack_device__); "
                            f"got {type(x).__name__}")
        dev_type, dev_id = x.__dlpack_device__()
        kwargs = {}
        if int(dev_type) == _KDLCUDA:
            _resolve(f"cuda:{int(dev_id)}")  # loads and registers the CUDA backend (or says why not)
            kwargs = {"stream": 1}
        try:
            cap = x.__dlpack__(max_version=(1, 0), **kwargs)
        except TypeError:  # producers from before DLPack 1.0 take no max_version
            cap = x.__dlpack__(**kwargs)
        t = _C._from_dlpack(cap)
        if int(dev_type) == _KDLCUDA:
            # the producer queued its wait on the legacy default stream; ours is a
            # non-blocking stream, so wait on the host for the whole device
            cuda._module().synchronize(int(dev_id))
    if device is not None:
        target = _resolve(device)
        if target != t.device:
            return Tensor(t.numpy(), target)
    return t


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
