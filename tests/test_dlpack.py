"""DLPack (issue 17 item 3): ga.Tensor.__dlpack__ / __dlpack_device__, ga.from_dlpack.

Zero-copy is checked by pointer (Tensor.data_ptr against NumPy's buffer address) and by
writes showing through on the other side. Lifetimes: producer dropped first, consumer
dropped first, capsules dropped unconsumed; a loop of round trips must not grow RSS."""
import ctypes
import gc
import sys

import numpy as np
import pytest

import gpuaccel as ga
from gpuaccel import _C


def np_ptr(a):
    return a.__array_interface__["data"][0]


def rss_bytes():
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096
    except OSError:  # pragma: no cover - not Linux
        return 0


# ---------------------------------------------------------------- NumPy -> ga


def test_numpy_to_ga_is_zero_copy_and_writes_show_both_ways():
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    t = ga.from_dlpack(a)
    assert isinstance(t, ga.Tensor)
    assert t.shape == (2, 3, 4) and t.device == "cpu"
    assert t.data_ptr == np_ptr(a)
    np.testing.assert_array_equal(t.numpy(), a)
    a[1, 2, 3] = -7.0  # NumPy -> Tensor
    assert t.numpy()[1, 2, 3] == -7.0
    # ga -> NumPy through the Tensor's own export
    back = np.from_dlpack(t)
    back[0, 0, 0] = 42.0
    assert a[0, 0, 0] == 42.0


def test_numpy_offset_view_and_empty_and_0d():
    base = np.arange(20, dtype=np.float32).reshape(4, 5)
    view = base[1:3]  # contiguous rows: a byte offset into base's buffer
    t = ga.from_dlpack(view)
    assert t.data_ptr == np_ptr(view)
    np.testing.assert_array_equal(t.numpy(), view)
    col = np.ones((3, 1), np.float32)[:, :]  # size-1 dims may carry any stride
    assert ga.from_dlpack(col).shape == (3, 1)
    e = ga.from_dlpack(np.zeros((0, 3), np.float32))
    assert e.shape == (0, 3) and e.numpy().shape == (0, 3)
    s = ga.from_dlpack(np.array(2.5, np.float32))
    assert s.shape == () and float(s.numpy()) == 2.5


def test_refusals_say_what_to_do():
    with pytest.raises(TypeError, match="float32 only.*convert first: x.astype"):
        ga.from_dlpack(np.zeros(3, np.float64))
    with pytest.raises(TypeError, match="float32"):
        ga.from_dlpack(np.zeros(3, np.int32))
    with pytest.raises(BufferError, match="C-contiguous"):
        ga.from_dlpack(np.zeros((4, 4), np.float32)[:, ::2])
    with pytest.raises(BufferError, match="C-contiguous"):
        ga.from_dlpack(np.zeros((3, 4), np.float32).T)
    ro = np.zeros(3, np.float32)
    ro.flags.writeable = False
    with pytest.raises(BufferError, match="read-only"):
        ga.from_dlpack(ro)
    with pytest.raises(ValueError, match="at most 8 dimensions"):
        ga.from_dlpack(np.zeros((1,) * 9, np.float32))
    with pytest.raises(TypeError, match="DLPack producer"):
        ga.from_dlpack([1.0, 2.0])
    with pytest.raises(TypeError, match="capsule"):
        _C._from_dlpack(object())


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", _DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


class _DLManagedTensorVersioned(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint32), ("minor", ctypes.c_uint32), ("manager_ctx", ctypes.c_void_p),
                ("deleter", ctypes.c_void_p), ("flags", ctypes.c_uint64), ("dl_tensor", _DLTensor)]


def fake_capsule(arr, device_type, device_id=0, major=1):
    """A 'dltensor_versioned' capsule over `arr` claiming another device (no deleter)."""
    shape = (ctypes.c_int64 * max(arr.ndim, 1))(*arr.shape)
    mt = _DLManagedTensorVersioned(major, 0, None, None, 0,
                                   _DLTensor(np_ptr(arr), _DLDevice(device_type, device_id), arr.ndim,
                                             _DLDataType(2, 32, 1), shape, None, 0))
    new = ctypes.pythonapi.PyCapsule_New
    new.restype, new.argtypes = ctypes.py_object, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
    return new(ctypes.addressof(mt), b"dltensor_versioned", None), (mt, shape, arr)


def test_foreign_device_is_refused():
    a = np.ones(4, np.float32)
    cap, keep = fake_capsule(a, 7)  # Vulkan
    with pytest.raises(BufferError, match="Vulkan device"):
        _C._from_dlpack(cap)
    cap, keep = fake_capsule(a, 1, major=2)
    with pytest.raises(BufferError, match="version 2.0"):
        _C._from_dlpack(cap)
    cap, keep = fake_capsule(a, 1)  # the same header on the CPU is accepted, zero-copy
    t = _C._from_dlpack(cap)
    assert t.data_ptr == np_ptr(a)
    del t
    if not ga.cuda.is_available():
        cap, keep = fake_capsule(a, 2)
        with pytest.raises(BufferError, match="CUDA backend is not loaded"):
            _C._from_dlpack(cap)
    # a CPU tensor asked for a CUDA export
    with pytest.raises(BufferError, match="cannot be exported"):
        ga.tensor(a).__dlpack__(dl_device=(2, 0))
    # NumPy refuses what is not on the CPU
    if ga.cuda.is_available():
        with pytest.raises((BufferError, RuntimeError, TypeError, ValueError)):
            np.from_dlpack(ga.tensor(a, "cuda"))


# ---------------------------------------------------------------- ga -> NumPy / ga


def test_ga_to_numpy_shares_memory():
    t = ga.tensor(np.arange(6, dtype=np.float32).reshape(2, 3))
    assert t.__dlpack_device__() == (1, 0)
    a = np.from_dlpack(t)
    assert a.shape == (2, 3) and a.dtype == np.float32
    assert np_ptr(a) == t.data_ptr
    a[1, 1] = 99.0
    assert t.numpy()[1, 1] == 99.0


@pytest.mark.parametrize("versioned", [True, False], ids=["versioned", "legacy"])
def test_ga_to_ga_round_trip(device, versioned):
    x = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    t = ga.tensor(x, device)
    cap = t.__dlpack__(max_version=(1, 0)) if versioned else t.__dlpack__()
    assert ("dltensor_versioned" if versioned else "dltensor") in repr(cap)
    u = _C._from_dlpack(cap)
    assert "used_dltensor" in repr(cap)
    assert u.device == t.device and u.shape == t.shape and u.data_ptr == t.data_ptr
    np.testing.assert_array_equal(u.numpy(), x)
    with pytest.raises(ValueError, match="already consumed"):
        _C._from_dlpack(cap)
    v = ga.from_dlpack(t)
    assert v.data_ptr == t.data_ptr and v.device == t.device
    dev_type = 1 if device == "cpu" else 2
    assert t.__dlpack_device__() == (dev_type, 0 if device == "cpu" else int(t.device.split(":")[1]))
    # ops on the imported tensor see the producer's data
    np.testing.assert_allclose(ga.ops.relu(v).numpy(), np.maximum(x, 0))


def test_export_arguments(device):
    t = ga.tensor(np.arange(4, dtype=np.float32), device)
    c = t.__dlpack__(copy=True, max_version=(1, 0))
    u = _C._from_dlpack(c)
    assert u.data_ptr != t.data_ptr
    np.testing.assert_array_equal(u.numpy(), t.numpy())
    _C._from_dlpack(t.__dlpack__(copy=False))
    with pytest.raises(TypeError):
        t.__dlpack__(max_version=3)
    with pytest.raises(TypeError):
        t.__dlpack__(copy="yes")
    with pytest.raises(TypeError):
        t.__dlpack__(1)  # keyword-only
    if device == "cpu":
        with pytest.raises(ValueError, match="stream must be None"):
            t.__dlpack__(stream=5)
    else:
        with pytest.raises(ValueError, match="ambiguous"):
            t.__dlpack__(stream=0)
        for s in (None, 1, 2, -1):
            _C._from_dlpack(t.__dlpack__(stream=s))
        with pytest.raises(BufferError, match="cannot be exported"):
            t.__dlpack__(dl_device=(1, 0))
    # device= copies to another device
    w = ga.from_dlpack(t, device="cpu")
    assert w.device == "cpu"
    np.testing.assert_array_equal(w.numpy(), np.arange(4, dtype=np.float32))


# ---------------------------------------------------------------- lifetimes and leaks


def test_lifetimes_and_refcounts(device):
    t = ga.tensor(np.arange(8, dtype=np.float32), device)
    r0 = sys.getrefcount(t)
    cap = t.__dlpack__()
    assert sys.getrefcount(t) == r0 + 1  # the capsule's manager holds the tensor
    del cap  # unconsumed: its destructor frees the manager
    assert sys.getrefcount(t) == r0
    cap = t.__dlpack__(max_version=(1, 0))
    del cap
    assert sys.getrefcount(t) == r0
    u = ga.from_dlpack(t)
    assert sys.getrefcount(t) == r0 + 1
    del u  # consumer first
    assert sys.getrefcount(t) == r0
    u = ga.from_dlpack(t)
    ptr = t.data_ptr
    del t  # producer first: the consumer keeps the memory alive
    gc.collect()
    assert u.data_ptr == ptr
    np.testing.assert_array_equal(u.numpy(), np.arange(8, dtype=np.float32))
    # NumPy producer dropped first
    a = np.arange(5, dtype=np.float32)
    ra = sys.getrefcount(a)
    v = ga.from_dlpack(a)
    assert sys.getrefcount(a) > ra
    del v
    assert sys.getrefcount(a) == ra
    v = ga.from_dlpack(np.arange(5, dtype=np.float32))
    gc.collect()
    np.testing.assert_array_equal(v.numpy(), np.arange(5, dtype=np.float32))


def test_round_trips_do_not_leak(device):
    x = np.ones((64, 64), np.float32)  # 16 KB: 10,000 leaked copies would be 160 MB
    t = ga.tensor(x, device)

    def rounds(n):
        for i in range(n):
            kind = i % 4
            if kind == 0:
                t.__dlpack__()  # dropped unconsumed
            elif kind == 1:
                _C._from_dlpack(t.__dlpack__(max_version=(1, 0)))
            elif kind == 2:
                ga.from_dlpack(ga.tensor(x, device))  # producer dropped inside, consumer after
            else:
                ga.from_dlpack(x if device == "cpu" else t)
                if device == "cpu":
                    np.from_dlpack(t)

    rounds(500)
    gc.collect()
    rss0, r0, rx = rss_bytes(), sys.getrefcount(t), sys.getrefcount(x)
    rounds(10_000)
    gc.collect()
    rss1 = rss_bytes()
    assert sys.getrefcount(t) == r0 and sys.getrefcount(x) == rx
    assert rss1 - rss0 < 8 * 2**20, f"RSS grew by {(rss1 - rss0) / 2**20:.1f} MiB over 10,000 round trips"


# ---------------------------------------------------------------- PyTorch on a GPU


def test_pytorch_on_a_gpu():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch sees no CUDA GPU")
    if not ga.cuda.is_available() or ga.cuda.is_emulated():
        pytest.skip("gpuaccel has no real CUDA device (emulator or no GPU)")
    x = torch.arange(12, dtype=torch.float32, device="cuda").reshape(3, 4) * 2
    t = ga.from_dlpack(x)
    assert t.device == "cuda:0" and t.data_ptr == x.data_ptr()
    np.testing.assert_array_equal(t.numpy(), x.cpu().numpy())
    y = torch.from_dlpack(t)
    assert y.data_ptr() == t.data_ptr
    y.add_(1)
    torch.cuda.synchronize()
    np.testing.assert_array_equal(t.numpy(), x.cpu().numpy())
    with pytest.raises(TypeError, match="float32"):
        ga.from_dlpack(torch.zeros(3, dtype=torch.float64, device="cuda"))
