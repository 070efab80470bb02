"""TF32 GEMM: ops.matmul(..., precision='tf32') on CUDA (issue 14, item 4).

TF32 keeps fp32's 8-bit exponent and 10 of its 23 mantissa bits. The three CUDA kernels
round both operands to TF32 the way PTX's cvt.rna.tf32.f32 does (round to nearest, ties
away from zero; the hardware rule, sources in csrc/cuda/emu/mma.h) and sum the products
in fp32: kernel='auto' is the hand-written WMMA tensor-core kernel, 'cublas' is
cublasGemmEx with CUBLAS_COMPUTE_32F_FAST_TF32, 'ref' is one thread per output with the
rounding written out in integer arithmetic (the definition).

What is checked, on the `cuda_device` fixture (a GPU, or the CUDA emulator, whose
nvcuda::wmma rounds as the hardware does):
  - against a float64 product of the operands rounded here in NumPy (`tf32` below):
    the fp32 accumulation tolerance, tight enough that an fp32 kernel fails it;
  - against the plain fp32 product: differs by the TF32 amount (median relative error
    above 2^-11 / (8 sqrt k), maximum below 2^-10 plus accumulation), so the test cannot
    pass with an fp32 kernel, and is unbiased on positive data, so it cannot pass with a
    kernel that skips the conversion (the tensor core then truncates the low bits);
  - all transposes, odd shapes (1x1x1, 17x33x9, 130x70x257, k not a multiple of 8,
    several blocks in m and n, aligned and unaligned leading dimensions), alpha/beta,
    beta = 0 over NaN, cuBLAS against the reference;
  - the rounding itself on crafted values (ties, exact values, just off a tie, overflow
    to infinity, subnormals, Inf, NaN) through every kernel with a 1 x 1 unit factor;
  - the CPU refuses precision='tf32' with a clear ValueError, from Python and from C.
"""
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from gpuaccel import _C, ops

from conftest import assert_close, cuda_emulated, f32, to_numpy

KERNELS = ["auto", "ref", "cublas"]
TRANS = [(False, False), (True, False), (False, True), (True, True)]
# (m, n, k): single element; below one fragment with k not a multiple of 8; two block
# rows with a long odd k; k a multiple of the slab with vector loads (ld % 4 == 0);
# several blocks in both m and n with edge tiles and k below one slab
SHAPES = [(1, 1, 1), (17, 33, 9), (130, 70, 257), (64, 64, 64), (136, 260, 12)]


def tf32(x):
    """cvt.rna.tf32.f32 in NumPy: finite values get 0x1000 added to their bits (half a
    TF32 ulp: ties away from zero, a carry rounds up the exponent), then the low 13 bits
    are cleared; Inf and NaN are only masked."""
    u = np.array(x, np.float32).view(np.uint32)
    finite = (u & np.uint32(0x7F800000)) != np.uint32(0x7F800000)
    u[finite] += np.uint32(0x1000)
    u &= np.uint32(0xFFFFE000)
    return u.view(np.float32)


def acc_rtol(k):
    """fp32 summation of k products against float64: a random walk of k roundings of at
    most 2^-23 (tensor cores may truncate in the accumulation), with a margin of 8."""
    return 8.0 * math.sqrt(max(k, 1)) * 2.0**-23


def operands(rng, m, n, k, ta, tb):
    a = f32(rng.standard_normal((k, m) if ta else (m, k)))
    b = f32(rng.standard_normal((n, k) if tb else (k, n)))
    return a, b, (a.T if ta else a), (b.T if tb else b)


@pytest.fixture(params=KERNELS)
def tf32_kernel(request, cuda_device):
    """A kernel for precision='tf32'; skips, with the library's reason, where the GPU
    refuses it (tensor cores need compute capability 8.0; the reference runs anywhere)."""
    try:
        ops.matmul(np.ones((1, 1), np.float32), np.ones((1, 1), np.float32), device=cuda_device,
                   kernel=request.param, precision="tf32")
    except ValueError as e:
        if "compute capability" in str(e):
            pytest.skip(f"kernel={request.param!r} with tf32 refused here: {e}")
        raise
    return request.param


# --- against the definition: float64 products of TF32-rounded operands ------------------


@pytest.mark.parametrize("ta,tb", TRANS)
@pytest.mark.parametrize("m,n,k", SHAPES)
def test_tf32_matches_rounded_reference(tf32_kernel, rng, m, n, k, ta, tb):
    a, b, opa, opb = operands(rng, m, n, k, ta, tb)
    out = ops.matmul(a, b, trans_a=ta, trans_b=tb, device="cuda", kernel=tf32_kernel, precision="tf32")
    ref = tf32(opa).astype(np.float64) @ tf32(opb).astype(np.float64)
    absref = np.abs(opa).astype(np.float64) @ np.abs(opb).astype(np.float64)
    rtol = acc_rtol(k)
    if tf32_kernel == "cublas" and not cuda_emulated():
        # cuBLAS does not document which conversion its TF32 kernels apply (rounding or
        # truncation): on a GPU it is held to the TF32 bound, on the emulator to the rule
        rtol = 2.0**-10 + acc_rtol(k)
    assert_close(out, ref, absref, rtol, what=f"tf32 {tf32_kernel} {m}x{n}x{k} ta={ta} tb={tb}")


@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (17, 33, 9), (64, 64, 64), (130, 70, 257)])
def test_tf32_differs_from_fp32_by_the_tf32_amount(tf32_kernel, rng, m, n, k):
    """The TF32 signature on random data: a median relative error far above fp32's
    (~1e-8) and a maximum within TF32's bound (each product off by at most 2^-10)."""
    a, b, _, _ = operands(rng, m, n, k, False, False)
    out = to_numpy(ops.matmul(a, b, device="cuda", kernel=tf32_kernel, precision="tf32")).astype(np.float64)
    fp32 = to_numpy(ops.matmul(a, b, device="cuda", kernel=tf32_kernel)).astype(np.float64)
    exact = a.astype(np.float64) @ b.astype(np.float64)
    absref = np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64)
    rel = np.abs(out - exact) / absref
    rel32 = np.abs(fp32 - exact) / absref
    floor = 2.0**-11 / (8.0 * math.sqrt(k))
    assert np.median(rel) > floor, f"{tf32_kernel}: median relative error {np.median(rel):.2e} is not TF32's"
    assert rel.max() <= 2.0**-10 + acc_rtol(k), f"{tf32_kernel}: error {rel.max():.2e} above TF32's bound"
    assert np.median(rel32) < floor / 10, f"{tf32_kernel}: the fp32 run is not fp32 ({np.median(rel32):.2e})"


@pytest.mark.parametrize("k", [64, 257])
def test_tf32_rounds_not_truncates(tf32_kernel, rng, k):
    """Positive operands: rounding to nearest is unbiased, truncation (what a tensor core
    does with an operand that was not converted) is off by about -6.5e-4 on average."""
    a = f32(rng.uniform(0.5, 1.0, (48, k)))
    b = f32(rng.uniform(0.5, 1.0, (k, 40)))
    out = to_numpy(ops.matmul(a, b, device="cuda", kernel=tf32_kernel, precision="tf32")).astype(np.float64)
    exact = a.astype(np.float64) @ b.astype(np.float64)
    bias = float(np.mean((out - exact) / exact))
    if tf32_kernel == "cublas" and not cuda_emulated():
        pytest.skip(f"cuBLAS's TF32 conversion is not documented (measured bias {bias:.2e})")
    assert abs(bias) < 2.0**-13, f"{tf32_kernel}: mean relative error {bias:.2e}: operands truncated?"


# --- alpha, beta, NaN in c, cuBLAS against the reference ---------------------------------


@pytest.mark.parametrize("alpha,beta", [(0.5, -1.5), (2.0, 1.0), (-1.0, 0.25)])
def test_tf32_alpha_beta(tf32_kernel, rng, alpha, beta):
    m, n, k = 70, 150, 33
    a, b, _, _ = operands(rng, m, n, k, False, True)
    c = f32(rng.standard_normal((m, n)))
    out = ops.matmul(a, b, trans_b=True, alpha=alpha, beta=beta, c=c, device="cuda", kernel=tf32_kernel,
                     precision="tf32")
    prod = tf32(a).astype(np.float64) @ tf32(b.T).astype(np.float64)
    ref = alpha * prod + beta * c.astype(np.float64)
    absref = abs(alpha) * (np.abs(a).astype(np.float64) @ np.abs(b.T).astype(np.float64)) + abs(beta) * np.abs(c)
    rtol = acc_rtol(k) if tf32_kernel != "cublas" or cuda_emulated() else 2.0**-10 + acc_rtol(k)
    assert_close(out, ref, absref, rtol, what=f"tf32 {tf32_kernel} alpha={alpha} beta={beta}")


def test_tf32_beta_zero_overwrites_nan(tf32_kernel, rng):
    m, n, k = 33, 140, 20
    a, b, _, _ = operands(rng, m, n, k, True, False)
    c = np.full((m, n), np.nan, np.float32)
    out = to_numpy(ops.matmul(a, b, trans_a=True, beta=0.0, c=c, device="cuda", kernel=tf32_kernel,
                              precision="tf32"))
    assert np.isfinite(out).all(), f"tf32 {tf32_kernel}: beta=0 kept NaNs of c"
    ref = tf32(a.T).astype(np.float64) @ tf32(b).astype(np.float64)
    absref = np.abs(a.T).astype(np.float64) @ np.abs(b).astype(np.float64)
    assert_close(out, ref, absref, 2.0**-10 + acc_rtol(k), what=f"tf32 {tf32_kernel} beta=0 over NaN")


def test_tf32_alpha_zero_scales_c(tf32_kernel, rng):
    """alpha == 0: c = beta c exactly, a and b not read (their NaNs do not reach c)."""
    a = np.full((5, 7), np.nan, np.float32)
    b = np.full((7, 9), np.nan, np.float32)
    c = f32(rng.standard_normal((5, 9)))
    out = to_numpy(ops.matmul(a, b, alpha=0.0, beta=0.5, c=c, device="cuda", kernel=tf32_kernel, precision="tf32"))
    np.testing.assert_array_equal(out, np.float32(0.5) * c)


@pytest.mark.parametrize("ta,tb", TRANS)
def test_tf32_cublas_matches_ref(cuda_device, rng, ta, tb):
    m, n, k = 96, 72, 200
    a, b, opa, opb = operands(rng, m, n, k, ta, tb)
    try:
        blas = ops.matmul(a, b, trans_a=ta, trans_b=tb, device=cuda_device, kernel="cublas", precision="tf32")
    except ValueError as e:
        pytest.skip(f"tf32 on cuBLAS refused here: {e}")
    ref = ops.matmul(a, b, trans_a=ta, trans_b=tb, device=cuda_device, kernel="ref", precision="tf32")
    absref = np.abs(opa).astype(np.float64) @ np.abs(opb).astype(np.float64)
    # the same rounding on the emulator: fp32 accumulation apart; on a GPU, TF32-sized
    rtol = 2 * acc_rtol(k) if cuda_emulated() else 2.0**-10 + 2 * acc_rtol(k)
    assert_close(blas, to_numpy(ref), absref, rtol, what=f"tf32 cublas vs ref ta={ta} tb={tb}")


def test_tf32_wmma_matches_ref_closely(cuda_device, rng):
    """The tensor-core kernel and the reference round alike; only the order of the fp32
    sums may differ."""
    m, n, k = 140, 130, 100
    a, b, opa, opb = operands(rng, m, n, k, False, False)
    try:
        fast = ops.matmul(a, b, device=cuda_device, kernel="auto", precision="tf32")
    except ValueError as e:
        pytest.skip(f"the tf32 tensor-core kernel is refused here: {e}")
    ref = ops.matmul(a, b, device=cuda_device, kernel="ref", precision="tf32")
    absref = np.abs(opa).astype(np.float64) @ np.abs(opb).astype(np.float64)
    assert_close(fast, to_numpy(ref), absref, 2 * acc_rtol(k), what="tf32 wmma vs ref")


# --- the rounding rule, on crafted values ------------------------------------------------

ONE = 1.0
ULP = 2.0**-10  # a TF32 ulp at 1
CRAFTED = np.array(
    [
        1.0,  # exact
        1.0 + ULP,  # exact: 10 mantissa bits
        1.0 + ULP / 2,  # tie between 1 (even) and 1 + ulp: away from zero -> 1 + ulp (RNE would give 1)
        -(1.0 + ULP / 2),  # negative tie: away from zero -> -(1 + ulp)
        1.0 + ULP / 2 - 2.0**-23,  # just below the tie -> 1
        1.0 + ULP / 2 + 2.0**-23,  # just above -> 1 + ulp
        1.0 + 3 * ULP / 2,  # tie between 1 + ulp (odd) and 1 + 2 ulp -> 1 + 2 ulp
        1.0 + ULP - 2.0**-23,  # rounds up to 1 + ulp
        2.0 - 2.0**-23,  # carries into the exponent -> 2
        -3.0e-3,
        12345.678,
        0.1,
        np.float32(np.finfo(np.float32).max),  # rounds to +inf (round to nearest)
        np.float32(np.finfo(np.float32).tiny),  # smallest normal: exact
        np.uint32(0x00001000).view(np.float32),  # subnormal tie -> 0x2000
        np.uint32(0x00000FFF).view(np.float32),  # subnormal below the tie -> 0
        np.uint32(0x7F7FEFFF).view(np.float32),  # large, stays finite
        np.inf,
        -np.inf,
        np.nan,
        0.0,
    ],
    np.float32,
)


def expected_rounding():
    exp = tf32(CRAFTED)
    # spot checks of the NumPy rule itself against values written out by hand
    f = lambda x: np.float32(x)
    assert exp[2] == f(1.0 + ULP) and exp[3] == f(-(1.0 + ULP)) and exp[4] == f(1.0)
    assert exp[5] == f(1.0 + ULP) and exp[6] == f(1.0 + 2 * ULP) and exp[8] == f(2.0)
    assert np.isposinf(exp[12]) and exp[14].view(np.uint32) == 0x2000 and exp[15] == 0
    assert np.isfinite(exp[16]) and np.isposinf(exp[17]) and np.isneginf(exp[18]) and np.isnan(exp[19])
    return exp


@pytest.mark.parametrize("side", ["a", "b"])
def test_tf32_rounding_rule(tf32_kernel, side):
    """c (len, 1) = x (len, 1) @ [[1]] (or [[1]] @ x^T): one exact product per output, so
    c is exactly the TF32 rounding of each crafted x."""
    x = CRAFTED.reshape(-1, 1)
    one = np.ones((1, 1), np.float32)
    if side == "a":
        out = to_numpy(ops.matmul(x, one, device="cuda", kernel=tf32_kernel, precision="tf32")).ravel()
    else:
        out = to_numpy(ops.matmul(one, x.T, device="cuda", kernel=tf32_kernel, precision="tf32")).ravel()
    exp = expected_rounding()
    if tf32_kernel == "cublas" and not cuda_emulated():
        exp_ok = np.isclose(out, exp, rtol=2.0**-10, equal_nan=True) | (np.isinf(out) & np.isinf(exp))
        assert exp_ok.all(), f"cuBLAS tf32 on crafted values: {out} vs {exp}"
        return
    bad = [(float(v), float(o), float(e)) for v, o, e in zip(CRAFTED, out, exp)
           if not (o == e or (np.isnan(o) and np.isnan(e)))]
    assert not bad, f"tf32 {tf32_kernel}: (input, got, expected): {bad}"


def test_tf32_fp32_default_unchanged(cuda_device, rng):
    """precision defaults to 'fp32': the crafted ties come back unrounded."""
    x = CRAFTED[:9].reshape(-1, 1)
    out = to_numpy(ops.matmul(x, np.ones((1, 1), np.float32), device=cuda_device, kernel="ref")).ravel()
    np.testing.assert_array_equal(out, CRAFTED[:9])


# --- refusals ----------------------------------------------------------------------------


def test_tf32_cpu_refuses():
    a = np.ones((2, 3), np.float32)
    b = np.ones((3, 4), np.float32)
    for kernel in ("auto", "ref"):
        with pytest.raises(ValueError, match=r"tf32' runs on NVIDIA tensor cores \(sm_80\+\); the CPU computes in fp32"):
            ops.matmul(a, b, device="cpu", kernel=kernel, precision="tf32")
    # the C kernel refuses the flag too, whoever passes it (not only ops.py)
    with pytest.raises(ValueError, match=r"tf32 runs on NVIDIA tensor cores \(sm_80\+\); the CPU computes in fp32"):
        _C.op_matmul(a, b, False, False, 1.0, 0.0, None, "cpu", _C.PRECISION_TF32)
    np.testing.assert_array_equal(ops.matmul(a, b, device="cpu", precision="fp32"), a @ b)


def test_tf32_bad_precision_and_flags():
    a = np.ones((2, 2), np.float32)
    with pytest.raises(ValueError, match="unknown precision"):
        ops.matmul(a, a, precision="fp16")
    with pytest.raises(ValueError, match="unknown kernel variant"):
        _C.op_matmul(a, a, False, False, 1.0, 0.0, None, "cpu", 0x200)  # not a known flag
    assert _C.PRECISION_TF32 == ops.PRECISIONS["tf32"] == 0x100


OLD_GPU_SCRIPT = textwrap.dedent("""
    import numpy as np
    from gpuaccel import ops
    a = np.ones((3, 4), np.float32)
    for kernel in ("auto", "cublas"):
        try:
            ops.matmul(a, a.T, device="cuda", kernel=kernel, precision="tf32")
        except ValueError as e:
            print(kernel, "refused:", e)
        else:
            print(kernel, "ran")
    out = ops.matmul(a, a.T, device="cuda", kernel="ref", precision="tf32")
    print("ref", "ran", float(out[0, 0]))
""")


def test_tf32_refused_below_sm80_on_emulator(cuda_device):
    """A GPU below compute capability 8.0 (the emulator told to be an sm_75) refuses the
    tensor-core kernels with a clear error; the reference still runs."""
    if not cuda_emulated():
        pytest.skip("needs the CUDA emulator, which can pretend to be an sm_75 (GPUACCEL_EMU_CC)")
    env = dict(os.environ, GPUACCEL_EMU_CC="75")
    proc = subprocess.run([sys.executable, "-c", OLD_GPU_SCRIPT], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    for kernel in ("auto", "cublas"):
        line = next(l for l in lines if l.startswith(kernel + " "))
        assert "refused" in line and "compute capability 8.0" in line and "sm_7.x" in line, line
    assert any(l == "ref ran 4.0" for l in lines), proc.stdout
