/* CPU SGEMM driver, BLIS design (see gemm_cpu.h for the contract).
 *
 * Loop nest (Goto/BLIS), outermost first:
 *   jc: n in NC-wide blocks
 *     pc: k in KC-deep blocks; pack op(b)[pc, jc] into NR-wide micro-panels
 *         (shared by all threads, packed cooperatively)
 *       ic: this thread's rows in MC-tall blocks; pack alpha*op(a)[ic, pc] into
 *           MR-tall micro-panels (private to the thread)
 *         jr: this thread's NR-wide column panels   (B micro-panel stays in L1)
 *           ir: MR-tall row panels                  (A block stays in L2)
 *             micro-kernel: MR x NR tile of C
 * Threads form a tm x tn grid over (rows, column panels) chosen per call so
 * that skinny shapes (m = 32, n = 288, ...) still keep every core busy; each
 * thread owns a disjoint set of C tiles, so no reduction is needed.
 * Edge tiles are zero-padded in the packed panels; the kernel only cuts its
 * write-back, so there is no slow path for ragged sizes. */
#define _GNU_SOURCE /* sysconf(_SC_LEVEL*_CACHE_SIZE), pthread */

#include "cpu/gemm_cpu.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/threads.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* ------------------------------------------------------------------------ */
/* Micro-kernel selection (CPUID, GPUACCEL_ISA)                              */
/* ------------------------------------------------------------------------ */

static int isa_runs_here(const ga_gemm_ukernel *u)
{
#ifdef GA_GEMM_HAVE_X86
    /* __builtin_cpu_supports also checks that the OS saves the wide registers. */
    __builtin_cpu_init();
    if (u == &ga_gemm_ukernel_avx512)
        return __builtin_cpu_supports("avx512f");
    if (u == &ga_gemm_ukernel_avx2)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    return u == &ga_gemm_ukernel_generic;
}

/* Known name -> kernel (NULL if this build has no such kernel). */
static const ga_gemm_ukernel *isa_by_name(const char *name)
{
#ifdef GA_GEMM_HAVE_X86
    if (strcmp(name, "avx512") == 0)
        return &ga_gemm_ukernel_avx512;
    if (strcmp(name, "avx2") == 0)
        return &ga_gemm_ukernel_avx2;
#endif
    if (strcmp(name, "generic") == 0)
        return &ga_gemm_ukernel_generic;
    return NULL;
}

static const ga_gemm_ukernel *isa_best(void)
{
#ifdef GA_GEMM_HAVE_X86
    if (isa_runs_here(&ga_gemm_ukernel_avx512))
        return &ga_gemm_ukernel_avx512;
    if (isa_runs_here(&ga_gemm_ukernel_avx2))
        return &ga_gemm_ukernel_avx2;
#endif
    return &ga_gemm_ukernel_generic;
}

typedef struct {
    int64_t mc, kc, nc;
} gemm_blocking;

static void blocking_init(void);

static const ga_gemm_ukernel *g_ukernel; /* read/written atomically */
static pthread_once_t g_isa_once = PTHREAD_ONCE_INIT;

/* GPUACCEL_ISA is read once, at first use. An unknown or unrunnable value
 * falls back to the best kernel rather than failing every later GEMM. */
static void isa_init(void)
{
    const ga_gemm_ukernel *u = NULL;
    const char *env = getenv("GPUACCEL_ISA");
    if (env && *env && strcmp(env, "auto") != 0) {
        u = isa_by_name(env);
        if (u && !isa_runs_here(u))
            u = NULL;
    }
    if (!u)
        u = isa_best();
    blocking_init();
    __atomic_store_n(&g_ukernel, u, __ATOMIC_RELEASE);
}

static const ga_gemm_ukernel *current_ukernel(void)
{
    pthread_once(&g_isa_once, isa_init);
    return __atomic_load_n(&g_ukernel, __ATOMIC_ACQUIRE);
}

const char *ga_gemm_cpu_isa(void) { return current_ukernel()->name; }

const ga_gemm_ukernel *ga_gemm_cpu_ukernel(void) { return current_ukernel(); }

void ga_gemm_cpu_tile(int *mr, int *nr)
{
    const ga_gemm_ukernel *u = current_ukernel();
    *mr = u->mr;
    *nr = u->nr;
}

ga_status ga_gemm_cpu_set_isa(const char *isa)
{
    if (isa == NULL)
        return ga_fail(GA_ERR_VALUE, "gemm ISA name is NULL");
    pthread_once(&g_isa_once, isa_init); /* so the env var cannot override later */
    const ga_gemm_ukernel *u;
    if (strcmp(isa, "auto") == 0) {
        u = isa_best();
    } else {
        u = isa_by_name(isa);
        if (u == NULL)
            return ga_fail(GA_ERR_VALUE,
                           "unknown gemm ISA '%s' (expected 'avx512', 'avx2', 'generic' or 'auto')",
                           isa);
        if (!isa_runs_here(u))
            return ga_fail(GA_ERR_VALUE, "gemm ISA '%s' is not supported by this CPU", isa);
    }
    __atomic_store_n(&g_ukernel, u, __ATOMIC_RELEASE);
    return GA_OK;
}

/* ------------------------------------------------------------------------ */
/* Block sizes                                                               */
/* ------------------------------------------------------------------------ */

static int64_t cache_bytes(int name, int64_t fallback)
{
    long v = sysconf(name);
    /* Virtual machines sometimes report 0 or absurd sizes: keep to a sane range. */
    return (v > 4096 && v < (1L << 30)) ? (int64_t)v : fallback;
}

static int64_t clamp64(int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : v > hi ? hi : v; }

/* KC: a KC x NR micro-panel of B about 1.5x L1 (it streams from L2 with the
 * A panel; the longer k blocks halve the passes over C). Measured on Zen 4
 * (32 KiB L1, 2026-11-28): KC 384 beat 256 at every square size 1024-4096 on
 * 1 and 2 threads by 2-5%. Each call then splits k into equal blocks of at
 * most KC (k = 288: one block of 288, not 256 + 32).
 * MC: the MC x KC block of A fills about half of L2.
 * NC: the KC x NC panel of B stays well inside the (shared) L3.
 * GPUACCEL_GEMM_BLOCK="mc,kc,nc" overrides them (for tuning). */
static gemm_blocking blocking_for(const ga_gemm_ukernel *u)
{
    int64_t l1 = cache_bytes(_SC_LEVEL1_DCACHE_SIZE, 32 << 10);
    int64_t l2 = cache_bytes(_SC_LEVEL2_CACHE_SIZE, 512 << 10);
    gemm_blocking bl;
    bl.kc = clamp64(l1 * 3 / 2 / (u->nr * (int64_t)sizeof(float)), 128, 384) / 8 * 8;
    bl.mc = clamp64(l2 / 2 / (bl.kc * (int64_t)sizeof(float)), u->mr, 1024) / u->mr * u->mr;
    bl.nc = 4096 / u->nr * u->nr;

    const char *env = getenv("GPUACCEL_GEMM_BLOCK");
    long mc, kc, nc;
    if (env && sscanf(env, "%ld,%ld,%ld", &mc, &kc, &nc) == 3 && mc > 0 && kc > 0 && nc > 0) {
        bl.mc = (mc + u->mr - 1) / u->mr * u->mr;
        bl.kc = kc;
        bl.nc = (nc + u->nr - 1) / u->nr * u->nr;
    }
    return bl;
}

/* Filled once, by isa_init, for every kernel in the build. */
static gemm_blocking g_blocking[3];

static void blocking_init(void)
{
    g_blocking[0] = blocking_for(&ga_gemm_ukernel_generic);
#ifdef GA_GEMM_HAVE_X86
    g_blocking[1] = blocking_for(&ga_gemm_ukernel_avx2);
    g_blocking[2] = blocking_for(&ga_gemm_ukernel_avx512);
#endif
}

static int kernel_slot(const ga_gemm_ukernel *u)
{
#ifdef GA_GEMM_HAVE_X86
    if (u == &ga_gemm_ukernel_avx512)
        return 2;
    if (u == &ga_gemm_ukernel_avx2)
        return 1;
#endif
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Packing                                                                   */
/* ------------------------------------------------------------------------ */

/* Portable transposing pack (the contract of ga_gemm_pack_t_fn): reads each
 * source row sequentially and scatters it into the panel. */
static void pack_t_generic(float *restrict d, int64_t width, const float *restrict s, int64_t lds,
                           int64_t rows, int64_t kc, float alpha)
{
    for (int64_t r = 0; r < rows; r++) {
        const float *sr = s + r * lds;
        for (int64_t p = 0; p < kc; p++)
            d[p * width + r] = alpha * sr[p];
    }
    for (int64_t r = rows; r < width; r++)
        for (int64_t p = 0; p < kc; p++)
            d[p * width + r] = 0.0f;
}

/* dst <- alpha * op(a)[i0 : i0+mc, p0 : p0+kc] as MR-tall micro-panels, each
 * kc x MR k-major (dst[p*MR + i]); rows past mc are zero. op(a)(i, p) is
 * a[i*lda + p], or a[p*lda + i] when trans. */
static void pack_a(float *restrict dst, const float *restrict a, int trans, int64_t lda,
                   int64_t i0, int64_t mc, int64_t p0, int64_t kc, int mr_max, float alpha,
                   ga_gemm_pack_t_fn pack_t)
{
    for (int64_t ir = 0; ir < mc; ir += mr_max) {
        const int64_t mr = mc - ir < mr_max ? mc - ir : mr_max;
        float *d = dst + ir * kc;
        if (!trans) {
            /* panel columns are rows of a: a transpose */
            pack_t(d, mr_max, a + (i0 + ir) * lda + p0, lda, mr, kc, alpha);
            continue;
        }
        /* panel rows are contiguous in a: straight (scaled) copies */
        for (int64_t p = 0; p < kc; p++) {
            const float *s = a + (p0 + p) * lda + i0 + ir;
            float *dp = d + p * mr_max;
            int64_t i = 0;
            for (; i < mr; i++)
                dp[i] = alpha * s[i];
            for (; i < mr_max; i++)
                dp[i] = 0.0f;
        }
    }
}

/* dst <- one NR-wide micro-panel of op(b)[p0 : p0+kc, j0 : j0+nr], kc x NR
 * k-major (dst[p*NR + j]); columns past nr are zero. op(b)(p, j) is
 * b[p*ldb + j], or b[j*ldb + p] when trans. */
static void pack_b_panel(float *restrict d, const float *restrict b, int trans, int64_t ldb,
                         int64_t p0, int64_t kc, int64_t j0, int64_t nr, int nr_max,
                         ga_gemm_pack_t_fn pack_t)
{
    if (!trans) {
        if (nr == nr_max) {
            for (int64_t p = 0; p < kc; p++)
                memcpy(d + p * nr_max, b + (p0 + p) * ldb + j0, (size_t)nr_max * sizeof(float));
            return;
        }
        for (int64_t p = 0; p < kc; p++) {
            const float *s = b + (p0 + p) * ldb + j0;
            float *dp = d + p * nr_max;
            int64_t j = 0;
            for (; j < nr; j++)
                dp[j] = s[j];
            for (; j < nr_max; j++)
                dp[j] = 0.0f;
        }
    } else {
        pack_t(d, nr_max, b + j0 * ldb + p0, ldb, nr, kc, 1.0f);
    }
}

/* ------------------------------------------------------------------------ */
/* Fast path                                                                 */
/* ------------------------------------------------------------------------ */

typedef struct {
    float *c;
    const float *a, *b;
    int ta, tb;
    int64_t m, n, k, lda, ldb, ldc;
    float alpha, beta;
} gemm_args;

static int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* Split nt threads into tm (row groups) x tn (column-panel groups) so that the
 * busiest thread has as little as possible to do. Ties go to more column
 * groups: with tm == 1 every thread packs and reads only its own B panels and
 * never waits at a barrier (it packs the A block that other threads pack too,
 * a cost of about 1/(its columns) of its work). Measured on a loaded 2-core
 * machine, the barrier-free split held up far better. */
static void thread_grid(int nt, int64_t row_panels, int64_t col_panels, int *tm, int *tn)
{
    double best = -1.0;
    *tm = nt;
    *tn = 1;
    for (int r = 1; r <= nt; r++) {
        if (nt % r)
            continue;
        int s = nt / r;
        double eff = (double)row_panels / ((double)r * ceil_div(row_panels, r)) *
                     ((double)col_panels / ((double)s * ceil_div(col_panels, s)));
        if (eff > best + 1e-9) {
            best = eff;
            *tm = r;
            *tn = s;
        }
    }
}

/* The share [lo, hi) of `total` items that part `idx` of `parts` gets. */
static void share(int64_t total, int parts, int idx, int64_t *lo, int64_t *hi)
{
    *lo = total * idx / parts;
    *hi = total * (idx + 1) / parts;
}

static ga_status gemm_fast(const gemm_args *g, int max_threads)
{
    const ga_gemm_ukernel *u = current_ukernel();
    const gemm_blocking bl = g_blocking[kernel_slot(u)]; /* ready: current_ukernel ran isa_init */
    const int MR = u->mr, NR = u->nr;
    const ga_gemm_pack_t_fn pack_t = u->pack_t ? u->pack_t : pack_t_generic;
    const int64_t m = g->m, n = g->n, k = g->k;

    /* Threads: all of them unless the problem is too small to pay for a
     * fork/join (about 2^18 multiply-adds per thread is the break-even). */
    int nt = max_threads;
    const double work = (double)m * (double)n * (double)k;
    if (work < (double)nt * (1 << 18))
        nt = (int)(work / (1 << 18)) > 1 ? (int)(work / (1 << 18)) : 1;
    const int64_t row_panels = ceil_div(m, MR);
    const int64_t first_nc = n < bl.nc ? n : bl.nc;
    if ((int64_t)nt > row_panels * ceil_div(first_nc, NR))
        nt = (int)(row_panels * ceil_div(first_nc, NR));
    if (nt < 1)
        nt = 1;

    /* One scratch block per call: two B panels (double-buffered, see below),
     * then one A block per thread. */
    /* k in equal blocks of at most bl.kc (multiples of 8 but the last) */
    const int64_t kc_max = k < bl.kc ? k : ceil_div(ceil_div(k, ceil_div(k, bl.kc)), 8) * 8;
    const int64_t b_floats = ceil_div(kc_max * ceil_div(first_nc, NR) * NR, 16) * 16;
    const int64_t mc_max = (m < bl.mc ? ceil_div(m, MR) * MR : bl.mc);
    const int64_t a_floats = ceil_div(mc_max * kc_max, 16) * 16;
    float *buf;
    GA_TRY(ga_thread_scratch(GA_SCRATCH_GEMM, (size_t)(2 * b_floats + nt * a_floats), &buf));

#ifdef _OPENMP
#pragma omp parallel num_threads(nt) if (nt > 1)
#endif
    {
#ifdef _OPENMP
        const int tid = omp_get_thread_num();
        const int nthr = omp_get_num_threads();
#else
        const int tid = 0;
        const int nthr = 1;
#endif
        float *const apack = buf + 2 * b_floats + (int64_t)tid * a_floats;
        int64_t step = 0; /* k blocks done so far: picks the B buffer */

        for (int64_t jc = 0; jc < n; jc += bl.nc) {
            const int64_t nc = n - jc < bl.nc ? n - jc : bl.nc;
            const int64_t col_panels = ceil_div(nc, NR);
            int tm, tn;
            thread_grid(nthr, row_panels, col_panels, &tm, &tn);
            int64_t rp_lo, rp_hi, cp_lo, cp_hi, pk_lo, pk_hi;
            share(row_panels, tm, tid / tn, &rp_lo, &rp_hi);
            share(col_panels, tn, tid % tn, &cp_lo, &cp_hi);
            const int64_t row_lo = rp_lo * MR;
            const int64_t row_hi = rp_hi * MR < m ? rp_hi * MR : m;
            /* With one row group each thread packs just the B panels it uses
             * and nobody waits (panels sit at a fixed kc_max stride, so a
             * thread's region never moves); otherwise all threads pack a share
             * of the whole panel and meet at a barrier before reading it. */
            const int shared_b = tm > 1;
            if (shared_b)
                share(col_panels, nthr, tid, &pk_lo, &pk_hi);
            else
                pk_lo = cp_lo, pk_hi = cp_hi;

            for (int64_t pc = 0; pc < k; pc += kc_max, step++) {
                const int64_t kc = k - pc < kc_max ? k - pc : kc_max;
                /* beta applies once; later k blocks accumulate onto c */
                const float beta = pc == 0 ? g->beta : 1.0f;
                /* Two B buffers, alternating: a thread packing block s+1 can
                 * only have passed the barrier of block s, which everyone
                 * reaches after finishing block s-1, the other buffer's last
                 * reader. So one barrier per k block is enough. */
                float *const bpack = buf + (step & 1) * b_floats;

                for (int64_t jp = pk_lo; jp < pk_hi; jp++) {
                    const int64_t j = jp * NR;
                    pack_b_panel(bpack + j * kc_max, g->b, g->tb, g->ldb, pc, kc, jc + j,
                                 nc - j < NR ? nc - j : NR, NR, pack_t);
                }
#ifdef _OPENMP
                if (shared_b) {
#pragma omp barrier
                }
#endif
                for (int64_t ic = row_lo; ic < row_hi; ic += bl.mc) {
                    const int64_t mc = row_hi - ic < bl.mc ? row_hi - ic : bl.mc;
                    pack_a(apack, g->a, g->ta, g->lda, ic, mc, pc, kc, MR, g->alpha, pack_t);
                    for (int64_t jp = cp_lo; jp < cp_hi; jp++) {
                        const int64_t j = jp * NR;
                        const int64_t nr = nc - j < NR ? nc - j : NR;
                        const float *bp = bpack + j * kc_max;
                        float *cj = g->c + ic * g->ldc + jc + j;
                        for (int64_t ir = 0; ir < mc; ir += MR) {
                            const int64_t mr = mc - ir < MR ? mc - ir : MR;
                            u->fn(kc, apack + ir * kc, bp, cj + ir * g->ldc, g->ldc, beta, mr, nr);
                        }
                    }
                }
            }
#ifdef _OPENMP
            /* The next column block may split the threads differently, so
             * the buffers change owners: let everyone finish this one. */
#pragma omp barrier
#endif
        }
    }
    return GA_OK;
}

/* ------------------------------------------------------------------------ */
/* Reference: plain loops, kept to check the fast path against               */
/* ------------------------------------------------------------------------ */

static void gemm_ref(const gemm_args *g)
{
    const int64_t m = g->m, n = g->n, k = g->k;
    const int nt = (double)m * n * k > (1 << 18) ? ga_get_num_threads() : 1;
    (void)nt; /* unused without OpenMP */
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
#endif
    for (int64_t i = 0; i < m; i++) {
        float *ci = g->c + i * g->ldc;
        for (int64_t j = 0; j < n; j++)
            ci[j] = g->beta == 0.0f ? 0.0f : g->beta * ci[j];
        for (int64_t p = 0; p < k; p++) {
            const float aip = g->alpha * (g->ta ? g->a[p * g->lda + i] : g->a[i * g->lda + p]);
            if (g->tb)
                for (int64_t j = 0; j < n; j++)
                    ci[j] += aip * g->b[j * g->ldb + p];
            else
                for (int64_t j = 0; j < n; j++)
                    ci[j] += aip * g->b[p * g->ldb + j];
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Entry point                                                               */
/* ------------------------------------------------------------------------ */

/* c = beta * c (k == 0 or alpha == 0: a and b do not contribute; BLAS semantics). */
static void scale_c(float *c, int64_t m, int64_t n, int64_t ldc, float beta)
{
    for (int64_t i = 0; i < m; i++) {
        float *ci = c + i * ldc;
        if (beta == 0.0f)
            memset(ci, 0, (size_t)n * sizeof(float));
        else if (beta != 1.0f)
            for (int64_t j = 0; j < n; j++)
                ci[j] *= beta;
    }
}

ga_status ga_gemm_cpu(float *c, const float *a, const float *b, int trans_a, int trans_b,
                      int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb, int64_t ldc,
                      float alpha, float beta, int variant)
{
    return ga_gemm_cpu_threads(c, a, b, trans_a, trans_b, m, n, k, lda, ldb, ldc, alpha, beta, variant,
                               ga_get_num_threads());
}

ga_status ga_gemm_cpu_threads(float *c, const float *a, const float *b, int trans_a, int trans_b,
                              int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb, int64_t ldc,
                              float alpha, float beta, int variant, int max_threads)
{
    /* TF32 is a tensor-core format: the CPU has no such unit, and rounding the
     * operands here would only imitate one, so the flag is refused, not ignored. */
    if (ga_variant_tf32(variant))
        return ga_fail(GA_ERR_VALUE, "gemm: tf32 runs on NVIDIA tensor cores (sm_80+); the CPU computes in fp32");
    if (variant != GA_VARIANT_FAST && variant != GA_VARIANT_REF)
        return ga_fail(GA_ERR_VALUE, "gemm: unknown CPU variant %d (expected fast or ref)", variant);
    if (m < 0 || n < 0 || k < 0)
        return ga_fail(GA_ERR_VALUE, "gemm: negative size m=%lld n=%lld k=%lld", (long long)m,
                       (long long)n, (long long)k);
    const int64_t a_cols = trans_a ? m : k, b_cols = trans_b ? k : n;
    if (lda < a_cols || lda < 0)
        return ga_fail(GA_ERR_VALUE, "gemm: lda=%lld is smaller than the %lld columns of a%s",
                       (long long)lda, (long long)a_cols, trans_a ? " (transposed, k x m)" : "");
    if (ldb < b_cols || ldb < 0)
        return ga_fail(GA_ERR_VALUE, "gemm: ldb=%lld is smaller than the %lld columns of b%s",
                       (long long)ldb, (long long)b_cols, trans_b ? " (transposed, n x k)" : "");
    if (ldc < n || ldc < 0)
        return ga_fail(GA_ERR_VALUE, "gemm: ldc=%lld is smaller than the %lld columns of c",
                       (long long)ldc, (long long)n);
    if (m == 0 || n == 0)
        return GA_OK;
    if (c == NULL)
        return ga_fail(GA_ERR_VALUE, "gemm: c is NULL for a %lld x %lld result", (long long)m,
                       (long long)n);
    if (k > 0 && (a == NULL || b == NULL))
        return ga_fail(GA_ERR_VALUE, "gemm: %s is NULL with k=%lld", a == NULL ? "a" : "b",
                       (long long)k);

    if (k == 0 || alpha == 0.0f) {
        scale_c(c, m, n, ldc, beta);
        return GA_OK;
    }
    const gemm_args g = {c, a, b, trans_a != 0, trans_b != 0, m, n, k, lda, ldb, ldc, alpha, beta};
    if (variant == GA_VARIANT_REF) {
        gemm_ref(&g);
        return GA_OK;
    }
    return gemm_fast(&g, max_threads > 0 ? max_threads : 1);
}
