/* 2-D convolution on the CPU (zero padding). Shapes in core/backend.h:
 * x (n, c, h, w), w (k, c, r, s), y (n, k, p, q), col (c r s, n p q).
 *
 * The fast variant lowers the whole batch to one large GEMM (im2col), so the
 * packed GEMM sees big panels instead of one small product per image; the GEMM
 * result (k, n p q) is then transposed to NCHW with the bias and ReLU applied
 * on the way. The reference variant is the direct seven-loop definition. */
#include "cpu/kernels_cpu.h"

#include <string.h>

#include "cpu/omp_util.h"

static ga_status check_conv(const ga_conv_shape *s)
{
    if (!s || s->n < 0 || s->c <= 0 || s->h <= 0 || s->w <= 0 || s->k <= 0 || s->r <= 0 ||
        s->s <= 0 || s->stride <= 0 || s->pad < 0)
        return ga_fail(GA_ERR_VALUE, "conv2d: bad shape");
    if (s->p != (s->h + 2 * s->pad - s->r) / s->stride + 1 ||
        s->q != (s->w + 2 * s->pad - s->s) / s->stride + 1 || s->p <= 0 || s->q <= 0)
        return ga_fail(GA_ERR_VALUE, "conv2d: output size does not match the input");
    return GA_OK;
}

/* col (c r s, n p q) = patches of x. One (c, r, s) row and image per task:
 * each output row q is a (strided) copy of an input row, zero outside. */
ga_status ga_im2col_cpu(float *col, const float *x, const ga_conv_shape *s)
{
    GA_TRY(check_conv(s));
    const int64_t rows = s->c * s->r * s->s, pq = s->p * s->q, npq = s->n * pq;
    if (npq > 0 && (!col || !x))
        return ga_fail(GA_ERR_VALUE, "im2col: NULL argument");
    GA_PARALLEL_FOR(rows * npq)
    for (int64_t t = 0; t < rows * s->n; t++) {
        const int64_t row = t / s->n, img = t % s->n;
        const int64_t c = row / (s->r * s->s), kr = (row / s->s) % s->r, ks = row % s->s;
        const float *xc = x + (img * s->c + c) * s->h * s->w;
        float *dst = col + row * npq + img * pq;
        for (int64_t i = 0; i < s->p; i++) {
            const int64_t hi = i * s->stride - s->pad + kr;
            float *d = dst + i * s->q;
            if (hi < 0 || hi >= s->h) {
                memset(d, 0, (size_t)s->q * sizeof(float));
                continue;
            }
            const float *xr = xc + hi * s->w;
            for (int64_t j = 0; j < s->q; j++) {
                const int64_t wi = j * s->stride - s->pad + ks;
                d[j] = (wi >= 0 && wi < s->w) ? xr[wi] : 0.0f;
            }
        }
    }
    return GA_OK;
}

/* dx (n, c, h, w) = col2im(dcol): every input pixel gathers the patch entries
 * it was copied to. Parallel over (n, c) planes, so no two threads write the
 * same element. */
static void col2im(float *dx, const float *dcol, const ga_conv_shape *s)
{
    const int64_t pq = s->p * s->q, npq = s->n * pq, hw = s->h * s->w;
    GA_PARALLEL_FOR(s->n * s->c * hw * s->r * s->s)
    for (int64_t t = 0; t < s->n * s->c; t++) {
        const int64_t img = t / s->c, c = t % s->c;
        float *dxp = dx + t * hw;
        memset(dxp, 0, (size_t)hw * sizeof(float));
        for (int64_t kr = 0; kr < s->r; kr++)
            for (int64_t ks = 0; ks < s->s; ks++) {
                const float *src = dcol + ((c * s->r + kr) * s->s + ks) * npq + img * pq;
                for (int64_t i = 0; i < s->p; i++) {
                    const int64_t hi = i * s->stride - s->pad + kr;
                    if (hi < 0 || hi >= s->h)
                        continue;
                    float *dr = dxp + hi * s->w;
                    const float *sr = src + i * s->q;
                    for (int64_t j = 0; j < s->q; j++) {
                        const int64_t wi = j * s->stride - s->pad + ks;
                        if (wi >= 0 && wi < s->w)
                            dr[wi] += sr[j];
                    }
                }
            }
    }
}

/* ---- reference: the definition, loop by loop ---- */

static ga_status conv_forward_ref(float *y, const float *x, const float *w, const float *b,
                                  int relu, const ga_conv_shape *s)
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
                y[(t * s->p + i) * s->q + j] = relu && acc < 0.0f ? 0.0f : acc;
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

/* ---- fast: im2col + one GEMM over the batch ---- */

ga_status ga_conv2d_forward_cpu(float *y, float *col, float *ws, const float *x, const float *w,
                                const float *b, int relu, const ga_conv_shape *s, int variant)
{
    GA_TRY(check_conv(s));
    if (s->n == 0)
        return GA_OK;
    if (!y || !x || !w)
        return ga_fail(GA_ERR_VALUE, "conv2d: NULL argument");
    if (variant == GA_VARIANT_REF)
        return conv_forward_ref(y, x, w, b, relu, s);
    if (variant != GA_VARIANT_FAST)
        return ga_fail(GA_ERR_VALUE, "conv2d: kernel variant %d is not available on the CPU", variant);
    if (!col || !ws)
        return ga_fail(GA_ERR_VALUE, "conv2d: NULL workspace");
    const int64_t crs = s->c * s->r * s->s, pq = s->p * s->q, npq = s->n * pq;
    GA_TRY(ga_im2col_cpu(col, x, s));
    GA_TRY(ga_gemm_cpu(ws, w, col, 0, 0, s->k, npq, crs, crs, npq, npq, 1.0f, 0.0f,
                       GA_VARIANT_FAST));
    /* (k, n, pq) -> (n, k, pq), + bias, ReLU */
    GA_PARALLEL_FOR(s->k * npq)
    for (int64_t t = 0; t < s->n * s->k; t++) {
        const int64_t img = t / s->k, k = t % s->k;
        const float *src = ws + k * npq + img * pq;
        float *dst = y + t * pq;
        const float bias = b ? b[k] : 0.0f;
        if (relu)
            for (int64_t i = 0; i < pq; i++) {
                float v = src[i] + bias;
                dst[i] = v > 0.0f ? v : 0.0f;
            }
        else
            for (int64_t i = 0; i < pq; i++)
                dst[i] = src[i] + bias;
    }
    return GA_OK;
}

ga_status ga_conv2d_backward_cpu(float *dx, float *dw, float *db, float *ws, const float *x,
                                 const float *col, const float *w, const float *dy,
                                 const ga_conv_shape *s, int variant)
{
    GA_TRY(check_conv(s));
    const int64_t crs = s->c * s->r * s->s, pq = s->p * s->q, npq = s->n * pq;
    if (!w || (npq > 0 && !dy))
        return ga_fail(GA_ERR_VALUE, "conv2d_backward: NULL argument");
    if (!dw)
        db = NULL; /* a frozen layer: input gradient only */
    if (variant == GA_VARIANT_REF) {
        if (npq > 0 && !x)
            return ga_fail(GA_ERR_VALUE, "conv2d_backward: NULL x");
        return conv_backward_ref(dx, dw, db, x, w, dy, s);
    }
    if (variant != GA_VARIANT_FAST)
        return ga_fail(GA_ERR_VALUE, "conv2d_backward: kernel variant %d is not available on the CPU", variant);
    if (npq > 0 && (!ws || (dw && !col)))
        return ga_fail(GA_ERR_VALUE, "conv2d_backward: NULL workspace or col");
    float *dyt = ws, *dcol = ws + s->k * npq;
    /* dy (n, k, pq) -> dyt (k, n, pq) */
    GA_PARALLEL_FOR(s->k * npq)
    for (int64_t t = 0; t < s->n * s->k; t++) {
        const int64_t img = t / s->k, k = t % s->k;
        memcpy(dyt + k * npq + img * pq, dy + t * pq, (size_t)pq * sizeof(float));
    }
    if (dw)
        GA_TRY(ga_gemm_cpu(dw, dyt, col, 0, 1, s->k, crs, npq, npq, npq, crs, 1.0f, 0.0f,
                           GA_VARIANT_FAST));
    if (db) {
        GA_PARALLEL_FOR(s->k * npq)
        for (int64_t k = 0; k < s->k; k++) {
            float acc = 0.0f;
            for (int64_t i = 0; i < npq; i++)
                acc += dyt[k * npq + i];
            db[k] = acc;
        }
    }
    if (dx) {
        GA_TRY(ga_gemm_cpu(dcol, w, dyt, 1, 0, crs, npq, s->k, crs, npq, npq, 1.0f, 0.0f,
                           GA_VARIANT_FAST));
        col2im(dx, dcol, s);
    }
    return GA_OK;
}
