/* kernel='auto' for convolutions on the CPU: which algorithm is fastest for a
 * shape is measured, as cuDNN's benchmark mode does, not guessed. im2col +
 * GEMM and Winograd F(2x2) and F(4x4) run one forward and one backward (both
 * gradients) on scratch data of the shape, interleaved, best of a few rounds;
 * the winner is kept per (shape, thread count) for the life of the process,
 * so a network measures each layer shape once and then always runs the same
 * kernels (and gives the same numbers). */
#define _POSIX_C_SOURCE 200809L
#include "cpu/kernels_cpu.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/alloc.h"
#include "core/rng.h"
#include "core/threads.h"
#include "cpu/winograd_cpu.h"

/* At most this many images per thread are timed: enough for several full
 * chunks a thread. Fewer misrank: at 8 a thread F(2x2) timed ahead of F(4x4)
 * on the reference CNN's second conv, which at batch 128 runs 10% slower. */
#define CHOOSE_IMAGES_PER_THREAD 32
#define CHOOSE_ROUNDS 5
#define CHOOSE_CACHE 64
#define CHOOSE_MARGIN 0.05 /* Winograd is taken only when at least 5% faster than im2col */
#define CHOOSE_MAX_FLOATS ((int64_t)64 << 20) /* the scratch data: at most 256 MiB */

typedef struct {
    int64_t c, h, w, k, pad, n;
    int threads, variant;
} choice;

static choice g_cache[CHOOSE_CACHE];
static int g_cached, g_next;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static const int CANDIDATES[] = {GA_VARIANT_FAST, GA_VARIANT_WINOGRAD2, GA_VARIANT_WINOGRAD4};
#define NCAND ((int)(sizeof CANDIDATES / sizeof CANDIDATES[0]))

/* The floats measure() allocates for shape s. */
static int64_t measure_floats(const ga_conv_shape *s)
{
    const int64_t nx = s->n * s->c * s->h * s->w, nwt = s->k * s->c * 9, ny = s->n * s->k * s->p * s->q;
    const int64_t nws = ga_conv_bwd_ws_floats(s) > ga_conv_fwd_ws_floats(s) ? ga_conv_bwd_ws_floats(s)
                                                                             : ga_conv_fwd_ws_floats(s);
    return 2 * nx + 2 * nwt + 2 * s->k + 2 * ny + ga_conv_col_floats(s) + nws;
}

/* Time the candidates on shape s (n already cut down); *best = the fastest. */
static ga_status measure(int *best, const ga_conv_shape *s)
{
    const int64_t nx = s->n * s->c * s->h * s->w, nwt = s->k * s->c * 9, ny = s->n * s->k * s->p * s->q;
    const int64_t ncol = ga_conv_col_floats(s);
    const int64_t total = measure_floats(s);
    float *buf;
    GA_TRY(ga_host_alloc((void **)&buf, (size_t)total * sizeof(float)));
    float *x = buf, *dx = x + nx, *w = dx + nx, *dw = w + nwt, *b = dw + nwt, *db = b + s->k, *y = db + s->k;
    float *dy = y + ny, *col = dy + ny, *ws = col + ncol; /* ws: the rest */
    for (int64_t i = 0; i < nx; i++)
        x[i] = ga_rng_uniform(1, (uint64_t)i) - 0.5f;
    for (int64_t i = 0; i < nwt; i++)
        w[i] = 0.2f * (ga_rng_uniform(2, (uint64_t)i) - 0.5f);
    for (int64_t i = 0; i < ny; i++)
        dy[i] = ga_rng_uniform(3, (uint64_t)i) - 0.5f;
    memset(b, 0, (size_t)s->k * sizeof(float));
    const ga_act relu = {GA_ACT_RELU, 0.0f};
    double t_best[NCAND];
    ga_status st = GA_OK;
    for (int round = 0; round <= CHOOSE_ROUNDS && st == GA_OK; round++) /* round 0 warms up (scratch, caches) */
        for (int i = 0; i < NCAND && st == GA_OK; i++) {
            const double t0 = now_s();
            st = ga_conv2d_forward_cpu(y, col, ws, x, w, b, relu, s, CANDIDATES[i]);
            if (st == GA_OK)
                st = ga_conv2d_backward_cpu(dx, dw, db, ws, x, col, w, dy, s, CANDIDATES[i]);
            const double t = now_s() - t0;
            if (round == 0 || t < t_best[i])
                t_best[i] = round == 0 ? 1e300 : t;
        }
    ga_host_free(buf);
    GA_TRY(st);
    /* Winograd must win clearly: where the two are within the timing noise, im2col's
     * rounding (a direct sum) and a stable choice are worth more than a few percent */
    *best = CANDIDATES[0];
    double fastest = t_best[0] * (1.0 - CHOOSE_MARGIN);
    for (int i = 1; i < NCAND; i++)
        if (t_best[i] < fastest) {
            fastest = t_best[i];
            *best = CANDIDATES[i];
        }
    return GA_OK;
}

/* GPUACCEL_CONV_KERNEL: a forced algorithm (-1: none asked for). */
static ga_status forced_variant(int *variant)
{
    static const ga_conv_kernel_name names[GA_CONV_KERNEL_COUNT] = GA_CONV_KERNEL_NAMES;
    *variant = -1;
    const char *env = getenv("GPUACCEL_CONV_KERNEL");
    if (!env || !*env)
        return GA_OK;
    for (int i = 0; i < GA_CONV_KERNEL_COUNT; i++)
        if (strcmp(env, names[i].name) == 0 && names[i].variant != GA_VARIANT_REF) {
            /* GA_CONV_AUTO (-1) for "auto"; "implicit" is a GPU algorithm: the variable is
             * process-wide, so on the CPU it does not apply and the choice is measured */
            *variant = names[i].variant == GA_VARIANT_IMPLICIT ? GA_CONV_AUTO : names[i].variant;
            return GA_OK;
        }
    return ga_fail(GA_ERR_VALUE,
                   "GPUACCEL_CONV_KERNEL=%s: expected auto, im2col, winograd, winograd2, winograd4 or implicit", env);
}

ga_status ga_conv2d_choose_cpu(int *variant, const ga_conv_shape *s)
{
    if (!variant || !s)
        return ga_fail(GA_ERR_VALUE, "conv2d_choose: NULL argument");
    *variant = GA_VARIANT_FAST;
    GA_TRY(ga_check_conv("conv2d_choose", s));
    if (!ga_winograd_shape(s) || s->n == 0)
        return GA_OK;
    int forced;
    GA_TRY(forced_variant(&forced));
    if (forced >= 0) {
        *variant = forced;
        return GA_OK;
    }
    const int threads = ga_get_num_threads();
    ga_conv_shape t = *s;
    t.n = 1;
    const int64_t per_image = measure_floats(&t), fit = CHOOSE_MAX_FLOATS / per_image; /* big layers: fewer */
    int64_t most = (int64_t)CHOOSE_IMAGES_PER_THREAD * (threads > 0 ? threads : 1);
    most = most < fit ? most : fit > 1 ? fit : 1;
    t.n = s->n < most ? s->n : most;
    ga_status st = GA_OK;
    pthread_mutex_lock(&g_lock); /* one measurement at a time: they would slow each other down */
    int found = 0;
    for (int i = 0; i < g_cached && !found; i++) {
        const choice *e = &g_cache[i];
        if (e->c == t.c && e->h == t.h && e->w == t.w && e->k == t.k && e->pad == t.pad && e->n == t.n &&
            e->threads == threads) {
            *variant = e->variant;
            found = 1;
        }
    }
    if (!found) {
        st = measure(variant, &t);
        if (st == GA_OK) {
            g_cache[g_next] = (choice){t.c, t.h, t.w, t.k, t.pad, t.n, threads, *variant};
            g_next = (g_next + 1) % CHOOSE_CACHE;
            if (g_cached < CHOOSE_CACHE)
                g_cached++;
        }
    }
    pthread_mutex_unlock(&g_lock);
    return st;
}
