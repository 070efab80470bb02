/* 2-D convolution on the CPU (zero padding). Shapes in core/backend.h:
 * x (n, c, h, w), w (k, c, r, s), y (n, k, p, q), col (c r s, n p q).
 *
 * The fast variant splits the batch into chunks of a few images and gives
 * each thread whole chunks: im2col of the chunk, one GEMM (thousands of
 * columns, so full micro-kernel panels), then an epilogue that adds the bias,
 * applies ReLU and writes NCHW, or max-pools straight away when a pool follows
 * (conv2d_pool_*: the conv output is never stored). A chunk's col and GEMM
 * result fit in one core's L2 cache; lowering the whole batch at once, as the
 * first version did, streamed a 29 MB col (the reference CNN's second conv at
 * batch 128) through memory four times a step and spent a third of the step
 * at barriers between the small parallel passes. The backward recomputes the
 * chunk's im2col from x (cache-hot) instead of keeping the forward's, so `col`
 * is scratch on this device; weight gradients go to per-thread partial sums
 * that thread 0 adds up in a fixed order (the result does not depend on
 * timing). The reference variant is the direct seven-loop definition. */
#include "cpu/kernels_cpu.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "core/alloc.h"
#include "cpu/conv_cpu.h"
#include "cpu/omp_util.h"
#include "cpu/winograd_cpu.h"



/* Output columns j whose input column j*stride - pad + ks lies inside [0, w):
 * [*lo, *hi). Outside that range the patch entry is padding. */
static void valid_cols(const ga_conv_shape *s, int64_t ks, int64_t *lo, int64_t *hi)
{
    const int64_t first = s->pad - ks, end = s->w + s->pad - ks; /* j*stride in [first, end) */
    *lo = first <= 0 ? 0 : (first + s->stride - 1) / s->stride;
    *hi = end <= 0 ? 0 : (end + s->stride - 1) / s->stride;
    if (*hi > s->q)
        *hi = s->q;
    if (*lo > *hi)
        *lo = *hi;
}

/* Stride 1 with q == w ('same' width): the output rows i in [*ilo, *ihi) read
 * input rows, and patch row (kr, ks) of an image is the input plane moved by
 * the constant offset *off. Over the plane positions [*t0, *t1) one long copy
 * (or add) does every valid entry at once; the entries in that range whose
 * column is outside [lo, hi) wrapped around to a neighbouring row and are
 * fixed up by the caller. Returns 0 when nothing is valid. */
static int shifted_span(const ga_conv_shape *s, int64_t kr, int64_t ks, int64_t lo, int64_t hi, int64_t *ilo,
                        int64_t *ihi, int64_t *t0, int64_t *t1, int64_t *off)
{
    *ilo = s->pad - kr > 0 ? s->pad - kr : 0;
    *ihi = s->h + s->pad - kr < s->p ? s->h + s->pad - kr : s->p;
    if (*ihi < *ilo)
        *ihi = *ilo;
    *off = (kr - s->pad) * s->w + (ks - s->pad);
    *t0 = *ilo * s->q + lo;
    *t1 = (*ihi - 1) * s->q + hi;
    return *ihi > *ilo && hi > lo;
}

/* col (c r s, .) with row stride ldc: patches of images [img0, img0 + nb) of x
 * from column 0 on. Each output row is a (strided) copy of an input row between
 * two runs of zeros, so the copy loop has no branch and vectorises. Serial. */
GA_SIMD_CLONES
static void im2col_images(float *col, int64_t ldc, const float *x, const ga_conv_shape *s, int64_t img0,
                          int64_t nb)
{
    const int64_t pq = s->p * s->q;
    for (int64_t row = 0; row < s->c * s->r * s->s; row++) {
        const int64_t c = row / (s->r * s->s), kr = (row / s->s) % s->r, ks = row % s->s;
        int64_t lo, hi;
        valid_cols(s, ks, &lo, &hi);
        const int64_t off = ks - s->pad;
        for (int64_t img = 0; img < nb; img++) {
            const float *xc = x + ((img0 + img) * s->c + c) * s->h * s->w;
            float *dst = col + row * ldc + img * pq;
            if (s->stride == 1 && s->q == s->w) { /* the common 'same' case: one long copy */
                int64_t ilo, ihi, t0, t1, shift;
                if (!shifted_span(s, kr, ks, lo, hi, &ilo, &ihi, &t0, &t1, &shift)) {
                    memset(dst, 0, (size_t)pq * sizeof(float));
                    continue;
                }
                memset(dst, 0, (size_t)t0 * sizeof(float));
                for (int64_t t = t0; t < t1; t++)
                    dst[t] = xc[t + shift];
                memset(dst + t1, 0, (size_t)(pq - t1) * sizeof(float));
                for (int64_t i = ilo; i < ihi; i++) { /* the wrapped-around columns */
                    for (int64_t j = 0; j < lo; j++)
                        dst[i * s->q + j] = 0.0f;
                    for (int64_t j = hi; j < s->q; j++)
                        dst[i * s->q + j] = 0.0f;
                }
                continue;
            }
            for (int64_t i = 0; i < s->p; i++) {
                const int64_t h = i * s->stride - s->pad + kr;
                float *d = dst + i * s->q;
                if (h < 0 || h >= s->h) {
                    memset(d, 0, (size_t)s->q * sizeof(float));
                    continue;
                }
                const float *xr = xc + h * s->w;
                for (int64_t j = 0; j < lo; j++)
                    d[j] = 0.0f;
                if (s->stride == 1)
                    for (int64_t j = lo; j < hi; j++)
                        d[j] = xr[j + off];
                else
                    for (int64_t j = lo; j < hi; j++)
                        d[j] = xr[j * s->stride + off];
                for (int64_t j = hi; j < s->q; j++)
                    d[j] = 0.0f;
            }
        }
    }
}

/* col (c r s, n p q) = patches of x (the backend entry: the whole batch). */
ga_status ga_im2col_cpu(float *col, const float *x, const ga_conv_shape *s)
{
    GA_TRY(ga_check_conv("im2col", s));
    const int64_t pq = s->p * s->q, npq = s->n * pq;
    if (npq > 0 && (!col || !x))
        return ga_fail(GA_ERR_VALUE, "im2col: NULL argument");
    GA_PARALLEL_FOR(s->c * s->r * s->s * npq)
    for (int64_t img = 0; img < s->n; img++)
        im2col_images(col + img * pq, npq, x, s, img, 1);
    return GA_OK;
}

/* dx of images [img0, img0 + nb) = col2im(dcol (c r s, nb p q)): every input
 * pixel gathers the patch entries it was copied to. Serial. dcol is scratch:
 * the 'same' fast path zeroes its padding entries, then adds whole planes. */
GA_SIMD_CLONES
static void col2im_images(float *dx, float *dcol, const ga_conv_shape *s, int64_t img0, int64_t nb)
{
    const int64_t pq = s->p * s->q, cpq = nb * pq, hw = s->h * s->w;
    for (int64_t t = 0; t < nb * s->c; t++) {
        const int64_t img = t / s->c, c = t % s->c;
        float *dxp = dx + (img0 * s->c + t) * hw;
        memset(dxp, 0, (size_t)hw * sizeof(float));
        for (int64_t kr = 0; kr < s->r; kr++)
            for (int64_t ks = 0; ks < s->s; ks++) {
                float *src = dcol + ((c * s->r + kr) * s->s + ks) * cpq + img * pq;
                int64_t lo, hi;
                valid_cols(s, ks, &lo, &hi);
                const int64_t off = ks - s->pad;
                if (s->stride == 1 && s->q == s->w) {
                    int64_t ilo, ihi, t0, t1, shift;
                    if (!shifted_span(s, kr, ks, lo, hi, &ilo, &ihi, &t0, &t1, &shift))
                        continue;
                    for (int64_t i = ilo; i < ihi; i++) { /* padding entries add nothing */
                        for (int64_t j = 0; j < lo; j++)
                            src[i * s->q + j] = 0.0f;
                        for (int64_t j = hi; j < s->q; j++)
                            src[i * s->q + j] = 0.0f;
                    }
                    for (int64_t t = t0; t < t1; t++)
                        dxp[t + shift] += src[t];
                    continue;
                }
                for (int64_t i = 0; i < s->p; i++) {
                    const int64_t h = i * s->stride - s->pad + kr;
                    if (h < 0 || h >= s->h)
                        continue;
                    float *dr = dxp + h * s->w;
                    const float *sr = src + i * s->q;
                    if (s->stride == 1)
                        for (int64_t j = lo; j < hi; j++)
                            dr[j + off] += sr[j];
                    else
                        for (int64_t j = lo; j < hi; j++)
                            dr[j * s->stride + off] += sr[j];
                }
            }
    }
}

/* ---- reference: the definition, loop by loop ---- */

static ga_status conv_forward_ref(float *y, const float *x, const float *w, const float *b,
                                  ga_act act, const ga_conv_shape *s)
{
    GA_PARALLEL_FOR(s->n * s->k * s->p * s->q * s->c * s->r * s->s)
    for (int64_t t = 0; t < s->n * s->k; t++) {
        const int64_t img = t / s->k, k = t % s->k;
        for (int64_t i = 0; i < s->p; i++)
            for (int64_t j = 0; j < s->q; j++) {
                float acc = b ? b[k] : 0.0f;
                for (int64_t c = 0; c < s->c; c++)
                    for (int64_t kr = 0; kr < s->r; kr++)
                        for (int64_t ks = 0; ks < s->s; ks++) {
                            int64_t hi = i * s->stride - s->pad + kr;
                            int64_t wi = j * s->stride - s->pad + ks;
                            if (hi >= 0 && hi < s->h && wi >= 0 && wi < s->w)
                                acc += x[((img * s->c + c) * s->h + hi) * s->w + wi] *
                                       w[((k * s->c + c) * s->r + kr) * s->s + ks];
                        }
                y[(t * s->p + i) * s->q + j] = ga_act_eval(act.kind, act.alpha, acc);
            }
    }
    return GA_OK;
}

/* Reference backward, straight from x. */
static ga_status conv_backward_ref(float *dx, float *dw, float *db, const float *x,
                                   const float *w, const float *dy, const ga_conv_shape *s)
{
    const int64_t wsize = s->k * s->c * s->r * s->s;
    if (dw)
        memset(dw, 0, (size_t)wsize * sizeof(float));
    if (db)
        memset(db, 0, (size_t)s->k * sizeof(float));
    if (dx)
        memset(dx, 0, (size_t)(s->n * s->c * s->h * s->w) * sizeof(float));
    /* serial: the scatter into dx and dw would race */
    for (int64_t img = 0; img < s->n; img++)
        for (int64_t k = 0; k < s->k; k++)
            for (int64_t i = 0; i < s->p; i++)
                for (int64_t j = 0; j < s->q; j++) {
                    float g = dy[((img * s->k + k) * s->p + i) * s->q + j];
                    if (db)
                        db[k] += g;
                    for (int64_t c = 0; c < s->c; c++)
                        for (int64_t kr = 0; kr < s->r; kr++)
                            for (int64_t ks = 0; ks < s->s; ks++) {
                                int64_t hi = i * s->stride - s->pad + kr;
                                int64_t wi = j * s->stride - s->pad + ks;
                                if (hi < 0 || hi >= s->h || wi < 0 || wi >= s->w)
                                    continue;
                                int64_t xi = ((img * s->c + c) * s->h + hi) * s->w + wi;
                                int64_t wj = ((k * s->c + c) * s->r + kr) * s->s + ks;
                                if (dw)
                                    dw[wj] += g * x[xi];
                                if (dx)
                                    dx[xi] += g * w[wj];
                            }
                }
    return GA_OK;
}

/* ---- fast: chunks of images, one thread per chunk ---- */

/* The default chunk keeps a thread's working set (`floats_per_image` per image)
 * near 1 MiB, one core's L2 on the 2-core EPYC it was tuned on (there it was as
 * fast as the best fixed size, 2-8 images, and 15% faster than 16 images);
 * GPUACCEL_CONV_CHUNK=<images> overrides it (tests, tuning). */
ga_conv_chunks ga_conv_plan_chunks(const ga_conv_shape *s, int64_t floats_per_image)
{
    ga_conv_chunks pl;
    int64_t nt = ga_get_num_threads();
    nt = nt < 1 ? 1 : nt > GA_CONV_MAX_THREADS ? GA_CONV_MAX_THREADS : nt;
    nt = nt < s->n ? nt : s->n;
    int64_t chunk = 0;
    const char *env = getenv("GPUACCEL_CONV_CHUNK");
    if (env && *env)
        chunk = strtoll(env, NULL, 10);
    if (chunk <= 0)
        chunk = (256 * 1024) / (floats_per_image > 0 ? floats_per_image : 1);
    if (chunk > s->n / nt)
        chunk = s->n / nt;
    if (chunk < 1)
        chunk = 1;
    pl.chunk = chunk;
    pl.nchunks = (s->n + chunk - 1) / chunk;
    pl.nt = (int)(nt < pl.nchunks ? nt : pl.nchunks);
    return pl;
}

int ga_conv_thread_id(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

int ga_conv_team_size(void)
{
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

void ga_conv_keep_error(ga_conv_error *e, ga_status st)
{
    if (st == GA_OK)
        return;
#ifdef _OPENMP
#pragma omp critical(ga_conv_error)
#endif
    if (e->st == GA_OK) {
        e->st = st;
        snprintf(e->msg, sizeof e->msg, "%s", ga_last_error());
    }
}

GA_SIMD_CLONES
void ga_conv_store_output(float *y, const float *ws, const float *b, ga_act act, const ga_conv_shape *s,
                         int64_t img0, int64_t nb)
{
    const int64_t pq = s->p * s->q, cpq = nb * pq;
    for (int64_t t = 0; t < nb * s->k; t++) {
        const int64_t img = t / s->k, k = t % s->k;
        const float *src = ws + k * cpq + img * pq;
        float *dst = y + ((img0 + img) * s->k + k) * pq;
        const float bias = b ? b[k] : 0.0f;
        ga_act_span_cpu(dst, src, bias, pq, act);
    }
}

/* Same first-maximum rule over the activated values as the max-pool kernel, so
 * the pair gives the same y and arg as the two layers (a saturating tanh can
 * tie values its input told apart). The 2x2 row kernel does linear and ReLU. */
void ga_conv_store_pooled(float *y, int32_t *arg, const float *ws, const float *b, ga_act act,
                         const ga_conv_shape *s, const ga_pool_shape *ps, int64_t img0, int64_t nb)
{
    const int64_t pq = s->p * s->q, cpq = nb * pq, ppq = ps->p * ps->q;
    const ga_pool2x2_row_fn row2x2 = ga_pool2x2_row_kernel();
    for (int64_t t = 0; t < nb * s->k; t++) {
        const int64_t img = t / s->k, k = t % s->k;
        const float *src = ws + k * cpq + img * pq;
        const int64_t plane = (img0 + img) * s->k + k;
        float *yp = y + plane * ppq;
        int32_t *ap = arg + plane * ppq;
        const float bias = b ? b[k] : 0.0f;
        if (ps->size == 2 && ps->stride == 2 && (act.kind == GA_ACT_NONE || act.kind == GA_ACT_RELU)) {
            for (int64_t i = 0; i < ps->p; i++)
                row2x2(yp + i * ps->q, ap + i * ps->q, src + 2 * i * s->q, s->q, ps->q,
                            (int32_t)(2 * i * s->q), bias, act.kind == GA_ACT_RELU);
            continue;
        }
        for (int64_t i = 0; i < ps->p; i++)
            for (int64_t j = 0; j < ps->q; j++) {
                int64_t best = i * ps->stride * s->q + j * ps->stride;
                float m = ga_act_eval(act.kind, act.alpha, src[best] + bias);
                for (int64_t r = 0; r < ps->size; r++)
                    for (int64_t c = 0; c < ps->size; c++) {
                        const int64_t idx = (i * ps->stride + r) * s->q + j * ps->stride + c;
                        const float v = ga_act_eval(act.kind, act.alpha, src[idx] + bias);
                        if (v > m) { /* strict: the first maximum wins ties */
                            m = v;
                            best = idx;
                        }
                    }
                yp[i * ps->q + j] = m;
                ap[i * ps->q + j] = (int32_t)best;
            }
    }
}

void ga_conv_store(float *y, int32_t *arg, const float *ws, const float *b, ga_act act, const ga_conv_shape *s,
                   const ga_pool_shape *ps, int64_t img0, int64_t nb)
{
    if (ps)
        ga_conv_store_pooled(y, arg, ws, b, act, s, ps, img0, nb);
    else
        ga_conv_store_output(y, ws, b, act, s, img0, nb);
}

/* Forward; with `ps` the pool that follows is fused in. */
static ga_status forward_fast(float *y, int32_t *arg, const ga_pool_shape *ps, float *col, float *ws,
                              const float *x, const float *w, const float *b, ga_act act,
                              const ga_conv_shape *s)
{
    const int64_t crs = s->c * s->r * s->s, pq = s->p * s->q;
    const ga_conv_chunks pl = ga_conv_plan_chunks(s, (crs + s->k) * pq);
    ga_conv_error err = {GA_OK, ""};
#ifdef _OPENMP
#pragma omp parallel num_threads(pl.nt) if (pl.nt > 1)
#endif
    {
        const int tid = ga_conv_thread_id(), nthr = ga_conv_team_size();
        float *my_col = col + tid * pl.chunk * pq * crs, *my_out = ws + tid * pl.chunk * pq * s->k;
        ga_status st = GA_OK;
        for (int64_t ci = tid; ci < pl.nchunks && st == GA_OK; ci += nthr) {
            const int64_t img0 = ci * pl.chunk, nb = s->n - img0 < pl.chunk ? s->n - img0 : pl.chunk;
            const int64_t cpq = nb * pq;
            im2col_images(my_col, cpq, x, s, img0, nb);
            st = ga_gemm_cpu_threads(my_out, w, my_col, 0, 0, s->k, cpq, crs, crs, cpq, cpq, 1.0f, 0.0f,
                                     GA_VARIANT_FAST, 1);
            if (st != GA_OK)
                break;
            ga_conv_store(y, arg, my_out, b, act, s, ps, img0, nb);
        }
        ga_conv_keep_error(&err, st);
    }
    return err.st == GA_OK ? GA_OK : ga_fail(err.st, "%s", err.msg);
}

/* Sum of v[0..n) in 16 interleaved partial sums (vectorises; a single running
 * sum is a chain of dependent adds). Both backward paths sum through here, so
 * the fused pair and the two layers give the same bias gradient bit for bit. */
GA_SIMD_CLONES
static float sum_floats(const float *v, int64_t n)
{
    float acc[16] = {0.0f};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int l = 0; l < 16; l++)
            acc[l] += v[i + l];
    float sum = 0.0f;
    for (; i < n; i++)
        sum += v[i];
    for (int l = 0; l < 16; l++)
        sum += acc[l];
    return sum;
}

/* dst[arg[i]] += act'(y[i]) dy[i] over the ppq outputs of one pooled plane. */
static void scatter_pooled(float *dst, const float *dy, const float *y, const int32_t *arg, int64_t ppq, ga_act act)
{
    const float alpha = act.alpha;
#define LOOP(K)                       \
    for (int64_t i = 0; i < ppq; i++) \
    dst[arg[i]] += ga_act_grad(K, alpha, y[i], dy[i])
    switch (act.kind) { GA_ACT_LIST(GA_ACT_CASE) }
#undef LOOP
}

void ga_conv_gather_dy(float *dyt, float *db, int first, const float *dy, const float *ypool,
                      const int32_t *arg, ga_act act, const ga_conv_shape *s, const ga_pool_shape *ps,
                      int64_t img0, int64_t nb)
{
    const int64_t pq = s->p * s->q, cpq = nb * pq;
    for (int64_t k = 0; k < s->k; k++) {
        float sum = 0.0f;
        for (int64_t img = 0; img < nb; img++) {
            float *dst = dyt + k * cpq + img * pq;
            const int64_t plane = (img0 + img) * s->k + k;
            if (!ps) {
                memcpy(dst, dy + plane * pq, (size_t)pq * sizeof(float));
                sum += sum_floats(dst, pq);
                continue;
            }
            const int64_t ppq = ps->p * ps->q;
            const float *src = dy + plane * ppq, *yp = ypool + plane * ppq;
            const int32_t *ap = arg + plane * ppq;
            memset(dst, 0, (size_t)pq * sizeof(float));
            scatter_pooled(dst, src, yp, ap, ppq, act);
            sum += sum_floats(dst, pq);
        }
        if (db)
            db[k] = first ? sum : db[k] + sum;
    }
}

static int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

/* Backward: dx image range by image range; dw and db as per-thread partial
 * sums (thread 0 straight into dw, db), added up in thread order at the end.
 * The weight gradient is dw (k, crs) = dyt col^T, or its transpose col dyt^T
 * when that pads less to micro-kernel tiles (a first layer: crs = 9, k = 32
 * fills 9 of 32 columns one way, 9 of 16 rows the other); then every thread,
 * thread 0 included, sums into its own buffer and the reduction transposes. */
static ga_status backward_fast(float *dx, float *dw, float *db, float *ws, float *col, const float *x,
                               const float *w, const float *dy, const float *ypool, const int32_t *arg,
                               ga_act act, const ga_conv_shape *s, const ga_pool_shape *ps)
{
    const int64_t crs = s->c * s->r * s->s, pq = s->p * s->q, nw = s->k * crs;
    const int64_t per_image = ((dw ? crs : 0) + (dx ? crs : 0) + s->k) * pq;
    const ga_conv_chunks pl = ga_conv_plan_chunks(s, per_image);
    int mr, nr;
    ga_gemm_cpu_tile(&mr, &nr);
    const int dw_t = dw && round_up(crs, mr) * round_up(s->k, nr) < round_up(s->k, mr) * round_up(crs, nr);
    float *partial[GA_CONV_MAX_THREADS];
    ga_conv_error err = {GA_OK, ""};
#ifdef _OPENMP
#pragma omp parallel num_threads(pl.nt) if (pl.nt > 1)
#endif
    {
        const int tid = ga_conv_thread_id(), nthr = ga_conv_team_size();
        float *my_dyt = ws + tid * pl.chunk * pq * (s->k + crs), *my_dcol = my_dyt + pl.chunk * pq * s->k;
        float *my_col = col + tid * pl.chunk * pq * crs;
        float *my_dw = dw, *my_db = db;
        ga_status st = GA_OK;
        if (dw && (tid > 0 || dw_t)) {
            st = ga_thread_scratch(GA_SCRATCH_CONV, (size_t)(nw + s->k), &my_dw);
            my_db = my_dw + nw;
        }
        partial[tid] = my_dw;
        for (int64_t ci = tid; ci < pl.nchunks && st == GA_OK; ci += nthr) {
            const int64_t img0 = ci * pl.chunk, nb = s->n - img0 < pl.chunk ? s->n - img0 : pl.chunk;
            const int64_t cpq = nb * pq, first = ci == tid;
            ga_conv_gather_dy(my_dyt, dw ? my_db : NULL, (int)first, dy, ypool, arg, act, s, ps, img0, nb);
            if (dw) {
                im2col_images(my_col, cpq, x, s, img0, nb);
                const float beta = first ? 0.0f : 1.0f;
                if (dw_t)
                    st = ga_gemm_cpu_threads(my_dw, my_col, my_dyt, 0, 1, crs, s->k, cpq, cpq, cpq, s->k, 1.0f,
                                             beta, GA_VARIANT_FAST, 1);
                else
                    st = ga_gemm_cpu_threads(my_dw, my_dyt, my_col, 0, 1, s->k, crs, cpq, cpq, cpq, crs, 1.0f,
                                             beta, GA_VARIANT_FAST, 1);
                if (st != GA_OK)
                    break;
            }
            if (dx) {
                st = ga_gemm_cpu_threads(my_dcol, w, my_dyt, 1, 0, crs, cpq, s->k, crs, cpq, cpq, 1.0f, 0.0f,
                                         GA_VARIANT_FAST, 1);
                if (st != GA_OK)
                    break;
                col2im_images(dx, my_dcol, s, img0, nb);
            }
        }
        ga_conv_keep_error(&err, st);
        if (dw) {
#ifdef _OPENMP
#pragma omp barrier
#endif
            if (tid == 0 && err.st == GA_OK) /* fixed order: the same sums every run */
                for (int t = dw_t ? 0 : 1; t < nthr; t++) {
                    const float *part = partial[t];
                    const int assign = dw_t && t == 0;
                    for (int64_t kk = 0; kk < s->k; kk++) {
                        for (int64_t r = 0; r < crs; r++) {
                            const float v = dw_t ? part[r * s->k + kk] : part[kk * crs + r];
                            dw[kk * crs + r] = assign ? v : dw[kk * crs + r] + v;
                        }
                        if (db)
                            db[kk] = assign ? part[nw + kk] : db[kk] + part[nw + kk];
                    }
                }
        }
    }
    return err.st == GA_OK ? GA_OK : ga_fail(err.st, "%s", err.msg);
}

/* The error for a variant the CPU does not run; the implicit GEMM is a GPU
 * algorithm (its point is keeping the patches out of global memory), so asking
 * for it here names what the CPU has instead of mapping it silently. */
static ga_status cpu_variant_error(const char *op, int variant)
{
    if (variant == GA_VARIANT_IMPLICIT)
        return ga_fail(GA_ERR_VALUE,
                       "%s: kernel='implicit' runs on CUDA devices only; the CPU's algorithms are 'im2col', "
                       "'winograd2', 'winograd4' (or 'winograd') and 'ref', and 'auto' measures them",
                       op);
    return ga_fail(GA_ERR_VALUE, "%s: kernel variant %d is not available on the CPU", op, variant);
}

/* The tile size m of a Winograd variant, 0 for the others. */
static int winograd_tile(int variant)
{
    return variant == GA_VARIANT_WINOGRAD2 ? 2 : variant == GA_VARIANT_WINOGRAD4 ? 4 : 0;
}

ga_status ga_conv2d_forward_cpu(float *y, float *col, float *ws, const float *x, const float *w,
                                const float *b, ga_act act, const ga_conv_shape *s, int variant)
{
    GA_TRY(ga_check_conv("conv2d", s));
    GA_TRY(ga_check_act("conv2d", act));
    if (s->n == 0)
        return GA_OK;
    if (!y || !x || !w)
        return ga_fail(GA_ERR_VALUE, "conv2d: NULL argument");
    if (variant == GA_VARIANT_REF)
        return conv_forward_ref(y, x, w, b, act, s);
    if (winograd_tile(variant))
        return ga_winograd_forward_cpu(y, NULL, NULL, x, w, b, act, s, winograd_tile(variant));
    if (variant != GA_VARIANT_FAST)
        return cpu_variant_error("conv2d", variant);
    if (!col || !ws)
        return ga_fail(GA_ERR_VALUE, "conv2d: NULL workspace");
    return forward_fast(y, NULL, NULL, col, ws, x, w, b, act, s);
}

ga_status ga_conv2d_backward_cpu(float *dx, float *dw, float *db, float *ws, const float *x, float *col,
                                 const float *w, const float *dy, const ga_conv_shape *s, int variant)
{
    GA_TRY(ga_check_conv("conv2d_backward", s));
    const int64_t npq = s->n * s->p * s->q;
    if (!w || (npq > 0 && !dy))
        return ga_fail(GA_ERR_VALUE, "conv2d_backward: NULL argument");
    if (!dw)
        db = NULL; /* a frozen layer: input gradient only */
    if (variant == GA_VARIANT_REF) {
        if (npq > 0 && !x)
            return ga_fail(GA_ERR_VALUE, "conv2d_backward: NULL x");
        return conv_backward_ref(dx, dw, db, x, w, dy, s);
    }
    if (variant != GA_VARIANT_FAST && !winograd_tile(variant))
        return cpu_variant_error("conv2d_backward", variant);
    if (npq == 0)
        return conv_backward_ref(dx, dw, db, x, w, dy, s); /* empty batch: zero gradients */
    if (winograd_tile(variant)) {
        if (dw && !x)
            return ga_fail(GA_ERR_VALUE, "conv2d_backward: NULL x");
        return ga_winograd_backward_cpu(dx, dw, db, x, w, dy, NULL, NULL, (ga_act){GA_ACT_NONE, 0.0f}, s, NULL,
                                        winograd_tile(variant));
    }
    if (!ws || (dw && (!col || !x)))
        return ga_fail(GA_ERR_VALUE, "conv2d_backward: NULL x, workspace or col");
    return backward_fast(dx, dw, db, ws, col, x, w, dy, NULL, NULL, (ga_act){GA_ACT_NONE, 0.0f}, s, NULL);
}

/* ---- conv + max pool, fused (the pair the reference CNN is made of) ---- */

static ga_status check_pair(const ga_conv_shape *cs, const ga_pool_shape *ps, ga_act act)
{
    GA_TRY(ga_check_conv("conv2d_pool", cs));
    GA_TRY(ga_check_pool("conv2d_pool", ps));
    GA_TRY(ga_check_act_poolable("conv2d_pool", act));
    if (ps->n != cs->n || ps->c != cs->k || ps->h != cs->p || ps->w != cs->q)
        return ga_fail(GA_ERR_VALUE, "conv2d_pool: the pool's input is not the conv's output");
    return GA_OK;
}

ga_status ga_conv2d_pool_forward_cpu(float *y, int32_t *arg, float *col, float *ws, const float *x,
                                     const float *w, const float *b, ga_act act, const ga_conv_shape *cs,
                                     const ga_pool_shape *ps, int variant)
{
    GA_TRY(check_pair(cs, ps, act));
    if (variant != GA_VARIANT_FAST && !winograd_tile(variant))
        return cpu_variant_error("conv2d_pool", variant);
    if (cs->n == 0)
        return GA_OK;
    if (!y || !arg || !x || !w || (!winograd_tile(variant) && (!col || !ws)))
        return ga_fail(GA_ERR_VALUE, "conv2d_pool: NULL argument");
    if (winograd_tile(variant))
        return ga_winograd_forward_cpu(y, arg, ps, x, w, b, act, cs, winograd_tile(variant));
    return forward_fast(y, arg, ps, col, ws, x, w, b, act, cs);
}

ga_status ga_conv2d_pool_backward_cpu(float *dx, float *dw, float *db, float *ws, const float *x, float *col,
                                      const float *w, const float *dy, const float *y, const int32_t *arg,
                                      ga_act act, const ga_conv_shape *cs, const ga_pool_shape *ps, int variant)
{
    GA_TRY(check_pair(cs, ps, act));
    if (variant != GA_VARIANT_FAST && !winograd_tile(variant))
        return cpu_variant_error("conv2d_pool_backward", variant);
    if (!dw)
        db = NULL;
    if (cs->n == 0) {
        if (dw)
            memset(dw, 0, (size_t)(cs->k * cs->c * cs->r * cs->s) * sizeof(float));
        if (db)
            memset(db, 0, (size_t)cs->k * sizeof(float));
        return GA_OK;
    }
    if (winograd_tile(variant)) {
        if (!w || !dy || !y || !arg || (dw && !x))
            return ga_fail(GA_ERR_VALUE, "conv2d_pool_backward: NULL argument");
        return ga_winograd_backward_cpu(dx, dw, db, x, w, dy, y, arg, act, cs, ps, winograd_tile(variant));
    }
    if (!w || !dy || !y || !arg || !ws || (dw && (!col || !x)))
        return ga_fail(GA_ERR_VALUE, "conv2d_pool_backward: NULL argument");
    return backward_fast(dx, dw, db, ws, col, x, w, dy, y, arg, act, cs, ps);
}
