"""Bad input to gpuaccel.ops gets a clear Python exception, never a crash.

Wrong dtype -> TypeError; wrong rank, shape, geometry, labels or hyper-parameters ->
ValueError; junk that is not an array -> TypeError; unknown devices and kernels ->
ValueError. Each case runs on every device, since the CUDA path has its own dispatch.
"""
import math

import numpy as np
import pytest

import gpuaccel as ga
from conftest import cuda_available, f32, to_numpy

ops = ga.ops

_g = np.random.default_rng(100)
X = f32(_g.standard_normal((2, 3, 6, 6)))
W = f32(_g.standard_normal((4, 3, 3, 3)))
B = f32(_g.standard_normal(4))
DY = f32(_g.standard_normal((2, 4, 4, 4)))       # conv output for padding 0
DYP = f32(_g.standard_normal((2, 3, 3, 3)))      # pool output for size 2
XD = f32(_g.standard_normal((5, 9)))
WD = f32(_g.standard_normal((4, 9)))
BD = f32(_g.standard_normal(4))
DYD = f32(_g.standard_normal((5, 4)))
LOGITS = f32(_g.standard_normal((6, 5)))
LABELS = np.array([0, 4, 2, 1, 1, 3])
PW = f32(_g.standard_normal((6, 5)))
PG = f32(_g.standard_normal((6, 5)))
PM = f32(_g.standard_normal((6, 5)))
PV = f32(np.abs(_g.standard_normal((6, 5))))

# op name -> (call taking the float array arguments and device, the valid float arguments)
CALLS = {
    "matmul": (lambda a, b, device: ops.matmul(a, b, trans_b=True, device=device), [XD, WD]),
    "conv2d": (lambda x, w, b, device: ops.conv2d(x, w, b, device=device), [X, W, B]),
    "conv2d_backward": (lambda x, w, dy, device: ops.conv2d_backward(x, w, dy, device=device), [X, W, DY]),
    "max_pool2d": (lambda x, device: ops.max_pool2d(x, 2, device=device), [X]),
    "max_pool2d_backward": (lambda x, dy, device: ops.max_pool2d_backward(x, dy, 2, device=device), [X, DYP]),
    "relu": (lambda x, device: ops.relu(x, device=device), [X]),
    "relu_backward": (lambda y, dy, device: ops.relu_backward(y, dy, device=device), [X, X]),
    "dense": (lambda x, w, b, device: ops.dense(x, w, b, device=device), [XD, WD, BD]),
    "dense_backward": (lambda x, w, dy, device: ops.dense_backward(x, w, dy, device=device), [XD, WD, DYD]),
    "softmax_cross_entropy": (lambda z, device: ops.softmax_cross_entropy(z, LABELS, device=device), [LOGITS]),
    "dropout": (lambda x, device: ops.dropout(x, 0.5, device=device), [X]),
    "sgd_step": (lambda w, g, v, device: ops.sgd_step(w, g, v, momentum=0.9, device=device), [PW, PG, PM]),
    "adam_step": (lambda w, g, m, v, device: ops.adam_step(w, g, m, v, 1, device=device), [PW, PG, PM, PV]),
}

ARG_CASES = [(op, i) for op, (_, args) in CALLS.items() for i in range(len(args))]


def _ids(c):
    return f"{c[0]}-arg{c[1]}"


@pytest.mark.parametrize("op", list(CALLS))
def test_valid_calls_work(device, op):
    """The baseline: every call below differs from one of these in one argument only."""
    fn, args = CALLS[op]
    fn(*args, device=device)


@pytest.mark.parametrize("dtype", [np.float64, np.int32, np.float16, np.int64, np.bool_, np.complex64])
@pytest.mark.parametrize("case", ARG_CASES, ids=_ids)
def test_wrong_dtype_is_type_error(device, case, dtype):
    op, i = case
    fn, args = CALLS[op]
    new = list(args)
    new[i] = args[i].astype(dtype)
    with pytest.raises(TypeError):
        fn(*new, device=device)


@pytest.mark.parametrize("junk", [None, ["a", "b"], "xyz", {"a": 1}, object()], ids=lambda j: type(j).__name__)
@pytest.mark.parametrize("case", [c for c in ARG_CASES
                                  if not (c[0] in ("conv2d", "dense") and c[1] == 2)      # bias may be None
                                  and not (c[0] == "sgd_step" and c[1] == 2)],           # velocity may be None
                         ids=_ids)
def test_junk_is_type_error(device, case, junk):
    op, i = case
    fn, args = CALLS[op]
    new = list(args)
    new[i] = junk
    with pytest.raises(TypeError):
        fn(*new, device=device)


def test_object_array_is_type_error(device):
    with pytest.raises(TypeError):
        ops.relu(np.array([1.0, "a"], dtype=object), device=device)


def test_big_endian_float32_rejected_or_correct(device):
    """A byte-swapped float32 array must be converted or refused, never read raw."""
    xb = X.astype(">f4")
    try:
        y = ops.relu(xb, device=device)
    except TypeError:
        return
    np.testing.assert_array_equal(to_numpy(y), np.maximum(X, 0))


# ----------------------------------------------------------------------------
# rank and shape
# ----------------------------------------------------------------------------

RANK_CASES = {
    "conv2d x 3-D": lambda d: ops.conv2d(X[0], W, device=d),
    "conv2d x 5-D": lambda d: ops.conv2d(X[None], W, device=d),
    "conv2d w 3-D": lambda d: ops.conv2d(X, W[0], device=d),
    "conv2d b 2-D": lambda d: ops.conv2d(X, W, B[None], device=d),
    "conv2d_backward dy 3-D": lambda d: ops.conv2d_backward(X, W, DY[0], device=d),
    "max_pool2d x 3-D": lambda d: ops.max_pool2d(X[0], 2, device=d),
    "max_pool2d x 2-D": lambda d: ops.max_pool2d(X[0, 0], 2, device=d),
    "max_pool2d_backward dy 3-D": lambda d: ops.max_pool2d_backward(X, DYP[0], 2, device=d),
    "dense x 1-D": lambda d: ops.dense(XD[0], WD, device=d),
    "dense x 3-D": lambda d: ops.dense(XD[None], WD, device=d),
    "dense w 1-D": lambda d: ops.dense(XD, WD[0], device=d),
    "dense b 2-D": lambda d: ops.dense(XD, WD, BD[None], device=d),
    "dense_backward dy 1-D": lambda d: ops.dense_backward(XD, WD, DYD[0], device=d),
    "softmax logits 1-D": lambda d: ops.softmax_cross_entropy(LOGITS[0], LABELS[:1], device=d),
    "softmax logits 3-D": lambda d: ops.softmax_cross_entropy(LOGITS[None], LABELS, device=d),
    "softmax labels 2-D": lambda d: ops.softmax_cross_entropy(LOGITS, LABELS[:, None], device=d),
    "matmul a 1-D": lambda d: ops.matmul(XD[0], WD, trans_b=True, device=d),
    "matmul b 3-D": lambda d: ops.matmul(XD, WD[None], trans_b=True, device=d),
}

SHAPE_CASES = {
    "conv2d channel mismatch": lambda d: ops.conv2d(X, W[:, :2], device=d),
    "conv2d bias length": lambda d: ops.conv2d(X, W, B[:3], device=d),
    "conv2d_backward channel mismatch": lambda d: ops.conv2d_backward(X, W[:, :2], DY, device=d),
    "conv2d_backward dy wrong spatial": lambda d: ops.conv2d_backward(X, W, DY[:, :, :3], device=d),
    "conv2d_backward dy wrong channels": lambda d: ops.conv2d_backward(X, W, DY[:, :3], device=d),
    "conv2d_backward dy wrong batch": lambda d: ops.conv2d_backward(X, W, DY[:1], device=d),
    "conv2d_backward dy for other padding": lambda d: ops.conv2d_backward(X, W, DY, padding=1, device=d),
    "max_pool2d_backward dy wrong spatial": lambda d: ops.max_pool2d_backward(X, DYP[:, :, :2], 2, device=d),
    "max_pool2d_backward dy wrong channels": lambda d: ops.max_pool2d_backward(X, DYP[:, :2], 2, device=d),
    "relu_backward shape mismatch": lambda d: ops.relu_backward(X, X[:1], device=d),
    "dense in-features mismatch": lambda d: ops.dense(XD, WD[:, :8], device=d),
    "dense bias length": lambda d: ops.dense(XD, WD, BD[:3], device=d),
    "dense_backward dy wrong out": lambda d: ops.dense_backward(XD, WD, DYD[:, :3], device=d),
    "dense_backward dy wrong batch": lambda d: ops.dense_backward(XD, WD, DYD[:4], device=d),
    "matmul inner mismatch": lambda d: ops.matmul(XD, WD, device=d),
    "matmul c wrong shape": lambda d: ops.matmul(XD, WD, trans_b=True, beta=1.0, c=XD, device=d),
    "sgd grad shape": lambda d: ops.sgd_step(PW, PG[:3], device=d),
    "sgd velocity shape": lambda d: ops.sgd_step(PW, PG, PM[:3], momentum=0.9, device=d),
    "adam m shape": lambda d: ops.adam_step(PW, PG, PM[:3], PV, 1, device=d),
    "adam v shape": lambda d: ops.adam_step(PW, PG, PM, PV.T, 1, device=d),
    "adam grad shape": lambda d: ops.adam_step(PW, PG.reshape(-1), PM, PV, 1, device=d),
}


@pytest.mark.parametrize("case", list(RANK_CASES))
def test_wrong_rank_is_value_error(device, case):
    with pytest.raises(ValueError):
        RANK_CASES[case](device)


@pytest.mark.parametrize("case", list(SHAPE_CASES))
def test_wrong_shape_is_value_error(device, case):
    with pytest.raises(ValueError):
        SHAPE_CASES[case](device)


# ----------------------------------------------------------------------------
# geometry and hyper-parameters
# ----------------------------------------------------------------------------

X3 = f32(_g.standard_normal((1, 1, 3, 3)))
W5 = f32(_g.standard_normal((1, 1, 5, 5)))
W4 = f32(_g.standard_normal((2, 3, 4, 4)))

GEOMETRY_CASES = {
    "kernel bigger than input": lambda d: ops.conv2d(X3, W5, device=d),
    "kernel bigger than padded input": lambda d: ops.conv2d(X3, f32(np.ones((1, 1, 6, 6))), padding=1, device=d),
    "kernel taller than input": lambda d: ops.conv2d(X3, f32(np.ones((1, 1, 4, 1))), device=d),
    "conv2d_backward kernel bigger than input": lambda d: ops.conv2d_backward(X3, W5, f32(np.ones((1, 1, 1, 1))),
                                                                              device=d),
    "stride 0": lambda d: ops.conv2d(X, W, stride=0, device=d),
    "stride negative": lambda d: ops.conv2d(X, W, stride=-1, device=d),
    "padding negative": lambda d: ops.conv2d(X, W, padding=-1, device=d),
    "backward stride 0": lambda d: ops.conv2d_backward(X, W, DY, stride=0, device=d),
    "backward padding negative": lambda d: ops.conv2d_backward(X, W, DY, padding=-1, device=d),
    "padding unknown string": lambda d: ops.conv2d(X, W, padding="full", device=d),
    "padding same with stride 2": lambda d: ops.conv2d(X, W, stride=2, padding="same", device=d),
    "padding same with even kernel": lambda d: ops.conv2d(X, W4, padding="same", device=d),
    "pool size 0": lambda d: ops.max_pool2d(X, 0, device=d),
    "pool size negative": lambda d: ops.max_pool2d(X, -2, device=d),
    "pool stride 0": lambda d: ops.max_pool2d(X, 2, 0, device=d),
    "pool size bigger than input": lambda d: ops.max_pool2d(X, 7, device=d),
    "pool backward size bigger than input": lambda d: ops.max_pool2d_backward(X, DYP, 7, device=d),
    "pool backward stride 0": lambda d: ops.max_pool2d_backward(X, DYP, 2, 0, device=d),
    "dropout rate 1": lambda d: ops.dropout(X, 1.0, device=d),
    "dropout rate > 1": lambda d: ops.dropout(X, 1.5, device=d),
    "dropout rate < 0": lambda d: ops.dropout(X, -0.1, device=d),
    "dropout rate nan": lambda d: ops.dropout(X, math.nan, device=d),
    "adam t 0": lambda d: ops.adam_step(PW, PG, PM, PV, 0, device=d),
    "adam t negative": lambda d: ops.adam_step(PW, PG, PM, PV, -3, device=d),
    "conv2d unknown kernel": lambda d: ops.conv2d(X, W, device=d, kernel="winograd9000"),
    "conv2d_backward unknown kernel": lambda d: ops.conv2d_backward(X, W, DY, device=d, kernel="nope"),
    "matmul unknown kernel": lambda d: ops.matmul(XD, WD, trans_b=True, device=d, kernel="nope"),
}


@pytest.mark.parametrize("case", list(GEOMETRY_CASES))
def test_bad_geometry_is_value_error(device, case):
    with pytest.raises(ValueError):
        GEOMETRY_CASES[case](device)


def test_kernel_exactly_fits_padded_input_is_fine(device):
    y = to_numpy(ops.conv2d(X3, W5, padding=1, device=device))
    assert y.shape == (1, 1, 1, 1)


@pytest.mark.parametrize("value", [1.5, "2", 2**70])
def test_non_integer_or_huge_stride_refused(device, value):
    with pytest.raises((TypeError, ValueError, OverflowError)):
        ops.conv2d(X, W, stride=value, device=device)


# ----------------------------------------------------------------------------
# labels
# ----------------------------------------------------------------------------

LABEL_CASES = {
    "label == K": np.array([0, 4, 2, 1, 1, 5]),
    "label >> K": np.array([0, 4, 2, 1000, 1, 3]),
    "label negative": np.array([0, 4, -1, 1, 1, 3]),
    "label int8 negative": np.array([0, 4, -1, 1, 1, 3], np.int8),
    "label huge uint64": np.array([0, 4, 2, 2**63 + 1, 1, 3], np.uint64),
    "label 2**32 (wraps to 0 in int32)": np.array([0, 4, 2, 2**32, 1, 3], np.int64),
    "too few labels": LABELS[:5],
    "too many labels": np.concatenate([LABELS, [0]]),
}


@pytest.mark.parametrize("case", list(LABEL_CASES))
def test_bad_labels_are_value_error(device, case):
    with pytest.raises(ValueError):
        ops.softmax_cross_entropy(LOGITS, LABEL_CASES[case], device=device)


@pytest.mark.parametrize("labels", [LABELS.astype(np.float32), LABELS.astype(np.float64), None, ["a"] * 6],
                         ids=["float32", "float64", "None", "strings"])
def test_non_integer_labels_are_type_error(device, labels):
    with pytest.raises(TypeError):
        ops.softmax_cross_entropy(LOGITS, labels, device=device)


# ----------------------------------------------------------------------------
# empty batches
# ----------------------------------------------------------------------------

EMPTY_CASES = {
    "conv2d N=0": lambda d: ops.conv2d(np.zeros((0, 3, 6, 6), np.float32), W, device=d),
    "max_pool2d N=0": lambda d: ops.max_pool2d(np.zeros((0, 3, 6, 6), np.float32), 2, device=d),
    "softmax_cross_entropy N=0": lambda d: ops.softmax_cross_entropy(np.zeros((0, 5), np.float32),
                                                                      np.zeros(0, np.int64), device=d),
    "conv2d C=0": lambda d: ops.conv2d(np.zeros((2, 0, 6, 6), np.float32), np.zeros((4, 0, 3, 3), np.float32),
                                       device=d),
    "conv2d H=0": lambda d: ops.conv2d(np.zeros((2, 3, 0, 6), np.float32), W, device=d),
    "softmax K=0": lambda d: ops.softmax_cross_entropy(np.zeros((6, 0), np.float32), LABELS, device=d),
}


@pytest.mark.parametrize("case", list(EMPTY_CASES))
def test_empty_is_value_error(device, case):
    with pytest.raises(ValueError):
        EMPTY_CASES[case](device)


# ----------------------------------------------------------------------------
# devices and kernels
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("dev", ["tpu", "gpu", "cuda:x", "cpu:0:1", ""])
def test_unknown_device_is_value_error(dev):
    with pytest.raises(ValueError):
        ops.relu(X, device=dev)
    with pytest.raises(ValueError):
        ops.conv2d(X, W, device=dev)


def test_device_not_a_string_is_type_error():
    with pytest.raises(TypeError):
        ops.relu(X, device=0)


def test_cublas_on_cpu_is_value_error():
    with pytest.raises(ValueError):
        ops.matmul(XD, WD, trans_b=True, device="cpu", kernel="cublas")


def test_cuda_when_unavailable_is_runtime_error_naming_the_reason():
    if cuda_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(RuntimeError) as info:
        ops.relu(X, device="cuda")
    assert str(info.value).strip()


def test_cuda_index_out_of_range_is_value_error(cuda_device):
    with pytest.raises(ValueError):
        ops.relu(X, device="cuda:99")


# ----------------------------------------------------------------------------
# after an error, everything still works
# ----------------------------------------------------------------------------


def test_errors_leave_no_state_behind(device):
    for case in list(GEOMETRY_CASES)[:5]:
        with pytest.raises(ValueError):
            GEOMETRY_CASES[case](device)
    with pytest.raises(TypeError):
        ops.conv2d(X.astype(np.float64), W, device=device)
    y = to_numpy(ops.conv2d(X, W, B, device=device))
    assert y.shape == (2, 4, 4, 4) and np.all(np.isfinite(y))


def test_nan_inputs_do_not_crash(device):
    xn = X.copy()
    xn[0, 0, 0, 0] = np.nan
    ops.relu(xn, device=device)
    ops.max_pool2d(xn, 2, device=device)
    ops.conv2d(xn, W, device=device)
    ops.conv2d_backward(xn, W, DY, device=device)
    ops.dropout(xn, 0.5, device=device)
    gn = PG.copy()
    gn[0, 0] = np.inf
    ops.sgd_step(PW, gn, device=device)
    ops.adam_step(PW, gn, PM, PV, 1, device=device)
