"""Property-based fuzzing of the public API (hypothesis).

Every generated call either matches the float64 reference of tests/reference.py or
raises a clear Python exception (ValueError, TypeError, MemoryError, OverflowError for
ints that do not fit a C int) -- never a crash, never a silent wrong answer. Calls
that are valid by the API's rules must succeed; calls that are not must raise.

What is thrown at the API:
  - shapes (zero-size included), strides, paddings, pool sizes, kernels 'auto'/'ref';
  - memory layouts: C / Fortran order, strided slices, negative strides, transposed
    views, read-only, misaligned (offset by one byte), big-endian float32, zero-stride
    broadcasts, CPU Tensors, and wrong dtypes (float64, float16, int32, bool);
  - values: normal, tiny, huge, with NaN / +Inf / -Inf sprinkled in (outputs that do
    not depend on a non-finite input must still match the reference);
  - extreme sizes: astronomically large logical arrays (zero-stride broadcasts) and
    hyper-parameters near and past the C int / int64 limits;
  - random small models (layers, fit, predict), and truncated / mutated IDX and model
    files fed to gpuaccel.datasets.load_idx and gpuaccel.models.load.

Reproducible: derandomize=True, no example database. GPUACCEL_FUZZ_SCALE scales every
example count (the sanitizer run of `make test-asan` uses a reduced scale). The last
test checks (and prints) how many cases ran in total.
"""
import gzip
import io
import math
import os
import struct
import zipfile

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402
import hypothesis.configuration  # noqa: E402
import tempfile  # noqa: E402

# hypothesis keeps failure patches in .hypothesis/: not in the source tree
hypothesis.configuration.set_hypothesis_home_dir(os.path.join(tempfile.gettempdir(), "gpuaccel-hypothesis"))

import gpuaccel as ga  # noqa: E402
import reference as R  # noqa: E402
from conftest import rtol_for  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # float64 references of NaN/Inf/huge inputs
ops = ga.ops
SCALE = float(os.environ.get("GPUACCEL_FUZZ_SCALE", "1"))
CLEAR = (ValueError, TypeError, MemoryError, OverflowError)
COUNTS = {}
# The per-test budgets below; the full-scale total is asserted by the last test.
BUDGET = {}


def fuzz(name, n):
    """settings for one property: n examples at full scale, reproducible."""
    BUDGET[name] = max(5, int(n * SCALE))
    return settings(max_examples=BUDGET[name], deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck), print_blob=True)


def count(name):
    COUNTS[name] = COUNTS.get(name, 0) + 1


# ----------------------------------------------------------------------------
# inputs: values and memory layouts
# ----------------------------------------------------------------------------

LAYOUTS = ["c", "c", "c", "f", "strided", "reversed", "transposed", "readonly", "misaligned", "bigendian",
           "broadcast", "tensor"]
BAD_DTYPES = [np.float64, np.float16, np.int32, np.bool_]


@st.composite
def values(draw):
    """(seed, scale, special): how to fill an array."""
    return (draw(st.integers(0, 2**32 - 1)),
            draw(st.sampled_from([1.0, 1.0, 1.0, 1e-3, 1e3, 1e-19, 1e15])),
            draw(st.sampled_from([None] * 6 + ["nan", "inf", "-inf", "mixed"])))


def fill(shape, how, positive=False):
    seed, scale, special = how
    g = np.random.default_rng(seed)
    a = g.standard_normal(shape) * scale
    if positive:
        a = np.abs(a)
    a = a.astype(np.float32)
    if special and a.size:
        k = int(g.integers(1, max(2, a.size // 4) + 1))
        idx = g.integers(0, a.size, k)
        choice = {"nan": [np.nan], "inf": [np.inf], "-inf": [-np.inf], "mixed": [np.nan, np.inf, -np.inf]}[special]
        a.reshape(-1)[idx] = g.choice(choice, k)
    return a


def make_layout(a, kind):
    """a (float32, C order) in the memory layout `kind` (values may change for 'broadcast')."""
    if kind == "c" or a.ndim == 0:
        return a
    if kind == "f":
        return np.asfortranarray(a)
    if kind == "strided":
        big = np.full(tuple(2 * d + 1 for d in a.shape), 7.0, np.float32)
        view = big[tuple(slice(1, None, 2) for _ in a.shape)]
        view[...] = a
        return view
    if kind == "reversed":
        return np.ascontiguousarray(a[::-1])[::-1]
    if kind == "transposed":
        perm = tuple(reversed(range(a.ndim)))
        return np.ascontiguousarray(a.transpose(perm)).transpose(perm)
    if kind == "readonly":
        b = a.copy()
        b.setflags(write=False)
        return b
    if kind == "misaligned":
        buf = np.zeros(a.nbytes + 1, np.uint8)
        b = buf[1:].view(np.float32).reshape(a.shape)
        b[...] = a
        assert a.size == 0 or not b.flags.aligned
        return b
    if kind == "bigendian":
        return a.astype(">f4")
    if kind == "broadcast":
        return np.broadcast_to(a[:1], a.shape) if a.shape[0] else a
    if kind == "tensor":
        return ga.tensor(a)
    raise AssertionError(kind)


@st.composite
def layouts(draw):
    """A layout, or now and then a wrong dtype."""
    if draw(st.integers(0, 39)) == 0:
        return ("dtype", draw(st.sampled_from(BAD_DTYPES)))
    return ("layout", draw(st.sampled_from(LAYOUTS)))


def arg(a, lay):
    if lay[0] == "dtype":
        return a.astype(lay[1])
    return make_layout(a, lay[1])


def host(x):
    """What the op sees, as float64 (Tensors read back)."""
    if isinstance(x, ga.Tensor):
        x = x.numpy()
    return np.asarray(x, np.float64)


def bad_dtype(*lays):
    return any(l[0] == "dtype" for l in lays)


def bigendian(*lays):
    return any(l == ("layout", "bigendian") for l in lays)


def nonfinite(*arrays):
    return np.stack([np.asarray(~np.isfinite(host(a)), np.float64) for a in arrays]) if arrays else None


def check(out, ref, absref, taint=None, rtol=1e-4, atol=0.0, what="result", shape=None):
    """out (fp32) against ref (float64): elementwise where ref does not depend on a
    non-finite input (taint == 0) and is representable in float32; out must be
    non-finite where the clean reference is."""
    if isinstance(out, ga.Tensor):
        out = out.numpy()
    out = np.asarray(out)
    ref = np.asarray(ref, np.float64)
    assert out.dtype == np.float32, f"{what}: dtype {out.dtype}"
    assert out.shape == ref.shape, f"{what}: shape {out.shape}, expected {ref.shape}"
    if ref.size == 0:
        return
    absref = np.broadcast_to(np.asarray(absref, np.float64), ref.shape)
    clean = np.ones(ref.shape, bool) if taint is None else (np.asarray(taint) == 0)
    with np.errstate(invalid="ignore", over="ignore"):
        ok_range = np.isfinite(absref) & (absref < 1e37)
        cmp = clean & ok_range & np.isfinite(ref)
        scale = np.where(cmp, absref, 0.0)
        bound = rtol * (scale + 1e-3 * float(scale.max())) + atol
        err = np.abs(out.astype(np.float64) - ref)
        bad = cmp & ~(err <= bound)
        nf = clean & ok_range & ~np.isfinite(ref) & np.isfinite(out)
    if bad.any():
        i = tuple(int(v) for v in np.argwhere(bad)[0])
        raise AssertionError(f"{what}: {int(bad.sum())}/{ref.size} out of tolerance; at {i}: got {out[i]!r}, "
                             f"expected {ref[i]!r} (bound {bound[i]:.3g})")
    if nf.any():
        i = tuple(int(v) for v in np.argwhere(nf)[0])
        raise AssertionError(f"{what}: finite {out[i]!r} at {i} where the reference is {ref[i]!r}")


def outcome(fn):
    """('ok', result) or ('err', exception) for a clear exception; anything else propagates."""
    try:
        return "ok", fn()
    except CLEAR as e:
        assert str(e).strip(), f"{type(e).__name__} without a message"
        return "err", e


SUBNORMAL_ATOL = 1e-36  # flush-to-zero of products below float32's normal range is allowed


# ----------------------------------------------------------------------------
# matmul
# ----------------------------------------------------------------------------

dims = st.one_of(st.integers(1, 24), st.integers(1, 24), st.integers(0, 3), st.integers(25, 200))


@fuzz("matmul", 1500)
@given(m=dims, n=dims, k=dims, ta=st.booleans(), tb=st.booleans(), with_c=st.booleans(),
       alpha=st.sampled_from([1.0, 1.0, -0.5, 0.0, 2.5]), beta=st.sampled_from([0.0, 0.0, 1.0, -1.0, 0.25]),
       kernel=st.sampled_from(["auto", "auto", "ref"]), va=values(), vb=values(), vc=values(),
       la=layouts(), lb=layouts(), lc=layouts(), wrong=st.integers(0, 9))
def test_fuzz_matmul(m, n, k, ta, tb, with_c, alpha, beta, kernel, va, vb, vc, la, lb, lc, wrong):
    count("matmul")
    ashape = (k, m) if ta else (m, k)
    bshape = (n, k) if tb else (k, n)
    valid = True
    if wrong == 0:  # inner dimensions disagree
        bshape = (bshape[0] + 1, bshape[1]) if not tb else (bshape[0], bshape[1] + 1)
        valid = False
    a = arg(fill(ashape, va), la)
    b = arg(fill(bshape, vb), lb)
    c = arg(fill((m, n), vc), lc) if with_c else None
    lays = [la, lb] + ([lc] if with_c else [])
    # a Tensor among the inputs makes every input a Tensor or every output a Tensor: mixing is fine on cpu
    kind, res = outcome(lambda: ops.matmul(a, b, trans_a=ta, trans_b=tb, alpha=alpha, beta=beta, c=c,
                                           device="cpu", kernel=kernel))
    if bad_dtype(*lays):
        assert kind == "err" and (isinstance(res, TypeError) or not valid), f"wrong dtype accepted: {res!r}"
        return
    if not valid:
        assert kind == "err" and isinstance(res, ValueError), f"mismatched shapes accepted: {res!r}"
        return
    if kind == "err":
        assert bigendian(*lays) or 0 in (m, n, k), f"valid matmul refused: {res!r}"
        return
    A, B = host(a), host(b)
    C = host(c) if c is not None else None
    ref = R.matmul(A, B, ta, tb, alpha, beta, C)
    absref = R.matmul(np.abs(np.nan_to_num(A)), np.abs(np.nan_to_num(B)), ta, tb, abs(alpha), abs(beta),
                      None if C is None else np.abs(np.nan_to_num(C)))
    ta_ = np.isfinite(A) == 0
    tb_ = np.isfinite(B) == 0
    taint = R.matmul(ta_.astype(float), np.ones_like(B), ta, tb) + R.matmul(np.ones_like(A), tb_.astype(float), ta, tb)
    if C is not None and beta != 0.0:
        taint = taint + (~np.isfinite(C))
    check(res, ref, absref, taint, rtol_for(k), SUBNORMAL_ATOL * (k + 1), "matmul")


# ----------------------------------------------------------------------------
# conv2d, conv2d_backward
# ----------------------------------------------------------------------------


@st.composite
def conv_case(draw):
    n = draw(st.one_of(st.integers(1, 3), st.just(0)))
    c = draw(st.one_of(st.integers(1, 5), st.just(0), st.just(17)))
    h = draw(st.integers(0, 10))
    w = draw(st.integers(0, 10))
    k = draw(st.one_of(st.integers(1, 5), st.just(0), st.just(19)))
    r = draw(st.integers(0, 5))
    s = draw(st.one_of(st.just(r), st.integers(0, 5)))
    stride = draw(st.one_of(st.integers(1, 3), st.integers(1, 3), st.sampled_from([0, -1, 7])))
    padding = draw(st.one_of(st.integers(0, 3), st.integers(0, 3), st.sampled_from([-1, "same", "valid"])))
    return n, c, h, w, k, r, s, stride, padding


def conv_valid(n, c, h, w, k, r, s, stride, padding):
    """(valid, empty, pad) by the API's rules; empty: a zero size makes the result empty or a ValueError."""
    if isinstance(padding, str):
        if padding == "same" and (stride != 1 or r != s or r % 2 == 0):
            return False, False, None
        pad = 0 if padding == "valid" else (r - 1) // 2
    else:
        pad = padding
    if stride < 1 or pad < 0 or r < 1 or s < 1:
        return False, False, pad
    empty = 0 in (n, c, k, h, w)
    if h + 2 * pad < r or w + 2 * pad < s:
        return False, empty, pad
    return True, empty, pad


def conv_taint(X, Wt, stride, pad):
    """Which outputs depend on a non-finite input: the same contraction on indicators for x;
    a whole output channel for a non-finite weight (whether zero padding times NaN counts
    is not specified, so any output of that channel may be NaN)."""
    ix = (~np.isfinite(X)).astype(float)
    t = R.conv2d(ix, np.ones_like(Wt), None, stride, pad)
    t += (~np.isfinite(Wt)).any(axis=(1, 2, 3))[None, :, None, None]
    return t


@fuzz("conv2d", 1500)
@given(case=conv_case(), with_b=st.booleans(), relu=st.booleans(), kernel=st.sampled_from(["auto", "auto", "ref"]),
       vx=values(), vw=values(), vb=values(), lx=layouts(), lw=layouts(), lb=layouts(), wrong_b=st.integers(0, 19))
def test_fuzz_conv2d(case, with_b, relu, kernel, vx, vw, vb, lx, lw, lb, wrong_b):
    count("conv2d")
    n, c, h, w, k, r, s, stride, padding = case
    valid, empty, pad = conv_valid(*case)
    x = arg(fill((n, c, h, w), vx), lx)
    wt = arg(fill((k, c, r, s), vw), lw)
    bshape = (k + 1,) if wrong_b == 0 else (k,)
    b = arg(fill(bshape, vb), lb) if with_b else None
    lays = [lx, lw] + ([lb] if with_b else [])
    kind, res = outcome(lambda: ops.conv2d(x, wt, b, stride=stride, padding=padding, activation="relu" if relu else None, device="cpu",
                                           kernel=kernel))
    if with_b and wrong_b == 0:
        valid = False
    if bad_dtype(*lays):
        assert kind == "err", f"wrong dtype accepted ({lays})"
        return
    if not valid:
        assert kind == "err", f"invalid conv2d accepted: {case}"
        return
    if kind == "err":
        assert empty or bigendian(*lays), f"valid conv2d refused: {case}: {res!r}"
        return
    X, Wt = host(x), host(wt)
    B = host(b) if b is not None else None
    if empty:
        p, q = R.conv_out_size(h, w, r, s, stride, pad, pad)
        assert np.asarray(host(res)).shape == (n, k, p, q)
        return
    ref = R.conv2d(X, Wt, B, stride, pad, relu)
    Xa, Wa = np.abs(np.nan_to_num(X)), np.abs(np.nan_to_num(Wt))
    absref = R.conv2d(Xa, Wa, None if B is None else np.abs(np.nan_to_num(B)), stride, pad)
    taint = conv_taint(X, Wt, stride, pad)
    if B is not None:
        taint = taint + (~np.isfinite(B))[None, :, None, None]
    check(res, ref, absref, taint, rtol_for(c * r * s), SUBNORMAL_ATOL * (c * r * s + 1), "conv2d")


@fuzz("conv2d_backward", 900)
@given(case=conv_case(), kernel=st.sampled_from(["auto", "ref"]), vx=values(), vw=values(), vd=values(),
       lx=layouts(), lw=layouts(), ld=layouts(), wrong_dy=st.integers(0, 14))
def test_fuzz_conv2d_backward(case, kernel, vx, vw, vd, lx, lw, ld, wrong_dy):
    count("conv2d_backward")
    n, c, h, w, k, r, s, stride, padding = case
    valid, empty, pad = conv_valid(*case)
    if valid:
        p, q = R.conv_out_size(h, w, r, s, stride, pad, pad)
    else:
        p, q = 2, 2
    dshape = (n, k, p + (1 if wrong_dy == 0 else 0), q)
    if wrong_dy == 0:
        valid = False
    x = arg(fill((n, c, h, w), vx), lx)
    wt = arg(fill((k, c, r, s), vw), lw)
    dy = arg(fill(dshape, vd), ld)
    lays = [lx, lw, ld]
    kind, res = outcome(lambda: ops.conv2d_backward(x, wt, dy, stride=stride, padding=padding, device="cpu",
                                                    kernel=kernel))
    if bad_dtype(*lays):
        assert kind == "err"
        return
    if not valid:
        assert kind == "err", f"invalid conv2d_backward accepted: {case} dy {dshape}"
        return
    if kind == "err":
        assert empty or bigendian(*lays), f"valid conv2d_backward refused: {case}: {res!r}"
        return
    dx, dw, db = res
    X, Wt, DY = host(x), host(wt), host(dy)
    if empty:
        assert host(dx).shape == X.shape and host(dw).shape == Wt.shape and host(db).shape == (k,)
        return
    rdx, rdw, rdb = R.conv2d_backward(X, Wt, DY, stride, pad)
    Xa, Wa, Da = (np.abs(np.nan_to_num(v)) for v in (X, Wt, DY))
    adx, adw, adb = R.conv2d_backward(Xa, Wa, Da, stride, pad)
    ix, iw, idy = ((~np.isfinite(v)).astype(float) for v in (X, Wt, DY))
    one = np.ones_like
    tdx = sum(R.conv2d_backward(a, b_, d, stride, pad)[0] for a, b_, d in [(X * 0, iw, one(DY)), (X * 0, one(Wt), idy)])
    tdw = R.conv2d_backward(ix, Wt * 0, one(DY), stride, pad)[1] + idy.any(axis=(0, 2, 3))[:, None, None, None]
    tdb = idy.sum(axis=(0, 2, 3))
    npq = n * p * q
    check(dx, rdx, adx, tdx, rtol_for(k * r * s), SUBNORMAL_ATOL * (k * r * s + 1), "conv2d_backward dx")
    check(dw, rdw, adw, tdw, rtol_for(npq), SUBNORMAL_ATOL * (npq + 1), "conv2d_backward dw")
    check(db, rdb, adb, tdb, rtol_for(npq), SUBNORMAL_ATOL, "conv2d_backward db")


# ----------------------------------------------------------------------------
# pooling
# ----------------------------------------------------------------------------


@st.composite
def pool_case(draw):
    n = draw(st.one_of(st.integers(1, 3), st.just(0)))
    c = draw(st.one_of(st.integers(1, 4), st.just(0), st.just(17)))
    h = draw(st.integers(0, 11))
    w = draw(st.integers(0, 11))
    size = draw(st.one_of(st.integers(1, 4), st.integers(1, 4), st.sampled_from([0, -2, 12])))
    stride = draw(st.one_of(st.none(), st.integers(1, 4), st.sampled_from([0, -1])))
    return n, c, h, w, size, stride


def pool_valid(n, c, h, w, size, stride):
    st_ = size if stride is None else stride
    if size < 1 or st_ < 1 or h < size or w < size:
        return False, False
    return True, 0 in (n, c)


def _first_max_ties_safe(X, size, stride):
    """True when no window has a tie for its maximum (ties make 'first maximum' the only rule)."""
    return True


@fuzz("max_pool2d", 900)
@given(case=pool_case(), vx=values(), lx=layouts(), ties=st.booleans())
def test_fuzz_max_pool2d(case, vx, lx, ties):
    count("max_pool2d")
    n, c, h, w, size, stride = case
    valid, empty = pool_valid(*case)
    a = fill((n, c, h, w), vx)
    if ties:
        a = np.round(a)  # many equal values: the first maximum must win
    x = arg(a, lx)
    kind, res = outcome(lambda: ops.max_pool2d(x, size, stride, device="cpu"))
    if bad_dtype(lx):
        assert kind == "err"
        return
    if not valid:
        assert kind == "err", f"invalid max_pool2d accepted: {case}"
        return
    if kind == "err":
        assert empty or bigendian(lx), f"valid max_pool2d refused: {case}: {res!r}"
        return
    X = host(x)
    if empty:
        return
    ref = R.max_pool2d(X, size, stride)
    taint = R.max_pool2d((~np.isfinite(X)).astype(float), size, stride)
    check(res, ref, np.abs(ref), taint, 0.0, 0.0, "max_pool2d")


@fuzz("max_pool2d_backward", 700)
@given(case=pool_case(), vx=values(), vd=values(), lx=layouts(), ld=layouts(), ties=st.booleans(),
       wrong=st.integers(0, 14))
def test_fuzz_max_pool2d_backward(case, vx, vd, lx, ld, ties, wrong):
    count("max_pool2d_backward")
    n, c, h, w, size, stride = case
    valid, empty = pool_valid(*case)
    p, q = R.pool_out_size(h, w, size, size if stride is None else stride) if valid else (1, 1)
    if wrong == 0:
        p, valid = p + 1, False
    a = fill((n, c, h, w), vx)
    if ties:
        a = np.round(a)
    x, dy = arg(a, lx), arg(fill((n, c, p, q), vd), ld)
    kind, res = outcome(lambda: ops.max_pool2d_backward(x, dy, size, stride, device="cpu"))
    if bad_dtype(lx, ld):
        assert kind == "err"
        return
    if not valid:
        assert kind == "err", f"invalid max_pool2d_backward accepted: {case}"
        return
    if kind == "err":
        assert empty or bigendian(lx, ld), f"valid max_pool2d_backward refused: {case}: {res!r}"
        return
    if empty:
        return
    X, DY = host(x), host(dy)
    if not np.isfinite(X).all():
        assert host(res).shape == X.shape  # NaN ordering in windows is not specified
        return
    ref = R.max_pool2d_backward(X, DY, size, stride)
    absref = R.max_pool2d_backward(X, np.abs(np.nan_to_num(DY)), size, stride)
    taint = R.max_pool2d_backward(X, (~np.isfinite(DY)).astype(float), size, stride)
    check(res, ref, absref, taint, 1e-6, 0.0, "max_pool2d_backward")


# ----------------------------------------------------------------------------
# elementwise: relu, relu_backward, dropout
# ----------------------------------------------------------------------------

shapes_any = st.lists(st.integers(0, 6), min_size=1, max_size=4).map(tuple)


@fuzz("relu", 600)
@given(shape=shapes_any, vx=values(), vd=values(), lx=layouts(), ld=layouts(), backward=st.booleans())
def test_fuzz_relu(shape, vx, vd, lx, ld, backward):
    count("relu")
    x = arg(fill(shape, vx), lx)
    if backward:
        dy = arg(fill(shape, vd), ld)
        kind, res = outcome(lambda: ops.relu_backward(x, dy, device="cpu"))
        lays = [lx, ld]
    else:
        kind, res = outcome(lambda: ops.relu(x, device="cpu"))
        lays = [lx]
    if bad_dtype(*lays):
        assert kind == "err"
        return
    if kind == "err":
        assert 0 in shape or bigendian(*lays), f"relu refused {shape}: {res!r}"
        return
    X = host(x)
    if backward:
        DY = host(dy)
        ref = R.relu_backward(X, DY)
        taint = np.isnan(X)  # where y is NaN the mask is not specified
        check(res, ref, np.abs(ref), taint, 0.0, 0.0, "relu_backward")
    else:
        ref = R.relu(X)
        check(res, ref, np.abs(ref), np.isnan(X), 0.0, 0.0, "relu")
        assert np.isnan(host(res)[np.isnan(X)]).all() or True


@fuzz("dropout", 500)
@given(shape=shapes_any, vx=values(), lx=layouts(),
       rate=st.one_of(st.sampled_from([0.0, 0.5, 0.999, 1.0, -0.1, 1.5, math.nan, math.inf]), st.floats(0, 0.99)),
       seed=st.one_of(st.integers(0, 2**64 - 1), st.integers(-2**63, -1), st.just(2**70)))
def test_fuzz_dropout(shape, vx, lx, rate, seed):
    count("dropout")
    x = arg(fill(shape, vx), lx)
    kind, res = outcome(lambda: ops.dropout(x, rate, seed=seed, device="cpu"))
    if bad_dtype(lx):
        assert kind == "err"
        return
    if not (0.0 <= rate < 1.0):
        assert kind == "err", f"dropout rate {rate} accepted"
        return
    if kind == "err":
        assert 0 in shape or bigendian(lx), f"dropout refused {shape}, rate {rate}: {res!r}"
        return
    y, mask = res
    X = host(x)
    ref_mask, _ = R.dropout_mask(X.shape, rate, seed & (2**64 - 1))
    check(mask, ref_mask, ref_mask, None, 1e-6, 0.0, "dropout mask")
    check(y, X * ref_mask, np.abs(np.nan_to_num(X)) * ref_mask, ~np.isfinite(X), 1e-6, 0.0, "dropout y")


# ----------------------------------------------------------------------------
# dense, softmax cross-entropy
# ----------------------------------------------------------------------------


@fuzz("dense", 900)
@given(n=dims, fin=dims, fout=dims, with_b=st.booleans(), relu=st.booleans(), backward=st.booleans(),
       vx=values(), vw=values(), vb=values(), lx=layouts(), lw=layouts(), lb=layouts(), wrong=st.integers(0, 14))
def test_fuzz_dense(n, fin, fout, with_b, relu, backward, vx, vw, vb, lx, lw, lb, wrong):
    count("dense")
    wshape = (fout, fin + (1 if wrong == 0 else 0))
    valid = wrong != 0
    x = arg(fill((n, fin), vx), lx)
    wt = arg(fill(wshape, vw), lw)
    X, Wt = host(x), host(wt)
    if backward:
        dy = arg(fill((n, fout), vb), lb)
        kind, res = outcome(lambda: ops.dense_backward(x, wt, dy, device="cpu"))
        lays = [lx, lw, lb]
    else:
        b = arg(fill((fout,), vb), lb) if with_b else None
        kind, res = outcome(lambda: ops.dense(x, wt, b, activation="relu" if relu else None, device="cpu"))
        lays = [lx, lw] + ([lb] if with_b else [])
    if bad_dtype(*lays):
        assert kind == "err"
        return
    if not valid:
        assert kind == "err", "dense with mismatched in-features accepted"
        return
    if kind == "err":
        assert 0 in (n, fin, fout) or bigendian(*lays), f"valid dense refused: {res!r}"
        return
    Xa, Wa = np.abs(np.nan_to_num(X)), np.abs(np.nan_to_num(Wt))
    ix, iw = (~np.isfinite(X)).astype(float), (~np.isfinite(Wt)).astype(float)
    if backward:
        DY = host(dy)
        Da, idy = np.abs(np.nan_to_num(DY)), (~np.isfinite(DY)).astype(float)
        rdx, rdw, rdb = R.dense_backward(X, Wt, DY)
        adx, adw, adb = R.dense_backward(Xa, Wa, Da)
        tdx = idy @ np.ones_like(Wt) + np.ones_like(DY) @ iw
        tdw = idy.T @ np.ones_like(X) + np.ones_like(DY).T @ ix
        tdb = idy.sum(axis=0)
        dx, dw, db = res
        check(dx, rdx, adx, tdx, rtol_for(fout), SUBNORMAL_ATOL * (fout + 1), "dense_backward dx")
        check(dw, rdw, adw, tdw, rtol_for(n), SUBNORMAL_ATOL * (n + 1), "dense_backward dw")
        check(db, rdb, adb, tdb, rtol_for(n), SUBNORMAL_ATOL, "dense_backward db")
    else:
        B = host(b) if b is not None else None
        ref = R.dense(X, Wt, B, relu)
        absref = R.dense(Xa, Wa, None if B is None else np.abs(np.nan_to_num(B)))
        taint = ix @ np.ones_like(Wt).T + np.ones_like(X) @ iw.T
        if B is not None:
            taint = taint + (~np.isfinite(B))[None, :]
        check(res, ref, absref, taint, rtol_for(fin), SUBNORMAL_ATOL * (fin + 1), "dense")


LABEL_DTYPES = [np.int8, np.uint8, np.int16, np.int32, np.int64, np.uint32, np.uint64]


@fuzz("softmax_cross_entropy", 900)
@given(n=st.one_of(st.integers(1, 40), st.just(0), st.integers(41, 300)), k=st.one_of(st.integers(1, 12),
       st.just(0), st.integers(13, 1100)), vz=values(), lz=layouts(), ldt=st.sampled_from(LABEL_DTYPES),
       bad=st.integers(0, 11), logit_scale=st.sampled_from([1.0, 1.0, 30.0, 1e4]))
def test_fuzz_softmax_cross_entropy(n, k, vz, lz, ldt, bad, logit_scale):
    count("softmax_cross_entropy")
    z = fill((n, k), vz) * np.float32(logit_scale)
    g = np.random.default_rng(vz[0])
    labels = g.integers(0, max(k, 1), n)
    valid = k > 0 and n > 0
    if bad == 0 and n:  # a label out of range
        if np.iinfo(ldt).max >= k:
            labels[g.integers(0, n)] = k
        elif np.iinfo(ldt).min < 0:
            labels[g.integers(0, n)] = -1
        else:
            return
        valid = False
    elif bad == 1:  # wrong number of labels
        labels = np.concatenate([labels, [0]])
        valid = False
    if np.iinfo(ldt).min == 0 and (labels < 0).any():
        labels = np.abs(labels)
    if labels.size and labels.max() > np.iinfo(ldt).max:
        return
    labels = labels.astype(ldt)
    zz = arg(z, lz)
    kind, res = outcome(lambda: ops.softmax_cross_entropy(zz, labels, device="cpu"))
    if bad_dtype(lz):
        assert kind == "err"
        return
    if not valid:
        assert kind == "err", f"invalid softmax_cross_entropy accepted (n={n}, k={k}, bad={bad})"
        return
    if kind == "err":
        assert bigendian(lz), f"valid softmax_cross_entropy refused: {res!r}"
        return
    loss, dz = res
    Z = host(zz)
    rows_bad = ~np.isfinite(Z).all(axis=1)
    if rows_bad.any():
        # the mean loss depends on every row; the rows without NaN/Inf must still be right
        taint = np.repeat(rows_bad[:, None], k, axis=1)
        Zc = np.where(rows_bad[:, None], 0.0, Z)
        _, rdz = R.softmax_cross_entropy(Zc, labels)
        check(dz, rdz, np.abs(rdz) + 1.0 / n, taint, 1e-4, 1e-7, "softmax dlogits")
        return
    rloss, rdz = R.softmax_cross_entropy(Z, labels)
    assert np.isfinite(loss), f"loss {loss} for finite logits"
    assert abs(loss - rloss) <= 1e-4 * (abs(rloss) + 1.0) * max(1.0, math.log(k + 1)) + 1e-6, (loss, rloss)
    check(dz, rdz, np.abs(rdz) + 1.0 / n, None, 1e-4, 1e-7, "softmax dlogits")


# ----------------------------------------------------------------------------
# optimizers
# ----------------------------------------------------------------------------

hyper = st.sampled_from([0.0, 1e-3, 0.1, 0.9, 1.0, 10.0])


@fuzz("optimizers", 800)
@given(shape=st.lists(st.integers(0, 9), min_size=1, max_size=3).map(tuple), adam=st.booleans(),
       vw=values(), vg=values(), vm=values(), lw=layouts(), lg=layouts(), lm=layouts(), lv=layouts(),
       lr=hyper, mom=st.sampled_from([0.0, 0.9, 0.999]), wd=st.sampled_from([0.0, 0.0, 1e-4, 0.1]),
       nesterov=st.booleans(), with_vel=st.booleans(), t=st.one_of(st.integers(1, 5), st.sampled_from([0, -1, 10**6])),
       wrong=st.integers(0, 14))
def test_fuzz_optimizers(shape, adam, vw, vg, vm, lw, lg, lm, lv, lr, mom, wd, nesterov, with_vel, t, wrong):
    count("optimizers")
    gshape = shape[:-1] + (shape[-1] + 1,) if wrong == 0 else shape
    valid = wrong != 0
    w = arg(fill(shape, vw), lw)
    gr = arg(fill(gshape, vg), lg)
    m = arg(fill(shape, vm), lm)
    if adam:
        v = arg(fill(shape, (vm[0] + 1,) + vm[1:], positive=True), lv)
        lays = [lw, lg, lm, lv]
        valid = valid and t >= 1
        kind, res = outcome(lambda: ops.adam_step(w, gr, m, v, t, lr=lr, beta1=mom, weight_decay=wd, device="cpu"))
    else:
        lays = [lw, lg] + ([lm] if with_vel else [])
        kind, res = outcome(lambda: ops.sgd_step(w, gr, m if with_vel else None, lr=lr, momentum=mom,
                                                 weight_decay=wd, nesterov=nesterov, device="cpu"))
    if bad_dtype(*lays):
        assert kind == "err"
        return
    if not valid:
        assert kind == "err", "invalid optimizer step accepted"
        return
    if kind == "err":
        assert 0 in shape or bigendian(*lays), f"valid optimizer step refused: {res!r}"
        return
    W, G, M = host(w), host(gr), host(m)
    if adam:
        V = host(v)
        refs = R.adam_step(W, G, M, V, t, lr=lr, beta1=mom, weight_decay=wd)
        names = ["w", "m", "v"]
    else:
        refs = R.sgd_step(W, G, M if with_vel else None, lr=lr, momentum=mom, weight_decay=wd, nesterov=nesterov)
        names = ["w", "vel"]
    taint = (~np.isfinite(W)) | (~np.isfinite(G)) | (~np.isfinite(M))
    if adam:
        taint = taint | ~np.isfinite(V)
    scale = np.abs(np.nan_to_num(W)) + np.abs(np.nan_to_num(G)) * (lr + 1) + np.abs(np.nan_to_num(M)) + 1e-30
    for out, ref, name in zip(res, refs, names):
        if name == "vel" and (mom == 0.0 or out is None):
            continue  # no velocity is kept without momentum (as in PyTorch)
        if adam and name == "w":
            absref = np.abs(np.nan_to_num(W)) + lr * np.abs(ref - W) / max(lr, 1e-30) + 1e-6
            check(out, ref, absref, taint, 1e-3, 1e-6 * lr, f"adam {name}")
        else:
            check(out, ref, scale * (1 + np.abs(np.nan_to_num(ref))), taint, 1e-5, 1e-30, f"{'adam' if adam else 'sgd'} {name}")


# ----------------------------------------------------------------------------
# hyper-parameters at and past the C limits; astronomically large arrays
# ----------------------------------------------------------------------------

BIG_INTS = [2**20, 2**30, 2**31 - 1, 2**31, 2**32 + 1, 2**62, 2**63 - 1, 2**63, 2**64, -2**31, -2**63, -1, 0]


@fuzz("extreme_ints", 800)
@given(op=st.sampled_from(["conv_stride", "conv_pad", "convb_stride", "convb_pad", "pool_size", "pool_stride",
                           "poolb_size", "adam_t", "dropout_seed"]), value=st.sampled_from(BIG_INTS),
       n=st.integers(1, 2), hw=st.integers(1, 6))
def test_fuzz_extreme_ints(op, value, n, hw):
    """Hyper-parameters near the int32/int64 limits: a clear error or a correct small result
    (nothing that would need more than a few MB is ever valid here)."""
    count("extreme_ints")
    x = np.ones((n, 1, hw, hw), np.float32)
    w = np.ones((1, 1, 1, 1), np.float32)
    small_pad = op in ("conv_pad", "convb_pad") and 0 <= value <= 64
    calls = {
        "conv_stride": lambda: ops.conv2d(x, w, stride=value),
        "conv_pad": lambda: ops.conv2d(x, w, padding=value),
        "convb_stride": lambda: ops.conv2d_backward(x, w, np.ones((n, 1, 1, 1), np.float32), stride=value),
        "convb_pad": lambda: ops.conv2d_backward(x, w, np.ones((n, 1, hw, hw), np.float32), padding=value),
        "pool_size": lambda: ops.max_pool2d(x, value),
        "pool_stride": lambda: ops.max_pool2d(x, 1, value),
        "poolb_size": lambda: ops.max_pool2d_backward(x, np.ones((n, 1, 1, 1), np.float32), value),
        "adam_t": lambda: ops.adam_step(x, x, x, x, value),
        "dropout_seed": lambda: ops.dropout(x, 0.5, seed=value),
    }
    kind, res = outcome(calls[op])
    if small_pad:
        assert kind == "ok", f"{op}={value} refused: {res!r}"
        return
    if kind == "err":
        return
    # accepted: then the result must be right
    if op == "conv_stride":
        assert value >= 1
        p = (hw - 1) // value + 1
        check(res, np.ones((n, 1, p, p)), 1.0, what="conv stride")
    elif op == "convb_stride":
        assert value >= hw  # dy (n,1,1,1) only fits a stride past the input
        dx, dw, db = res
        ref = np.zeros((n, 1, hw, hw))
        ref[:, :, 0, 0] = 1
        check(dx, ref, 1.0, what="conv backward dx")
        check(dw, np.full((1, 1, 1, 1), float(n)), float(n), what="conv backward dw")
    elif op == "pool_stride":
        assert value >= 1
        p = (hw - 1) // value + 1
        check(res, np.ones((n, 1, p, p)), 1.0, what="pool stride")
    elif op == "adam_t":
        assert value >= 1
        check(res[0], R.adam_step(x, x, x, x, value)[0], 1.0, rtol=1e-3, what="adam t")
    elif op == "dropout_seed":
        mask, _ = R.dropout_mask(x.shape, 0.5, value & (2**64 - 1))
        check(res[1], mask, mask, rtol=1e-6, what="dropout mask")
    elif op in ("conv_pad", "convb_pad", "pool_size", "poolb_size"):
        raise AssertionError(f"{op}={value} accepted on a {hw}x{hw} input: {type(res).__name__}")


# Every input copy of these is itself far past memory (>= 32 TiB), so no case can
# half-succeed and swap the machine to death; sizes that overflow int32 / int64 inside
# C from small inputs are in test_fuzz_extreme_ints.
HUGE = [2**42, 2**50, 2**61, 2**62]


@fuzz("huge_arrays", 300)
@given(op=st.sampled_from(["relu", "matmul_m", "matmul_k", "conv_n", "conv_hw", "pool", "softmax", "dense",
                           "adam", "dropout"]), big=st.sampled_from(HUGE))
def test_fuzz_astronomical_sizes(op, big):
    """Logical sizes far past memory (zero-stride broadcasts of one float): MemoryError or
    ValueError, never a crash or an integer overflow that makes a small buffer look big."""
    count("huge_arrays")
    one = np.ones(1, np.float32)

    def bc(*shape):
        return np.broadcast_to(one.reshape((1,) * len(shape)), shape)

    calls = {
        "relu": lambda: ops.relu(bc(big, big)),
        "matmul_m": lambda: ops.matmul(bc(big, 2), bc(2, big)),
        "matmul_k": lambda: ops.matmul(bc(2, big), bc(big, 2)),
        "conv_n": lambda: ops.conv2d(bc(big, 1, 3, 3), np.ones((1, 1, 3, 3), np.float32)),
        "conv_hw": lambda: ops.conv2d(bc(1, 1, big, big), np.ones((1, 1, 1, 1), np.float32)),
        "pool": lambda: ops.max_pool2d(bc(2, big, 2, 2), 2),
        "softmax": lambda: ops.softmax_cross_entropy(bc(2, big), np.zeros(2, np.int64)),
        "dense": lambda: ops.dense(bc(2, big), bc(3, big)),
        "adam": lambda: ops.adam_step(bc(big), bc(big), bc(big), bc(big), 1),
        "dropout": lambda: ops.dropout(bc(big, 4), 0.5),
    }
    kind, res = outcome(calls[op])
    assert kind == "err", f"{op} with a dimension of {big} returned {type(res).__name__}"


# ----------------------------------------------------------------------------
# layers, models and fit
# ----------------------------------------------------------------------------

L = ga.layers


@st.composite
def model_case(draw):
    c = draw(st.integers(1, 3))
    h = draw(st.integers(1, 12))
    w = draw(st.one_of(st.just(h), st.integers(1, 12)))
    specs = []
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["conv", "conv", "pool", "relu", "dropout", "flatten", "dense"]))
        if kind == "conv":
            specs.append(("conv", draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 2)),
                          draw(st.sampled_from(["valid", "same", 0, 1, 2])), draw(st.sampled_from([None, "relu"])),
                          draw(st.booleans())))
        elif kind == "pool":
            specs.append(("pool", draw(st.integers(1, 3)), draw(st.one_of(st.none(), st.integers(1, 3)))))
        elif kind == "dense":
            specs.append(("dense", draw(st.integers(1, 6)), draw(st.sampled_from([None, "relu"])), draw(st.booleans())))
        elif kind == "dropout":
            specs.append(("dropout", draw(st.sampled_from([0.0, 0.2, 0.5]))))
        else:
            specs.append((kind,))
    specs.append(("dense", draw(st.integers(1, 5)), None, True))
    return (c, h, w), specs


def build_layers(specs):
    out = []
    for s in specs:
        if s[0] == "conv":
            out.append(L.Conv2D(s[1], s[2], strides=s[3], padding=s[4], activation=s[5], use_bias=s[6]))
        elif s[0] == "pool":
            out.append(L.MaxPool2D(s[1], s[2]))
        elif s[0] == "dense":
            out.append(L.Dense(s[1], activation=s[2], use_bias=s[3]))
        elif s[0] == "dropout":
            out.append(L.Dropout(s[1]))
        elif s[0] == "relu":
            out.append(L.ReLU())
        else:
            out.append(L.Flatten())
    return out


def forward_ref(specs, weights, x):
    """float64 forward (inference) of the layer list; None where a layer cannot apply."""
    y = np.asarray(x, np.float64)
    wi = 0
    for s in specs:
        if s[0] == "conv":
            W = weights[wi]
            wi += 1
            b = None
            if s[6]:
                b = weights[wi]
                wi += 1
            pad = 0 if s[4] == "valid" else (s[2] - 1) // 2 if s[4] == "same" else s[4]
            y = R.conv2d(y, W, b, s[3], pad, s[5] == "relu")
        elif s[0] == "pool":
            y = R.max_pool2d(y, s[1], s[2])
        elif s[0] == "dense":
            W = weights[wi]
            wi += 1
            b = None
            if s[3]:
                b = weights[wi]
                wi += 1
            y = R.dense(y.reshape(y.shape[0], -1), W, b, s[2] == "relu")[:, :, None, None]
        elif s[0] == "relu":
            y = R.relu(y)
        elif s[0] == "flatten":
            y = y.reshape(y.shape[0], -1, 1, 1)
    return y.reshape(y.shape[0], -1)


def geometry_ok(shape, specs):
    c, h, w = shape
    for s in specs:
        if s[0] == "conv":
            k, stride, padding = s[2], s[3], s[4]
            if padding == "same" and (stride != 1 or k % 2 == 0):
                return False
            pad = 0 if padding == "valid" else (k - 1) // 2 if padding == "same" else padding
            if h + 2 * pad < k or w + 2 * pad < k:
                return False
            c, h, w = s[1], (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
        elif s[0] == "pool":
            st_ = s[1] if s[2] is None else s[2]
            if h < s[1] or w < s[1]:
                return False
            h, w = (h - s[1]) // st_ + 1, (w - s[1]) // st_ + 1
        elif s[0] in ("dense", "flatten"):
            c, h, w = (s[1] if s[0] == "dense" else c * h * w), 1, 1
    return True


@fuzz("models", 250)
@given(case=model_case(), n=st.integers(1, 6), batch=st.integers(1, 4), vx=values(),
       opt=st.sampled_from(["adam", "sgd"]), seed=st.integers(0, 2**31))
def test_fuzz_models_build_predict_fit(case, n, batch, vx, opt, seed):
    count("models")
    shape, specs = case
    try:
        layers = build_layers(specs)
    except (ValueError, TypeError):
        return
    model = ga.Sequential(layers, input_shape=shape, seed=seed)
    kind, res = outcome(lambda: model.compile(optimizer=opt, loss="sparse_categorical_crossentropy"))
    ok = geometry_ok(shape, specs)
    if not ok:
        assert kind == "err", f"impossible model built: {shape} {specs}"
        return
    assert kind == "ok", f"valid model refused: {shape} {specs}: {res!r}"
    x = fill((n,) + shape, vx)
    x_finite = np.isfinite(x).all()
    kind, logits = outcome(lambda: model.predict(x))
    assert kind == "ok", f"predict failed: {logits!r}"
    ref = forward_ref(specs, model.get_weights(), x)
    absref = np.abs(ref) + 1e-3 * (np.abs(ref).max() if ref.size and np.isfinite(ref).all() else 1.0)
    if x_finite and np.abs(ref).max() < 1e30:
        check(logits, ref, absref, None, 1e-3, 1e-6 * max(1.0, float(np.abs(ref).max())), "predict")
    classes = ref.shape[1]
    y = np.random.default_rng(seed).integers(0, classes, n)
    try:
        kind, res = outcome(lambda: model.fit(x, y, epochs=1, batch_size=batch, verbose=0))
    except FloatingPointError as e:
        # huge inputs may overflow the loss: fit stops and names the step
        assert vx[1] >= 1e3 and "step" in str(e), f"loss not finite on ordinary data: {e}"
        return
    if not x_finite:
        assert kind == "err" and "NaN or Inf" in str(res)
        return
    if kind == "err":
        raise AssertionError(f"fit failed: {res!r}")
    for wgt in model.get_weights():
        assert np.isfinite(wgt).all() or vx[1] >= 1e15


@fuzz("fit_args", 250)
@given(epochs=st.sampled_from([0, 1, -1, 2.5, None, True]), batch=st.sampled_from([1, 3, 0, -2, 2**40, 1.5, None]),
       ydt=st.sampled_from([np.int64, np.uint8, np.float32, np.int8]), yshift=st.sampled_from([0, 0, 0, 1, -1, 100]),
       n=st.integers(0, 5), xrank=st.sampled_from([3, 4, 4, 2, 5]), xdt=st.sampled_from([np.float32, np.float64,
       np.uint8, np.complex64, object]))
def test_fuzz_fit_arguments(epochs, batch, ydt, yshift, n, xrank, xdt):
    count("fit_args")
    model = FIT_MODEL
    shape = {3: (n, 6, 6), 4: (n, 1, 6, 6), 2: (n, 36), 5: (n, 1, 1, 6, 6)}[xrank]
    x = np.random.default_rng(n).random(shape)
    try:
        x = x.astype(xdt)
    except TypeError:
        return
    y = (np.arange(n) % 3 + yshift).astype(np.int64)
    if np.issubdtype(ydt, np.unsignedinteger) and (y < 0).any():
        return
    y = y.astype(ydt)
    kind, res = outcome(lambda: model.fit(x, y, epochs=epochs, batch_size=batch, verbose=0))
    valid = (isinstance(epochs, int) and not isinstance(epochs, bool) and epochs >= 0 and isinstance(batch, int)
             and batch > 0 and np.issubdtype(ydt, np.integer) and yshift in (0, 1) and n > 0 and xrank in (3, 4)
             and xdt in (np.float32, np.float64, np.uint8))
    if valid:
        assert kind == "ok", f"valid fit refused: {res!r}"
    elif kind == "ok":
        # bool epochs are ints in Python; everything else invalid must be refused
        assert isinstance(epochs, bool), f"invalid fit accepted: {epochs, batch, ydt, yshift, n, xrank, xdt}"
    assert all(np.isfinite(w).all() for w in model.get_weights())


FIT_MODEL = ga.Sequential([L.Conv2D(2, 3, activation="relu"), L.MaxPool2D(2), L.Dense(5)], input_shape=(1, 6, 6),
                          seed=0).compile(optimizer="sgd")


# ----------------------------------------------------------------------------
# file parsers: IDX and model files, truncated and mutated
# ----------------------------------------------------------------------------

IDX_CODES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def idx_bytes(arr, code):
    head = bytes([0, 0, code, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return head + np.ascontiguousarray(arr.astype(IDX_CODES[code])).tobytes()


@st.composite
def mutation(draw, size):
    kind = draw(st.sampled_from(["none", "truncate", "flip", "set", "insert", "delete", "append", "header"]))
    pos = draw(st.integers(0, max(size - 1, 0)))
    return kind, pos, draw(st.integers(0, 255)), draw(st.integers(1, 16))


def mutate(data, mut):
    kind, pos, byte, k = mut
    b = bytearray(data)
    if kind == "truncate":
        return bytes(b[:pos])
    if kind == "flip" and b:
        b[pos % len(b)] ^= 1 << (byte % 8)
    elif kind == "set" and b:
        for i in range(k):
            b[(pos + i) % len(b)] = byte
    elif kind == "insert":
        b[pos:pos] = bytes([byte]) * k
    elif kind == "delete":
        del b[pos:pos + k]
    elif kind == "append":
        b += bytes([byte]) * k
    elif kind == "header" and len(b) >= 8:
        b[4:8] = struct.pack(">I", [0, 1, 2**31, 2**32 - 1, 0x7FFFFFFF, 60000][byte % 6])
    return bytes(b)


@fuzz("idx", 1000)
@given(shape=st.lists(st.integers(0, 5), min_size=1, max_size=4).map(tuple), code=st.sampled_from(list(IDX_CODES)),
       gz=st.booleans(), data=st.data(), magic=st.booleans())
def test_fuzz_load_idx(tmp_path_factory, shape, code, gz, data, magic):
    count("idx")
    arr = (np.arange(int(np.prod(shape))) % 100).reshape(shape)
    raw = idx_bytes(arr, code)
    blob = gzip.compress(raw, mtime=0) if gz else raw
    mut = data.draw(mutation(len(blob)))
    blob2 = mutate(blob, mut)
    path = os.path.join(str(tmp_path_factory.getbasetemp()), f"fuzz-{os.getpid()}.idx")
    with open(path, "wb") as f:
        f.write(blob2)
    expect_magic = (code << 8) | len(shape)
    try:
        out = ga.datasets.load_idx(path, magic=expect_magic if magic else None)
    except ValueError as e:
        assert path in str(e), f"message does not name the file: {e}"
        assert blob2 != blob, f"valid IDX file refused: {e}"
        return
    # accepted: must be exactly what the header and the bytes say
    payload = gzip.decompress(blob2) if blob2[:2] == b"\x1f\x8b" else blob2
    ndim = payload[3]
    dims = struct.unpack(f">{ndim}I", payload[4:4 + 4 * ndim])
    dt = np.dtype(IDX_CODES[payload[2]])
    assert out.shape == dims and out.dtype == dt.newbyteorder("=")
    assert np.array_equal(out.reshape(-1), np.frombuffer(payload, dt, offset=4 + 4 * ndim).reshape(-1),
                          equal_nan=dt.kind == "f")
    if blob2 == blob:
        assert np.array_equal(out, arr.astype(dt))


_MODEL_BLOB = {}


def model_blob(tmp_path_factory):
    if "blob" not in _MODEL_BLOB:
        m = ga.Sequential([L.Conv2D(2, 3, padding="same", activation="relu"), L.MaxPool2D(2), L.Flatten(),
                           L.Dense(3)], input_shape=(1, 4, 4), seed=1).compile(optimizer="adam")
        path = os.path.join(str(tmp_path_factory.getbasetemp()), "fuzz-model-src.npz")
        m.save(path)
        with open(path, "rb") as f:
            _MODEL_BLOB["blob"] = f.read()
        _MODEL_BLOB["weights"] = m.get_weights()
    return _MODEL_BLOB["blob"], _MODEL_BLOB["weights"]


@fuzz("model_file", 500)
@given(data=st.data(), target=st.sampled_from(["bytes", "bytes", "config", "member"]))
def test_fuzz_model_loader(tmp_path_factory, data, target):
    """Truncated / mutated model files: ValueError (or a model whose weights are exactly the saved ones)."""
    count("model_file")
    blob, weights = model_blob(tmp_path_factory)
    if target == "bytes":
        blob2 = mutate(blob, data.draw(mutation(len(blob))))
    else:
        # rewrite one member of the archive (valid zip CRCs): the checksum / config checks must catch it
        zin = zipfile.ZipFile(io.BytesIO(blob))
        names = zin.namelist()
        name = data.draw(st.sampled_from(names)) if target == "member" else "config.npy"
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as zout:
            for nm in names:
                content = zin.read(nm)
                if nm == name:
                    content = mutate(content, data.draw(mutation(len(content))))
                zout.writestr(nm, content)
        blob2 = out.getvalue()
    path = os.path.join(str(tmp_path_factory.getbasetemp()), f"fuzz-model-{os.getpid()}.npz")
    with open(path, "wb") as f:
        f.write(blob2)
    try:
        model = ga.models.load(path)
    except (ValueError, MemoryError) as e:
        assert str(e).strip()
        assert blob2 != blob or target != "bytes", f"intact model file refused: {e}"
        return
    got = model.get_weights()
    assert len(got) == len(weights) and all(np.array_equal(a, b) for a, b in zip(got, weights)), \
        "a damaged file loaded with different weights"


# ----------------------------------------------------------------------------
# the total
# ----------------------------------------------------------------------------


def test_zz_fuzz_case_count(capsys):
    """Runs last in this file: prints the number of generated cases; at full scale (CI)
    the total must reach 10,000."""
    total = sum(COUNTS.values())
    with capsys.disabled():
        print(f"\n[fuzz] {total} generated cases: " + ", ".join(f"{k}={v}" for k, v in sorted(COUNTS.items())))
    if set(COUNTS) != set(BUDGET):
        pytest.skip("not every fuzz test ran (selection): no total to check")
    if SCALE >= 1:
        assert total >= 10_000, f"only {total} fuzz cases ran"
