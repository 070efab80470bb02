"""Device strings: 'cpu', 'cuda', 'cuda:N'.

`resolve()` turns what a user wrote into the canonical form and, for a GPU,
makes sure the CUDA backend is loaded and registered with the C core."""
from . import _C

_registered = set()


def resolve(device):
    """Return 'cpu' or 'cuda:N'; raise ValueError / RuntimeError with the reason."""
    if device is None:
        return "cpu"
    if not isinstance(device, str):
        raise TypeError(f"device must be a string such as 'cpu' or 'cuda:0', got {type(device).__name__}")
    name = device.strip().lower()
    if name == "cpu":
        return "cpu"
    if name == "cuda" or name.startswith("cuda:"):
        index = 0
        if ":" in name:
            try:
                index = int(name.split(":", 1)[1])
            except ValueError:
                raise ValueError(f"bad device {device!r}: expected 'cuda' or 'cuda:N'") from None
        from . import cuda

        if not cuda.is_available():
            raise RuntimeError(f"device {device!r} requested but CUDA is not available: {cuda.unavailable_reason()}")
        count = cuda.device_count()
        if not 0 <= index < count:
            raise ValueError(f"bad device {device!r}: this machine has {count} CUDA device(s)")
        if "cuda" not in _registered:
            _C._register_backend("cuda", cuda._backend_capsule())
            _registered.add("cuda")
        return f"cuda:{index}"
    raise ValueError(f"unknown device {device!r}: expected 'cpu', 'cuda' or 'cuda:N'")
