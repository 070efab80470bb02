"""GEMM: every CPU micro-kernel this machine can run (avx512, avx2, generic) and the
reference loops, against a float64 NumPy product.

Shapes are picked to hit the driver's awkward paths: sizes below, at and just past the
micro-tile (MR x NR = 8x32, 6x16, 4x8), k past the KC block (256-384), m past the MC
block (~336), n past the NC block (4096), single rows and columns, all four transposes,
alpha/beta, k = 0, and the CNN's own GEMM shapes. Tolerance: rtol_for(k) (1e-4 growing
with sqrt(k)) against |a| @ |b|, so cancellation cannot make a test flaky.

The second half runs on every device and kernel variant ('auto', 'ref', 'cublas'): the
alpha == 0 / k == 0 scaling path, the shape sweep, each tile configuration of the CUDA
kernel (128x128, 64x64, split-K, chosen from the device's SM count) and misaligned operands.
"""
import numpy as np
import pytest

import gpuaccel as ga
from gpuaccel import _C, ops

from conftest import assert_close, assert_matches_cpu, f32, rtol_for, run_on, to_numpy

ISAS = ["avx512", "avx2", "generic"]

# (m, n, k)
SHAPES = [
    (1, 1, 1),
    (1, 1, 7),
    (2, 3, 4),
    (7, 13, 5),
    (8, 32, 16),      # exactly one AVX-512 tile
    (9, 33, 17),      # one past it in every direction
    (6, 16, 300),     # one AVX2 tile, k past KC
    (17, 31, 257),
    (64, 64, 64),
    (100, 1, 50),     # column vector out
    (1, 100, 50),     # row vector out
    (129, 127, 385),  # nothing a multiple of anything, k spans two KC blocks
    (400, 40, 20),    # m past MC
    (5, 4200, 3),     # n past NC
]

# The CNN's GEMMs at batch 128 (m, n, k, trans_a, trans_b).
CNN_SHAPES = [
    (32, 100352, 9, False, False),    # conv1 forward
    (64, 25088, 288, False, False),   # conv2 forward
    (64, 288, 25088, False, True),    # conv2 dW
    (288, 25088, 64, True, False),    # conv2 d(col)
    (128, 128, 3136, False, True),    # dense1 forward
    (128, 3136, 128, False, False),   # dense1 dx
    (128, 3136, 128, True, False),    # dense1 dW
]

TRANS = [(False, False), (True, False), (False, True), (True, True)]


@pytest.fixture(params=ISAS)
def isa(request):
    """Force one micro-kernel for the test; skip where this CPU cannot run it."""
    before = _C.gemm_isa()
    try:
        _C.set_gemm_isa(request.param)
    except ValueError as e:
        pytest.skip(f"GEMM ISA {request.param!r} unavailable here: {e}")
    assert _C.gemm_isa() == request.param
    yield request.param
    _C.set_gemm_isa(before)


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    """The driver splits work differently with one thread and with several."""
    before = ga.get_num_threads()
    ga.set_num_threads(request.param)
    yield request.param
    ga.set_num_threads(before)


def operands(rng, m, n, k, ta, tb):
    a = f32(rng.standard_normal((k, m) if ta else (m, k)))
    b = f32(rng.standard_normal((n, k) if tb else (k, n)))
    return a, b


def reference(a, b, ta, tb, alpha=1.0, beta=0.0, c=None):
    """float64 product and the magnitude its rounding error scales with."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    op_a, op_b = (a64.T if ta else a64), (b64.T if tb else b64)
    ref = alpha * (op_a @ op_b)
    absref = abs(alpha) * (np.abs(op_a) @ np.abs(op_b))
    if c is not None and beta != 0.0:
        ref = ref + beta * c.astype(np.float64)
        absref = absref + abs(beta) * np.abs(c.astype(np.float64))
    return ref, absref


@pytest.mark.parametrize("ta,tb", TRANS, ids=["nn", "tn", "nt", "tt"])
@pytest.mark.parametrize("m,n,k", SHAPES, ids=[f"{m}x{n}x{k}" for m, n, k in SHAPES])
def test_gemm_shapes(isa, rng, m, n, k, ta, tb):
    a, b = operands(rng, m, n, k, ta, tb)
    out = ops.matmul(a, b, trans_a=ta, trans_b=tb, device="cpu")
    ref, absref = reference(a, b, ta, tb)
    assert_close(out, ref, absref, rtol_for(k), what=f"gemm[{isa}] {m}x{n}x{k} ta={ta} tb={tb}")


@pytest.mark.parametrize("m,n,k", [(7, 13, 5), (33, 70, 300), (129, 127, 385)])
def test_gemm_threads(isa, threads, rng, m, n, k):
    for ta, tb in TRANS:
        a, b = operands(rng, m, n, k, ta, tb)
        ref, absref = reference(a, b, ta, tb)
        assert_close(ops.matmul(a, b, trans_a=ta, trans_b=tb), ref, absref, rtol_for(k),
                     what=f"gemm[{isa}, {threads} threads] ta={ta} tb={tb}")


@pytest.mark.parametrize("alpha,beta", [(1.0, 1.0), (0.5, -2.0), (-1.5, 0.25), (2.0, 0.0), (0.0, 3.0)])
@pytest.mark.parametrize("m,n,k", [(9, 33, 17), (70, 45, 300)])
def test_gemm_alpha_beta(isa, rng, m, n, k, alpha, beta):
    for ta, tb in TRANS:
        a, b = operands(rng, m, n, k, ta, tb)
        c = f32(rng.standard_normal((m, n)))
        out = ops.matmul(a, b, trans_a=ta, trans_b=tb, alpha=alpha, beta=beta, c=c)
        ref, absref = reference(a, b, ta, tb, alpha, beta, c)
        assert_close(out, ref, absref, rtol_for(k), atol=1e-30,
                     what=f"gemm[{isa}] alpha={alpha} beta={beta} ta={ta} tb={tb}")


def test_gemm_beta_zero_drops_nan(isa, rng):
    """beta == 0 overwrites c: NaN or Inf already there must not leak into the result."""
    a, b = operands(rng, 19, 37, 11, False, False)
    c = np.full((19, 37), np.nan, np.float32)
    c[::2] = np.inf
    out = ops.matmul(a, b, beta=0.0, c=c)
    ref, absref = reference(a, b, False, False)
    assert_close(out, ref, absref, rtol_for(11), what=f"gemm[{isa}] beta=0 over NaN")


def test_gemm_k_zero(isa):
    """k == 0: the product is empty, so c = beta * c (zeros when no c)."""
    a = np.zeros((4, 0), np.float32)
    b = np.zeros((0, 6), np.float32)
    np.testing.assert_array_equal(ops.matmul(a, b), np.zeros((4, 6), np.float32))
    c = np.arange(24, dtype=np.float32).reshape(4, 6)
    np.testing.assert_array_equal(ops.matmul(a, b, beta=0.5, c=c), 0.5 * c)


def test_gemm_empty_output(isa):
    assert ops.matmul(np.zeros((0, 5), np.float32), np.zeros((5, 3), np.float32)).shape == (0, 3)
    assert ops.matmul(np.zeros((4, 5), np.float32), np.zeros((5, 0), np.float32)).shape == (4, 0)


def test_gemm_strided_views(isa, rng):
    """Views into wider arrays (row stride > width) give the same product."""
    big_a = f32(rng.standard_normal((50, 80)))
    big_b = f32(rng.standard_normal((60, 90)))
    a, b = big_a[3:40, 5:58], big_b[1:54, 7:71]  # (37, 53) @ (53, 64)
    ref, absref = reference(np.ascontiguousarray(a), np.ascontiguousarray(b), False, False)
    assert_close(ops.matmul(a, b), ref, absref, rtol_for(53), what=f"gemm[{isa}] strided views")


@pytest.mark.parametrize("m,n,k,ta,tb", CNN_SHAPES, ids=[f"{s[0]}x{s[1]}x{s[2]}{'T' if s[3] else 'N'}{'T' if s[4] else 'N'}"
                                                           for s in CNN_SHAPES])
def test_gemm_cnn_shapes(isa, rng, m, n, k, ta, tb):
    if isa == "generic" and m * n * k > 50_000_000:
        pytest.skip("portable kernel: the big CNN shapes are covered by the SIMD kernels")
    a, b = operands(rng, m, n, k, ta, tb)
    ref, absref = reference(a, b, ta, tb)
    assert_close(ops.matmul(a, b, trans_a=ta, trans_b=tb), ref, absref, rtol_for(k),
                 what=f"gemm[{isa}] CNN {m}x{n}x{k}")


@pytest.mark.parametrize("ta,tb", TRANS, ids=["nn", "tn", "nt", "tt"])
def test_gemm_ref_kernel(rng, ta, tb):
    """The reference loops are the yardstick for the fast path; check them too."""
    for m, n, k in [(1, 1, 1), (9, 33, 17), (70, 45, 300)]:
        a, b = operands(rng, m, n, k, ta, tb)
        c = f32(rng.standard_normal((m, n)))
        ref, absref = reference(a, b, ta, tb, 0.5, -1.0, c)
        out = ops.matmul(a, b, trans_a=ta, trans_b=tb, alpha=0.5, beta=-1.0, c=c, kernel="ref")
        assert_close(out, ref, absref, rtol_for(k), what=f"gemm ref {m}x{n}x{k}")


def test_gemm_fast_matches_ref(isa, rng):
    a, b = operands(rng, 77, 91, 333, False, True)
    fast = ops.matmul(a, b, trans_b=True)
    slow = ops.matmul(a, b, trans_b=True, kernel="ref")
    _, absref = reference(a, b, False, True)
    assert_close(fast, slow.astype(np.float64), absref, rtol_for(333), what=f"gemm[{isa}] fast vs ref")


def test_gemm_isa_names():
    assert _C.gemm_isa() in ISAS
    before = _C.gemm_isa()
    try:
        with pytest.raises(ValueError):
            _C.set_gemm_isa("sse9")
        assert _C.gemm_isa() == before  # a failed switch changes nothing
        _C.set_gemm_isa("generic")      # always built, runs anywhere
        assert _C.gemm_isa() == "generic"
        _C.set_gemm_isa("auto")
        assert _C.gemm_isa() in ISAS
    finally:
        _C.set_gemm_isa(before)


@pytest.mark.parametrize("m,n,k,ta,tb", [(9, 33, 17, False, False), (129, 127, 385, True, False),
                                         (64, 288, 2000, False, True), (70, 45, 300, True, True)])
def test_gemm_devices_agree(device, rng, m, n, k, ta, tb):
    """Same shapes on every device: GPU results match the CPU to about 1e-4."""
    a, b = operands(rng, m, n, k, ta, tb)
    out, cpu = run_on(device, ops.matmul, a, b, trans_a=ta, trans_b=tb)
    ref, absref = reference(a, b, ta, tb)
    assert_close(out, ref, absref, rtol_for(k), what=f"gemm on {device}")
    if cpu is not None:
        assert_matches_cpu(out, cpu, absref, what=f"gemm on {device}")


# ============================================================================
# Every device and every kernel variant. The tests above force the CPU's micro-kernels;
# those below run once per device ('cpu', 'cuda') and kernel ('auto', 'ref', 'cublas'),
# so on a GPU (or the CUDA emulator) they reach the tiled kernels, the split-K reduction,
# the reference kernel, cuBLAS and the scaling kernel. The CPU refuses kernel='cublas'.
# ============================================================================

KERNEL_VARIANTS = ["auto", "ref", "cublas"]


@pytest.fixture(params=KERNEL_VARIANTS)
def kernel(request, device):
    """The kernel variant; skips, with the library's reason, where the device refuses it."""
    try:
        ops.matmul(np.ones((1, 1), np.float32), np.ones((1, 1), np.float32), device=device, kernel=request.param)
    except ValueError as e:
        pytest.skip(f"kernel={request.param!r} refused on {device}: {e}")
    return request.param


# --- alpha == 0 or k == 0: c = beta * c, a and b not read ---------------------------------
#
# The library's semantics (core/backend.h: c = alpha op(a) op(b) + beta c; "beta == 0
# overwrites c (NaNs in c are not kept)"), with BLAS's rule for the degenerate product, as
# both backends implement it (gemm_cpu.c scale_c, gemm_cuda.cu scale_matrix): when k == 0
# or alpha == 0 the product term is absent, not 0 * op(a) op(b), so NaN or Inf in a or b
# does not reach c; c becomes beta * c, exactly, and zeros when beta == 0 (whatever c held).


def _scaled(c, beta, m, n):
    if c is None or beta == 0.0:
        return np.zeros((m, n), np.float32)
    return (np.float32(beta) * c).astype(np.float32)


@pytest.mark.parametrize("beta", [0.0, 1.0, 0.5])
@pytest.mark.parametrize("m,n", [(1, 1), (7, 13), (64, 64), (129, 70)])
def test_gemm_alpha_zero_scales_c(device, kernel, rng, m, n, beta):
    k = 11
    for ta, tb in TRANS:
        a, b = operands(rng, m, n, k, ta, tb)
        a.flat[::3] = np.nan  # not read when alpha == 0
        b.flat[::2] = np.inf
        c = f32(rng.standard_normal((m, n)))
        c[0, 0] = np.nan  # kept unless beta == 0
        c[-1, -1] = -np.inf
        for alpha in (0.0, -0.0):
            out = ops.matmul(a, b, trans_a=ta, trans_b=tb, alpha=alpha, beta=beta, c=c, device=device, kernel=kernel)
            np.testing.assert_array_equal(to_numpy(out), _scaled(c, beta, m, n),
                                          err_msg=f"alpha={alpha} beta={beta} ta={ta} tb={tb} kernel={kernel}")
        # no c: beta is 0 and the (uninitialised) output is overwritten with zeros
        out = ops.matmul(a, b, trans_a=ta, trans_b=tb, alpha=0.0, device=device, kernel=kernel)
        np.testing.assert_array_equal(to_numpy(out), np.zeros((m, n), np.float32))


@pytest.mark.parametrize("beta", [0.0, 1.0, 0.5])
@pytest.mark.parametrize("m,n", [(1, 1), (4, 6), (33, 70)])
def test_gemm_k_zero_scales_c(device, kernel, rng, m, n, beta):
    for ta, tb in TRANS:
        a = np.zeros((0, m) if ta else (m, 0), np.float32)
        b = np.zeros((n, 0) if tb else (0, n), np.float32)
        c = f32(rng.standard_normal((m, n)))
        c[0, -1] = np.nan
        for alpha in (1.0, 2.5):
            out = ops.matmul(a, b, trans_a=ta, trans_b=tb, alpha=alpha, beta=beta, c=c, device=device, kernel=kernel)
            np.testing.assert_array_equal(to_numpy(out), _scaled(c, beta, m, n),
                                          err_msg=f"k=0 alpha={alpha} beta={beta} ta={ta} tb={tb} kernel={kernel}")
        out = ops.matmul(a, b, trans_a=ta, trans_b=tb, device=device, kernel=kernel)
        np.testing.assert_array_equal(to_numpy(out), np.zeros((m, n), np.float32))


def test_gemm_beta_zero_overwrites_nan_every_kernel(device, kernel, rng):
    """beta == 0 with alpha != 0: c is written, never read (NaN and Inf in c do not leak)."""
    for m, n, k in [(19, 37, 11), (70, 45, 1100)]:
        a, b = operands(rng, m, n, k, False, True)
        c = np.full((m, n), np.nan, np.float32)
        c[::2] = np.inf
        out = ops.matmul(a, b, trans_b=True, beta=0.0, c=c, device=device, kernel=kernel)
        ref, absref = reference(a, b, False, True)
        assert_close(out, ref, absref, rtol_for(k), what=f"gemm {kernel} on {device} beta=0 over NaN")


# --- the shape sweep, for every kernel variant ---------------------------------------------

# (m, n, k): 1x1, odd sizes (leading dimensions not multiples of 4: the scalar loads),
# multiples of 4 (the vector loads), single rows and columns, k past the CPU's KC block,
# and k >= 1024 with few output tiles (split-K on a GPU with more than 4 SMs).
VARIANT_SHAPES = [
    (1, 1, 1),
    (1, 1, 7),
    (2, 3, 4),
    (7, 13, 5),
    (9, 33, 17),
    (17, 31, 257),
    (64, 64, 64),
    (68, 72, 36),
    (100, 1, 50),
    (1, 100, 50),
    (129, 127, 385),
    (65, 66, 1100),
]


@pytest.mark.parametrize("ta,tb", TRANS, ids=["nn", "tn", "nt", "tt"])
@pytest.mark.parametrize("m,n,k", VARIANT_SHAPES, ids=[f"{m}x{n}x{k}" for m, n, k in VARIANT_SHAPES])
def test_gemm_variants_shapes(device, kernel, rng, m, n, k, ta, tb):
    a, b = operands(rng, m, n, k, ta, tb)
    out = ops.matmul(a, b, trans_a=ta, trans_b=tb, device=device, kernel=kernel)
    ref, absref = reference(a, b, ta, tb)
    assert_close(out, ref, absref, rtol_for(k), what=f"gemm {kernel} on {device} {m}x{n}x{k} ta={ta} tb={tb}")
    c = f32(rng.standard_normal((m, n)))
    out = ops.matmul(a, b, trans_a=ta, trans_b=tb, alpha=-0.75, beta=0.5, c=c, device=device, kernel=kernel)
    ref, absref = reference(a, b, ta, tb, -0.75, 0.5, c)
    assert_close(out, ref, absref, rtol_for(k), atol=1e-30,
                 what=f"gemm {kernel} on {device} {m}x{n}x{k} ta={ta} tb={tb} alpha=-0.75 beta=0.5")


# --- the tile configurations of the CUDA 'auto' kernel (gemm_cuda.cu gemm_fast) ----------
#
# 128x128 tiles when ceil(m/128) ceil(n/128) >= the SM count; otherwise 64x64 tiles, with
# split-K when ceil(m/64) ceil(n/64) < SMs and k >= 1024 (splits = min(ceil(2 SMs / tiles),
# k / 256, 64), used when >= 2). The shapes are computed from the device's SM count; the
# CPU runs them for an H200's count (132), which also keeps them honest there.

NOMINAL_SMS = 132


def _sm_count(device):
    if device == "cpu":
        return NOMINAL_SMS
    return int(ga.cuda.get_device_properties(0)["multiprocessors"])


def _cdiv(a, b):
    return -(-a // b)


def _cuda_tiles(m, n, k, sms):
    """gemm_fast's choice, mirrored: '128x128', '64x64' or 'split-k'."""
    if _cdiv(m, 128) * _cdiv(n, 128) >= sms:
        return "128x128"
    tiles = _cdiv(m, 64) * _cdiv(n, 64)
    splits = min(_cdiv(2 * sms, tiles), k // 256, 64) if tiles < sms and k >= 1024 else 1
    return "split-k" if splits >= 2 else "64x64"


ONE_PASS = [(1.0, 0.0)]        # beta == 0: c is written, not read
BETA_PASS = [(0.5, -1.25)]     # beta != 0: c is read in the epilogue (or the split-K reduction)
BOTH = ONE_PASS + BETA_PASS


def _tile_case(name, sms):
    """(m, n, k, ta, tb, expected branch, [(alpha, beta)]) for `name` on a device with `sms` SMs.
    The 128x128 cases are the biggest of the file (about 2e7 to 9e7 multiply-adds on 132 SMs,
    slow on the emulator), so each runs once, with one of the two epilogues."""
    tm = max(1, int(np.ceil(np.sqrt(sms))))
    tn = max(1, _cdiv(sms, tm))
    cases = {
        # just enough 128x128 tiles (partial edge tiles); lda, ldb, ldc multiples of 4: vector loads
        "128-vec-nn": (128 * tm - 4, 128 * tn - 8, 40, False, False, "128x128", ONE_PASS),
        "128-vec-tn": (128 * tm - 4, 128 * tn - 8, 16, True, False, "128x128", BETA_PASS),
        # odd m, n, k (k past one 8-deep slab): scalar loads, scalar c stores
        "128-scalar-tt": (128 * tm - 3, 128 * tn - 1, 13, True, True, "128x128", BETA_PASS),
        "128-scalar-nt": (128 * tm - 3, 128 * tn - 1, 9, False, True, "128x128", ONE_PASS),
        # one 128x128 tile short of the SM count: the 64x64 tiles, a wide grid
        "64-below-128": (128, 128 * (sms - 1), 8, False, False, "64x64", BETA_PASS),
        "64-vec": (124, 120, 300, False, False, "64x64", BOTH),
        "64-scalar": (127, 121, 301, True, False, "64x64", BOTH),
        "64-k1023": (100, 90, 1023, False, True, "64x64", BOTH),  # k one short of split-K
        "splitk-k1024": (64, 64, 1024, False, False, "split-k", BOTH),
        "splitk-scalar": (63, 61, 1100, True, False, "split-k", BOTH),  # m n odd: unaligned slices
        "splitk-tt": (130, 70, 2000, True, True, "split-k", BOTH),      # several tiles
        "splitk-many": (40, 24, 8 * 2048 + 3, False, True, "split-k", BOTH),  # the 64-split cap
    }
    return cases[name]


TILE_CASES = ["128-vec-nn", "128-vec-tn", "128-scalar-tt", "128-scalar-nt", "64-below-128", "64-vec",
              "64-scalar", "64-k1023", "splitk-k1024", "splitk-scalar", "splitk-tt", "splitk-many"]


@pytest.mark.parametrize("case", TILE_CASES)
def test_gemm_tile_branches(device, rng, case):
    sms = _sm_count(device)
    m, n, k, ta, tb, branch, passes = _tile_case(case, sms)
    if m <= 0 or n <= 0:
        pytest.skip(f"with {sms} SM(s) there is no {m}x{n} shape for the {branch} branch")
    if _cuda_tiles(m, n, k, sms) != branch:
        pytest.skip(f"with {sms} SMs, {m}x{n}x{k} takes the {_cuda_tiles(m, n, k, sms)} branch, not {branch}")
    a, b = operands(rng, m, n, k, ta, tb)
    c = f32(rng.standard_normal((m, n)))
    for alpha, beta in passes:
        cc = c if beta != 0.0 else None
        out = ops.matmul(a, b, trans_a=ta, trans_b=tb, alpha=alpha, beta=beta, c=cc, device=device)
        ref, absref = reference(a, b, ta, tb, alpha, beta, cc)
        assert_close(out, ref, absref, rtol_for(k), atol=1e-30,
                     what=f"gemm {case} ({branch}, {sms} SMs) {m}x{n}x{k} ta={ta} tb={tb} beta={beta} on {device}")


def test_gemm_tile_cases_reach_every_branch():
    """The case table reaches each branch for an H200's SM count and for small and odd ones."""
    for sms in (NOMINAL_SMS, 2, 7, 16, 108, 144):
        got = set()
        for name in TILE_CASES:
            m, n, k, _, _, branch, _ = _tile_case(name, sms)
            if m > 0 and n > 0 and _cuda_tiles(m, n, k, sms) == branch:
                got.add(branch)
        assert got == {"128x128", "64x64", "split-k"}, f"{sms} SMs: only {sorted(got)}"
    m, n, k = _tile_case("128-vec-nn", NOMINAL_SMS)[:3]
    assert (m, n, k) == (1532, 1400, 40) and _cdiv(m, 128) * _cdiv(n, 128) == 132


# --- misaligned operands: the non-vector loads ----------------------------------------------


def _offset_view(arr, offset=1):
    """A C-contiguous copy of arr that starts `offset` floats into a 64-byte aligned buffer."""
    buf = np.empty(arr.size + offset + 16, np.float32)
    start = (-buf.ctypes.data % 64) // 4 + offset
    view = buf[start:start + arr.size].reshape(arr.shape)
    view[...] = arr
    assert view.flags.c_contiguous and view.ctypes.data % 16 == 4 * (offset % 4)
    return view


@pytest.mark.parametrize("ta,tb", TRANS, ids=["nn", "tn", "nt", "tt"])
def test_gemm_misaligned_views(device, kernel, rng, ta, tb):
    """a, b and c start one float past a 16-byte boundary. The CPU kernels get these pointers
    as they are; ops.matmul copies a NumPy input to a fresh (aligned) device buffer, so on a
    GPU the misaligned operand is test_gemm_misaligned_weights_in_parameter_block's."""
    for m, n, k in [(68, 72, 36), (9, 33, 17), (65, 66, 1100)]:
        a, b = operands(rng, m, n, k, ta, tb)
        c = f32(rng.standard_normal((m, n)))
        av, bv, cv = _offset_view(a), _offset_view(b), _offset_view(c)
        out = ops.matmul(av, bv, trans_a=ta, trans_b=tb, alpha=1.5, beta=-0.5, c=cv, device=device, kernel=kernel)
        ref, absref = reference(a, b, ta, tb, 1.5, -0.5, c)
        assert_close(out, ref, absref, rtol_for(k), what=f"gemm {kernel} on {device} misaligned {m}x{n}x{k}")
        np.testing.assert_array_equal(cv, c)  # c is an input: not written


def test_gemm_misaligned_weights_in_parameter_block(device, rng):
    """A GEMM operand one float past a 16-byte boundary on the device itself: the flat parameter
    block packs each layer's weights right after the previous layer's, so the third Dense
    layer's W (8, 4) starts at float 49. Its forward GEMM has lda = ldb = 4 and ldc = 8, so
    only the pointer rules out the vector loads."""
    model = ga.models.Sequential([ga.layers.Dense(5), ga.layers.Dense(4), ga.layers.Dense(8)], input_shape=(4, 1, 1))
    model.compile(device=device)
    w_off = model._net.layer_info()[2][1]
    assert w_off % 4 == 1, f"the layout changed (W3 at float {w_off}): pick layer sizes that misalign it again"
    ws = [f32(rng.standard_normal(w.shape)) for w in model.get_weights()]
    model.set_weights(ws)
    x = f32(rng.standard_normal((300, 4)))
    h, habs = x.astype(np.float64), np.abs(x.astype(np.float64))
    for w, bias in zip(ws[::2], ws[1::2]):
        h = h @ w.T.astype(np.float64) + bias
        habs = habs @ np.abs(w.T.astype(np.float64)) + np.abs(bias)
    out = model.predict(x.reshape(300, 4, 1, 1))
    assert_close(out, h, habs, 3 * rtol_for(5), what=f"3 Dense layers on {device}")
