/* Winograd's minimal filtering F(m x m, 3 x 3) on the CPU, m = 2 or 4.
 *
 * The output is cut into m x m tiles; tile t of channel c reads the
 * (m + 2) x (m + 2) input window d at (ti m - pad, tj m - pad). With a = m + 2
 * and the matrices below, one tile of one output channel k is
 *     Y = AT [ sum_c (G g_kc G^T) . (BT d_c B) ] AT^T        (. elementwise)
 * so each of the a^2 transform-domain positions xi is one GEMM over the
 * channels: M[xi] (k, tiles) = U[xi] (k, c) V[xi] (c, tiles). That does
 * a^2 / m^2 multiplications per output where the direct form does 9:
 * 2.25x fewer for F(2x2), 4x for F(4x4) (less the tiles' overhang).
 *
 * The data gradient is the same correlation run on dy with the flipped,
 * transposed filter and padding 2 - pad; the weight gradient is
 * dU[xi] (k, c) = sum over tiles of (A dY A^T)[xi] (k, t) V[xi] (c, t), then
 * dw = G^T dU G. Batches go in chunks of images per thread, as the im2col path
 * (conv_cpu.c), and the chunk's output lands in the same (k, nb p q) layout, so
 * the bias + activation and max-pool epilogues are the shared ones.
 *
 * The transforms are written once, over a matrix that is a compile-time
 * constant after inlining: zero coefficients drop out, and each pass is a loop
 * over a row of pixels (or of tiles) that vectorises. */
#include "cpu/winograd_cpu.h"

#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "core/alloc.h"
#include "cpu/conv_cpu.h"
#include "cpu/omp_util.h"

#define INLINE static inline __attribute__((always_inline))

/* F(2x2, 3x3), a = 4, interpolation points 0, 1, -1, infinity. */
static const float BT2[4 * 4] = {1, 0, -1, 0, 0, 1, 1, 0, 0, -1, 1, 0, 0, 1, 0, -1};
static const float G2[4 * 3] = {1, 0, 0, 0.5f, 0.5f, 0.5f, 0.5f, -0.5f, 0.5f, 0, 0, 1};
static const float AT2[2 * 4] = {1, 1, 1, 0, 0, 1, -1, -1};
static const float A2[4 * 2] = {1, 0, 1, 1, 1, -1, 0, -1}; /* AT2 transposed */

/* F(4x4, 3x3), a = 6, points 0, 1, -1, 2, -2, infinity. */
static const float BT4[6 * 6] = {4, 0, -5, 0,  1, 0, 0, -4, -4, 1, 1, 0, 0, 4, -4, -1, 1, 0,
                                 0, -2, -1, 2, 1, 0, 0, 2,  -1, -2, 1, 0, 0, 4, 0,  -5, 0, 1};
static const float G4[6 * 3] = {1.0f / 4,  0,          0,         -1.0f / 6, -1.0f / 6, -1.0f / 6,
                                -1.0f / 6, 1.0f / 6,   -1.0f / 6, 1.0f / 24, 1.0f / 12, 1.0f / 6,
                                1.0f / 24, -1.0f / 12, 1.0f / 6,  0,         0,         1};
static const float AT4[4 * 6] = {1, 1, 1, 1, 1, 0, 0, 1, -1, 2, -2, 0, 0, 1, 1, 4, 4, 0, 0, 1, -1, 8, -8, 1};
static const float A4[6 * 4] = {1, 0, 0, 0, 1, 1, 1, 1, 1, -1, 1, -1, 1, 2, 4, 8, 1, -2, 4, -8, 0, 0, 0, 1};

/* Tiles are transformed LANES at a time, one per vector lane: a block of tiles
 * is gathered into a small buffer lane-minor, transformed with whole-vector
 * arithmetic, and stored (inputs) or scattered into the planes (outputs). The
 * tiles of a chunk of images are numbered t = img T + ti tw + tj. */
#define LANES 16

typedef struct {
    int64_t th, tw; /* tiles down and across one plane */
} tile_grid;

static tile_grid grid_over(int64_t h, int64_t w, int m)
{
    tile_grid g = {(h + m - 1) / m, (w + m - 1) / m};
    return g;
}

/* The planes of a chunk: plane (img, ch) starts at base + img img_stride +
 * ch ch_stride and is h x w, row stride w. */
typedef struct {
    const float *base;
    int64_t img_stride, ch_stride, h, w;
} planes;

/* LANES floats as one value (GCC vector extension): compiled to the widest
 * vectors of each clone (one zmm, two ymm, four xmm). */
typedef float lanes_f __attribute__((vector_size(LANES * sizeof(float))));

/* by macro: a function returning a 64-byte vector has a different ABI per clone */
#define LOAD_LANES(v, p) memcpy(&(v), (p), sizeof(lanes_f))

/* Where transformed tiles go: position xi of tile t (counted from the block's
 * first tile) in channel ch is at xi * xi_stride + (t / nr) * panel +
 * ch * nr + t % nr. With nr = the micro-kernel's NR and panel = channels * NR
 * that is the GEMM's packed B operand; nr = the tile count gives plain rows
 * (ch, t). */
typedef struct {
    float *base;
    int64_t xi_stride, nr, panel;
} tile_store;

/* Forward transform of tiles [tb, te) of `channels` planes: for the win x win
 * window d at (ti m - pad, tj m - pad) of each (zero outside the plane), the
 * a x a values (L d L^T)[xi], L a x win. Inputs use L = BT (win = a), output
 * gradients L = A (win = m, pad 0). */
INLINE void transform_in(tile_store vs, planes pl, int64_t channels, int64_t tb, int64_t te, tile_grid g, int64_t pad,
                         const int a, const int win, const int m, const float *L)
{
    const int64_t T = g.th * g.tw;
    float d[6 * 6 * LANES] __attribute__((aligned(64)));
    for (int64_t t0 = tb; t0 < te; t0 += LANES) {
        const int lanes = te - t0 < LANES ? (int)(te - t0) : LANES;
        /* each lane's window: its image, corner, and offset when inside (-1: on the border) */
        int64_t at[LANES], h0[LANES], w0[LANES];
        const float *img_base[LANES];
        for (int l = 0; l < LANES; l++) {
            const int64_t t = t0 + (l < lanes ? l : 0), img = t / T, ti = t % T / g.tw, tj = t % g.tw;
            h0[l] = ti * m - pad;
            w0[l] = tj * m - pad;
            img_base[l] = pl.base + img * pl.img_stride;
            at[l] = h0[l] >= 0 && w0[l] >= 0 && h0[l] + win <= pl.h && w0[l] + win <= pl.w ? h0[l] * pl.w + w0[l] : -1;
        }
        const int64_t rel = t0 - tb, off = rel / vs.nr * vs.panel + rel % vs.nr;
        const int contiguous = rel % vs.nr + lanes <= vs.nr;
        for (int64_t ch = 0; ch < channels; ch++) {
            for (int l = 0; l < LANES; l++) { /* gather: d[i][j][lane] */
                const float *p = img_base[l] + ch * pl.ch_stride;
                if (at[l] >= 0) {
                    const float *q = p + at[l];
                    for (int i = 0; i < win; i++)
                        for (int j = 0; j < win; j++)
                            d[(i * win + j) * LANES + l] = q[i * pl.w + j];
                    continue;
                }
                for (int i = 0; i < win; i++)
                    for (int j = 0; j < win; j++) {
                        const int64_t h = h0[l] + i, w = w0[l] + j;
                        d[(i * win + j) * LANES + l] = h >= 0 && h < pl.h && w >= 0 && w < pl.w ? p[h * pl.w + w] : 0.0f;
                    }
            }
            lanes_f t[6 * 6];
#pragma GCC unroll 6
            for (int r = 0; r < a; r++) /* down: t[r][j] = sum_i L[r][i] d[i][j] */
#pragma GCC unroll 6
                for (int j = 0; j < win; j++) {
                    lanes_f acc = {0};
#pragma GCC unroll 6
                    for (int i = 0; i < win; i++)
                        if (L[r * win + i] != 0.0f) {
                            lanes_f di;
                            LOAD_LANES(di, d + (i * win + j) * LANES);
                            acc += L[r * win + i] * di;
                        }
                    t[r * win + j] = acc;
                }
            float *dst = vs.base + off + ch * vs.nr;
#pragma GCC unroll 6
            for (int r = 0; r < a; r++) /* across: v[r a + c] = sum_j L[c][j] t[r][j] */
#pragma GCC unroll 6
                for (int c = 0; c < a; c++) {
                    lanes_f acc = {0};
#pragma GCC unroll 6
                    for (int j = 0; j < win; j++)
                        if (L[c * win + j] != 0.0f)
                            acc += L[c * win + j] * t[r * win + j];
                    float *o = dst + (r * a + c) * vs.xi_stride;
                    if (lanes == LANES && contiguous) {
                        memcpy(o, &acc, sizeof acc);
                        continue;
                    }
                    float part[LANES];
                    memcpy(part, &acc, sizeof part);
                    for (int l = 0; l < lanes; l++) {
                        const int64_t rl = rel + l;
                        vs.base[(rl / vs.nr) * vs.panel + rl % vs.nr + ch * vs.nr + (r * a + c) * vs.xi_stride] =
                            part[l];
                    }
                }
        }
    }
}

typedef float f4 __attribute__((vector_size(4 * sizeof(float))));
typedef int i4 __attribute__((vector_size(4 * sizeof(int))));

/* One output row of four neighbouring m x m tiles (m = 2 or 4): y holds their
 * values lane-minor (y[jj * LANES + lane], lanes 0..3 the tiles); dst gets the
 * 4 m floats of the row, the last tile cut to last_cols. A 4x4 transpose (m = 4)
 * or an interleave (m = 2) of 4-float vectors instead of 4 m scalar copies. */
static inline void store_row4(float *dst, const float *y, const int m, int64_t last_cols)
{
    f4 v[4];
    for (int jj = 0; jj < m; jj++)
        memcpy(&v[jj], y + jj * LANES, sizeof(f4));
    const i4 lo = {0, 4, 1, 5}, hi = {2, 6, 3, 7};
    if (m == 2) {
        const f4 r0 = __builtin_shuffle(v[0], v[1], lo), r1 = __builtin_shuffle(v[0], v[1], hi);
        memcpy(dst, &r0, sizeof r0);
        memcpy(dst + 4, &r1, (size_t)(2 + last_cols) * sizeof(float));
        return;
    }
    const f4 t0 = __builtin_shuffle(v[0], v[1], lo), t1 = __builtin_shuffle(v[0], v[1], hi);
    const f4 t2 = __builtin_shuffle(v[2], v[3], lo), t3 = __builtin_shuffle(v[2], v[3], hi);
    const i4 first = {0, 1, 4, 5}, second = {2, 3, 6, 7};
    const f4 r0 = __builtin_shuffle(t0, t2, first), r1 = __builtin_shuffle(t0, t2, second);
    const f4 r2 = __builtin_shuffle(t1, t3, first), r3 = __builtin_shuffle(t1, t3, second);
    memcpy(dst, &r0, sizeof r0);
    memcpy(dst + 4, &r1, sizeof r1);
    memcpy(dst + 8, &r2, sizeof r2);
    memcpy(dst + 12, &r3, (size_t)last_cols * sizeof(float));
}

/* Back from the transform domain: for tiles [tb, te) of `channels` output
 * planes, Y = AT M AT^T from M[xi] = v[xi * xi_stride + ch * ch_stride + t - tb],
 * cropped to the plane. */
INLINE void transform_out(planes pl, int64_t channels, const float *v, int64_t xi_stride, int64_t ch_stride,
                          int64_t tb, int64_t te, tile_grid g, const int a, const int m, const float *AT)
{
    const int64_t T = g.th * g.tw;
    float y[4 * 4 * LANES] __attribute__((aligned(64)));
    for (int64_t t0 = tb; t0 < te; t0 += LANES) {
        const int lanes = te - t0 < LANES ? (int)(te - t0) : LANES;
        int64_t at[LANES], rows[LANES], cols[LANES];
        float *img_base[LANES];
        int row4[LANES]; /* lanes l .. l + 3 are consecutive tiles of one tile row */
        for (int l = 0; l < lanes; l++) {
            const int64_t t = t0 + l, img = t / T, ti = t % T / g.tw, tj = t % g.tw;
            img_base[l] = (float *)pl.base + img * pl.img_stride;
            at[l] = ti * m * pl.w + tj * m;
            rows[l] = pl.h - ti * m < m ? pl.h - ti * m : m;
            cols[l] = pl.w - tj * m < m ? pl.w - tj * m : m;
            row4[l] = l + 4 <= lanes && tj + 4 <= g.tw;
        }
        for (int64_t ch = 0; ch < channels; ch++) {
            const float *src = v + ch * ch_stride + (t0 - tb);
            lanes_f mv[6 * 6];
            for (int xi = 0; xi < a * a; xi++) {
                if (lanes == LANES) {
                    LOAD_LANES(mv[xi], src + xi * xi_stride);
                } else {
                    float part[LANES] = {0};
                    memcpy(part, src + xi * xi_stride, (size_t)lanes * sizeof(float));
                    LOAD_LANES(mv[xi], part);
                }
            }
            lanes_f t[6 * 4];
#pragma GCC unroll 6
            for (int r = 0; r < a; r++) /* across: t[r][jj] = sum_c AT[jj][c] M[r a + c] */
#pragma GCC unroll 4
                for (int jj = 0; jj < m; jj++) {
                    lanes_f acc = {0};
#pragma GCC unroll 6
                    for (int c = 0; c < a; c++)
                        if (AT[jj * a + c] != 0.0f)
                            acc += AT[jj * a + c] * mv[r * a + c];
                    t[r * m + jj] = acc;
                }
#pragma GCC unroll 4
            for (int ii = 0; ii < m; ii++) /* down: y[ii][jj] = sum_r AT[ii][r] t[r][jj] */
#pragma GCC unroll 4
                for (int jj = 0; jj < m; jj++) {
                    lanes_f acc = {0};
#pragma GCC unroll 6
                    for (int r = 0; r < a; r++)
                        if (AT[ii * a + r] != 0.0f)
                            acc += AT[ii * a + r] * t[r * m + jj];
                    memcpy(y + (ii * m + jj) * LANES, &acc, sizeof acc);
                }
            for (int l = 0; l < lanes;) { /* scatter, cropped to the plane */
                float *p = img_base[l] + ch * pl.ch_stride + at[l];
                if (row4[l]) { /* four tiles side by side: their rows, transposed out of the lanes */
                    for (int ii = 0; ii < m; ii++)
                        if (ii < rows[l])
                            store_row4(p + ii * pl.w, y + ii * m * LANES + l, m, cols[l + 3]);
                    l += 4;
                    continue;
                }
                for (int ii = 0; ii < m; ii++) /* constant bounds: every y read was written */
                    for (int jj = 0; jj < m; jj++)
                        if (ii < rows[l] && jj < cols[l])
                            p[ii * pl.w + jj] = y[(ii * m + jj) * LANES + l];
                l++;
            }
        }
    }
}

/* The three transforms for each tile size, compiled with the matrix as a
 * constant, for the vector widths this CPU may have. */
GA_SIMD_CLONES
static void input_tiles2(tile_store v, planes p, int64_t ch, int64_t tb, int64_t te, tile_grid g, int64_t pad)
{
    transform_in(v, p, ch, tb, te, g, pad, 4, 4, 2, BT2);
}
GA_SIMD_CLONES
static void input_tiles4(tile_store v, planes p, int64_t ch, int64_t tb, int64_t te, tile_grid g, int64_t pad)
{
    transform_in(v, p, ch, tb, te, g, pad, 6, 6, 4, BT4);
}
GA_SIMD_CLONES
static void grad_tiles2(tile_store v, planes p, int64_t ch, int64_t tb, int64_t te, tile_grid g, int64_t pad)
{
    transform_in(v, p, ch, tb, te, g, pad, 4, 2, 2, A2);
}
GA_SIMD_CLONES
static void grad_tiles4(tile_store v, planes p, int64_t ch, int64_t tb, int64_t te, tile_grid g, int64_t pad)
{
    transform_in(v, p, ch, tb, te, g, pad, 6, 4, 4, A4);
}
GA_SIMD_CLONES
static void output_tiles2(planes p, int64_t ch, const float *v, int64_t xs, int64_t cs, int64_t tb, int64_t te,
                          tile_grid g)
{
    transform_out(p, ch, v, xs, cs, tb, te, g, 4, 2, AT2);
}
GA_SIMD_CLONES
static void output_tiles4(planes p, int64_t ch, const float *v, int64_t xs, int64_t cs, int64_t tb, int64_t te,
                          tile_grid g)
{
    transform_out(p, ch, v, xs, cs, tb, te, g, 6, 4, AT4);
}

typedef void (*tiles_in_fn)(tile_store, planes, int64_t, int64_t, int64_t, tile_grid, int64_t);
typedef void (*tiles_out_fn)(planes, int64_t, const float *, int64_t, int64_t, int64_t, int64_t, tile_grid);

/* One tile size: its matrices and transforms. */
typedef struct {
    int m, a;
    const float *G;
    tiles_in_fn input, grad;
    tiles_out_fn output;
} wino;

static const wino WINO2 = {2, 4, G2, input_tiles2, grad_tiles2, output_tiles2};
static const wino WINO4 = {4, 6, G4, input_tiles4, grad_tiles4, output_tiles4};

static const wino *wino_for(int m) { return m == 2 ? &WINO2 : m == 4 ? &WINO4 : NULL; }

static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }
static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

/* u[xi * xi_stride] = (G g G^T)[xi], g the 3x3 filter at g0 with row and column
 * strides gr, gc (negative strides read it flipped). */
static void filter_tile(float *u, int64_t xi_stride, const float *g0, int64_t gr, int64_t gc, const wino *wk)
{
    const int a = wk->a;
    float t[6][3];
    for (int i = 0; i < a; i++)
        for (int s = 0; s < 3; s++)
            t[i][s] = wk->G[i * 3] * g0[s * gc] + wk->G[i * 3 + 1] * g0[gr + s * gc] +
                      wk->G[i * 3 + 2] * g0[2 * gr + s * gc];
    for (int i = 0; i < a; i++)
        for (int j = 0; j < a; j++)
            u[(i * a + j) * xi_stride] =
                t[i][0] * wk->G[j * 3] + t[i][1] * wk->G[j * 3 + 1] + t[i][2] * wk->G[j * 3 + 2];
}

/* The transformed filters, packed as the micro-kernel's A operand once per
 * call: for each xi, rows (output channels o) in panels of MR, zero-padded,
 * each panel stored (input channel i, row in panel). Forward: o = k, i = c,
 * from w[k][c]; flipped (data gradient): o = c, i = k, from w[k][c] turned by
 * 180 degrees. Returns the stride between the xi. */
static int64_t pack_filters(float *u, const float *w, const ga_conv_shape *s, const wino *wk, int flipped, int mr)
{
    const int64_t outs = flipped ? s->c : s->k, ins = flipped ? s->k : s->c;
    const int64_t xi_stride = round_up(outs, mr) * ins, kc = s->k * s->c;
    memset(u, 0, (size_t)(wk->a * wk->a * xi_stride) * sizeof(float));
    GA_PARALLEL_FOR(kc * 64)
    for (int64_t t = 0; t < kc; t++) {
        const int64_t k = t / s->c, c = t % s->c, o = flipped ? c : k, i = flipped ? k : c;
        const float *g = w + t * 9;
        float *dst = u + (o / mr) * mr * ins + i * mr + o % mr;
        if (flipped)
            filter_tile(dst, xi_stride, g + 8, -3, -1, wk);
        else
            filter_tile(dst, xi_stride, g, 3, 1, wk);
    }
    return xi_stride;
}

/* dw[k][c] = G^T dU[.][k][c] G for the summed transform-domain gradient du. */
static void filter_grad(float *dw, const float *du, const ga_conv_shape *s, const wino *wk)
{
    const int a = wk->a;
    const int64_t kc = s->k * s->c;
    GA_PARALLEL_FOR(kc * 64)
    for (int64_t t = 0; t < kc; t++) {
        float x[6][6], tmp[3][6];
        for (int i = 0; i < a; i++)
            for (int j = 0; j < a; j++)
                x[i][j] = du[(i * a + j) * kc + t];
        for (int r = 0; r < 3; r++)
            for (int j = 0; j < a; j++) {
                float acc = 0.0f;
                for (int i = 0; i < a; i++)
                    acc += wk->G[i * 3 + r] * x[i][j];
                tmp[r][j] = acc;
            }
        for (int r = 0; r < 3; r++)
            for (int c = 0; c < 3; c++) {
                float acc = 0.0f;
                for (int j = 0; j < a; j++)
                    acc += tmp[r][j] * wk->G[j * 3 + c];
                dw[t * 9 + r * 3 + c] = acc;
            }
    }
}

/* The x planes of images [img0, img0 + nb). */
static planes x_planes(const float *x, const ga_conv_shape *s, int64_t img0)
{
    planes p = {x + img0 * s->c * s->h * s->w, s->c * s->h * s->w, s->h * s->w, s->h, s->w};
    return p;
}

/* A chunk's (ch, nb p q) buffer (ws, dyt) as planes of p x q. */
static planes chunk_planes(const float *buf, const ga_conv_shape *s, int64_t nb)
{
    planes p = {buf, s->p * s->q, nb * s->p * s->q, s->p, s->q};
    return p;
}

/* A correlation by Winograd, for the forward pass and the data gradient:
 * `outs` output planes (tile grid g over them, nt tiles) from `ins` input planes
 * (padding pad) and the packed filters u (pack_filters). Tiles go in blocks of
 * bt: transform the block's inputs into packed B panels, one micro-kernel call
 * per (xi, MR rows, NR tiles), transform the block back, so a block's work
 * stays in the core's L2 and no operand is packed twice. work: 64-byte aligned
 * (the micro-kernels load B aligned), correlation_floats of it. */
typedef struct {
    const wino *wk;
    const ga_gemm_ukernel *uk;
    const float *u;
    int64_t u_xi, ins, outs, pad, bt;
    tile_grid g;
} correlation;

/* Its scratch, in floats (a multiple of 16: what follows stays 64-byte aligned,
 * as the packed B operand must be). */
static int64_t correlation_floats(const correlation *cr)
{
    return round_up(cr->wk->a * cr->wk->a * (cr->ins + round_up(cr->outs, cr->uk->mr)) * cr->bt, 16);
}

/* The tile block: a multiple of max(NR, LANES) whose transformed inputs and
 * products take about 64 Ki floats (256 KiB: half of a 512 KiB L2). */
static correlation make_correlation(const wino *wk, const float *u, int64_t u_xi, int64_t ins, int64_t outs,
                                    int64_t pad, tile_grid g)
{
    correlation cr = {wk, ga_gemm_cpu_ukernel(), u, u_xi, ins, outs, pad, 0, g};
    const int64_t unit = max64(cr.uk->nr, LANES), per_tile = wk->a * wk->a * (ins + outs);
    cr.bt = max64(1, (64 * 1024) / (per_tile * unit)) * unit;
    return cr;
}

static void correlate(const correlation *cr, planes out, planes in, int64_t nt, float *work)
{
    const wino *wk = cr->wk;
    const int a2 = wk->a * wk->a, mr = cr->uk->mr, nr = cr->uk->nr;
    const int64_t outs_pad = round_up(cr->outs, mr), vp_xi = round_up(cr->bt, nr) * cr->ins;
    float *vp = work, *mm = vp + (int64_t)a2 * vp_xi; /* mm: (xi, outs_pad, bt) */
    for (int64_t tb = 0; tb < nt; tb += cr->bt) {
        const int64_t te = min64(nt, tb + cr->bt), nb = te - tb, ld = round_up(nb, nr);
        const tile_store vs = {vp, vp_xi, nr, cr->ins * nr};
        if (nb % nr) /* the last panel's columns past the tiles: zeros, not stale floats */
            for (int xi = 0; xi < a2; xi++)
                for (int64_t i = 0; i < cr->ins; i++)
                    memset(vp + xi * vp_xi + (nb / nr) * cr->ins * nr + i * nr + nb % nr, 0,
                           (size_t)(nr - nb % nr) * sizeof(float));
        wk->input(vs, in, cr->ins, tb, te, cr->g, cr->pad);
        for (int xi = 0; xi < a2; xi++)
            for (int64_t o = 0; o < cr->outs; o += mr)
                for (int64_t j = 0; j < nb; j += nr)
                    cr->uk->fn(cr->ins, cr->u + xi * cr->u_xi + o * cr->ins, vp + xi * vp_xi + j * cr->ins,
                               mm + (xi * outs_pad + o) * ld + j, ld, 0.0f, min64(mr, cr->outs - o),
                               min64(nr, nb - j));
        wk->output(out, cr->outs, mm, outs_pad * ld, ld, tb, te, cr->g);
    }
}

ga_status ga_winograd_forward_cpu(float *y, int32_t *arg, const ga_pool_shape *ps, const float *x, const float *w,
                                  const float *b, ga_act act, const ga_conv_shape *s, int m)
{
    const wino *wk = wino_for(m);
    if (!wk || !ga_winograd_shape(s))
        return ga_fail(GA_ERR_VALUE, "conv2d: Winograd F(%dx%d, 3x3) needs a 3x3 kernel, stride 1 and padding <= 2", m,
                       m);
    const int mr = ga_gemm_cpu_ukernel()->mr;
    const int64_t a2 = wk->a * wk->a, pq = s->p * s->q;
    const tile_grid g = grid_over(s->p, s->q, m);
    const int64_t T = g.th * g.tw;
    float *u;
    GA_TRY(ga_thread_scratch(GA_SCRATCH_WINOGRAD_FILTER, (size_t)(a2 * round_up(s->k, mr) * s->c), &u));
    const int64_t u_xi = pack_filters(u, w, s, wk, 0, mr);
    const correlation cr = make_correlation(wk, u, u_xi, s->c, s->k, s->pad, g);
    /* per thread: the correlation's block, and the chunk's output before the epilogue */
    const ga_conv_chunks pl = ga_conv_plan_chunks(s, s->k * pq + s->c * s->h * s->w);
    const int64_t work = correlation_floats(&cr) + pl.chunk * s->k * pq;
    ga_conv_error err = {GA_OK, ""};
#ifdef _OPENMP
#pragma omp parallel num_threads(pl.nt) if (pl.nt > 1)
#endif
    {
        const int tid = ga_conv_thread_id(), nthr = ga_conv_team_size();
        float *buf;
        ga_status st = ga_thread_scratch(GA_SCRATCH_WINOGRAD, (size_t)work, &buf);
        for (int64_t ci = tid; ci < pl.nchunks && st == GA_OK; ci += nthr) {
            const int64_t img0 = ci * pl.chunk, nb = s->n - img0 < pl.chunk ? s->n - img0 : pl.chunk;
            float *out = buf + correlation_floats(&cr);
            correlate(&cr, chunk_planes(out, s, nb), x_planes(x, s, img0), nb * T, buf);
            ga_conv_store(y, arg, out, b, act, s, ps, img0, nb);
        }
        ga_conv_keep_error(&err, st);
    }
    return err.st == GA_OK ? GA_OK : ga_fail(err.st, "%s", err.msg);
}

/* a^2 GEMMs of the weight gradient: du[xi] (k, c) (+)= vdy[xi] (k, nt) v[xi] (c, nt)^T. */
static ga_status weight_products(float *du, const float *vdy, const float *v, const ga_conv_shape *s, int64_t nt,
                                 float beta, const wino *wk)
{
    for (int xi = 0; xi < wk->a * wk->a; xi++)
        GA_TRY(ga_gemm_cpu_threads(du + xi * s->k * s->c, vdy + xi * s->k * nt, v + xi * s->c * nt, 0, 1, s->k, s->c,
                                   nt, nt, nt, s->c, 1.0f, beta, GA_VARIANT_FAST, 1));
    return GA_OK;
}

ga_status ga_winograd_backward_cpu(float *dx, float *dw, float *db, const float *x, const float *w, const float *dy,
                                   const float *ypool, const int32_t *arg, ga_act act, const ga_conv_shape *s,
                                   const ga_pool_shape *ps, int m)
{
    const wino *wk = wino_for(m);
    if (!wk || !ga_winograd_shape(s))
        return ga_fail(GA_ERR_VALUE,
                       "conv2d_backward: Winograd F(%dx%d, 3x3) needs a 3x3 kernel, stride 1 and padding <= 2", m, m);
    if (!dw)
        db = NULL;
    const int mr = ga_gemm_cpu_ukernel()->mr;
    const int64_t a2 = wk->a * wk->a, pq = s->p * s->q, hw = s->h * s->w, kc = s->k * s->c;
    const tile_grid g = grid_over(s->p, s->q, m);  /* dw: tiles of the output */
    const tile_grid gx = grid_over(s->h, s->w, m); /* dx: tiles of the input */
    const int64_t T = g.th * g.tw, Tx = gx.th * gx.tw;
    correlation cr = {0};
    if (dx) {
        float *u;
        GA_TRY(ga_thread_scratch(GA_SCRATCH_WINOGRAD_FILTER, (size_t)(a2 * round_up(s->c, mr) * s->k), &u));
        const int64_t u_xi = pack_filters(u, w, s, wk, 1, mr);
        cr = make_correlation(wk, u, u_xi, s->k, s->c, 2 - s->pad, gx);
    }
    /* per image: dy gathered, then the weight gradient's transformed x and dy */
    const int64_t per_image = s->k * pq + (dw ? a2 * T * (s->c + s->k) : 0);
    const ga_conv_chunks pl = ga_conv_plan_chunks(s, per_image);
    const int64_t corr_at = round_up(pl.chunk * per_image, 16); /* the correlation's scratch: aligned */
    const int64_t work = corr_at + (dx ? correlation_floats(&cr) : 0);
    float *partial[GA_CONV_MAX_THREADS];
    ga_conv_error err = {GA_OK, ""};
#ifdef _OPENMP
#pragma omp parallel num_threads(pl.nt) if (pl.nt > 1)
#endif
    {
        const int tid = ga_conv_thread_id(), nthr = ga_conv_team_size();
        float *buf, *du = NULL;
        ga_status st = ga_thread_scratch(GA_SCRATCH_WINOGRAD, (size_t)work, &buf);
        if (st == GA_OK && dw)
            st = ga_thread_scratch(GA_SCRATCH_CONV, (size_t)(a2 * kc + s->k), &du);
        partial[tid] = du;
        for (int64_t ci = tid; ci < pl.nchunks && st == GA_OK; ci += nthr) {
            const int64_t img0 = ci * pl.chunk, nb = s->n - img0 < pl.chunk ? s->n - img0 : pl.chunk;
            const int64_t first = ci == tid, npq = nb * pq;
            float *dyt = buf, *rest = dyt + s->k * npq;
            ga_conv_gather_dy(dyt, du ? du + a2 * kc : NULL, (int)first, dy, ypool, arg, act, s, ps, img0, nb);
            if (dw) {
                const int64_t nt = nb * T;
                float *v = rest, *vdy = v + a2 * s->c * nt;
                const tile_store vs = {v, s->c * nt, nt, 0}, dys = {vdy, s->k * nt, nt, 0};
                wk->input(vs, x_planes(x, s, img0), s->c, 0, nt, g, s->pad);
                wk->grad(dys, chunk_planes(dyt, s, nb), s->k, 0, nt, g, 0);
                st = weight_products(du, vdy, v, s, nt, first ? 0.0f : 1.0f, wk);
                if (st != GA_OK)
                    break;
            }
            if (dx) {
                const planes dxp = {dx + img0 * s->c * hw, s->c * hw, hw, s->h, s->w};
                correlate(&cr, dxp, chunk_planes(dyt, s, nb), nb * Tx, buf + corr_at);
            }
        }
        ga_conv_keep_error(&err, st);
    }
    if (err.st != GA_OK)
        return ga_fail(err.st, "%s", err.msg);
    if (dw) { /* the threads' partial sums (their scratch outlives the region), in a fixed order */
        float *sum = partial[0];
        for (int t = 1; t < pl.nt; t++)
            for (int64_t i = 0; i < a2 * kc + s->k; i++)
                sum[i] += partial[t][i];
        filter_grad(dw, sum, s, wk);
        if (db)
            memcpy(db, sum + a2 * kc, (size_t)s->k * sizeof(float));
    }
    return GA_OK;
}
