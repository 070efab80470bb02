/* Conv2D: convolution with bias and activation fused in its epilogue (gelu and
 * silu keep z: layer.h). When the next layer is a max pool, the activation is
 * monotone and the backend has the fused kernel (l->fused_pool),
 * this layer's output is never stored: its forward is a view of its input and
 * the pool runs the two as one kernel (pool.c); backward takes the pool's
 * output gradient (the pool passes it through) and runs the fused backward. */
#include "net/layer.h"

static ga_conv_shape conv_shape(const ga_layer *l, int64_t n)
{
    ga_conv_shape s = {
        .n = n, .c = l->in[0], .h = l->in[1], .w = l->in[2],
        .k = l->spec.units, .r = l->spec.kernel_h, .s = l->spec.kernel_w,
        .stride = l->spec.stride, .pad = l->spec.pad, .p = l->out[1], .q = l->out[2],
    };
    return s;
}

extern const ga_layer_ops ga_maxpool2d_layer;

/* A max pool right after: one kernel for both, when the backend has it and
 * the activation commutes with the max (monotone, derivative from y). */
static int fuse_next(const ga_net *net, const ga_layer *l)
{
    return l[1].ops == &ga_maxpool2d_layer && net->be->conv2d_pool_forward && net->be->conv2d_pool_backward &&
           ga_act_from_output(l->spec.act.kind);
}

static ga_status infer(ga_net *net, ga_layer *l, int i)
{
    (void)net;
    const ga_layer_spec *sp = &l->spec;
    l->variant = sp->kernel; /* GA_CONV_AUTO until the first forward measures */
    const int64_t h = l->in[1], w = l->in[2];
    if (sp->units <= 0 || sp->kernel_h <= 0 || sp->kernel_w <= 0 || sp->stride <= 0 || sp->pad < 0)
        return ga_fail(GA_ERR_VALUE, "layer %d (Conv2D): filters, kernel and stride must be positive, padding >= 0", i);
    int64_t p = h + 2 * sp->pad - sp->kernel_h, q = w + 2 * sp->pad - sp->kernel_w;
    if (p < 0 || q < 0)
        return ga_fail(GA_ERR_VALUE, "layer %d (Conv2D): kernel %lldx%lld is larger than its padded input %lldx%lld",
                       i, (long long)sp->kernel_h, (long long)sp->kernel_w, (long long)(h + 2 * sp->pad),
                       (long long)(w + 2 * sp->pad));
    l->out[0] = sp->units;
    l->out[1] = p / sp->stride + 1;
    l->out[2] = q / sp->stride + 1;
    ga_conv_shape s = conv_shape(l, 1);
    if ((sp->kernel == GA_VARIANT_WINOGRAD2 || sp->kernel == GA_VARIANT_WINOGRAD4) && !ga_winograd_shape(&s))
        return ga_fail(GA_ERR_VALUE,
                       "layer %d (Conv2D): kernel='winograd' needs a 3x3 kernel, stride 1 and padding 0, 1 or 2", i);
    l->nw = checked_mul(checked_mul(sp->units, l->in[0]), checked_mul(sp->kernel_h, sp->kernel_w));
    l->nb = sp->use_bias ? sp->units : 0;
    return GA_OK;
}

static void describe(ga_layer *l)
{
    ga_layer_kernel_bias_slots(l, 4, l->spec.units, l->in[0], l->spec.kernel_h, l->spec.kernel_w);
}

static void init(const ga_net *net, const ga_layer *l, int i, float *host)
{
    const double rs = (double)(l->spec.kernel_h * l->spec.kernel_w);
    ga_layer_glorot(net, l, i, (double)l->in[0] * rs, (double)l->spec.units * rs, host);
}

static int64_t footprint(const ga_layer *l)
{
    ga_conv_shape s = conv_shape(l, 1);
    return ga_conv_footprint(&s);
}

static ga_status reserve(ga_net *net, ga_layer *l, int64_t n, int64_t *ws)
{
    ga_conv_shape s = conv_shape(l, n);
    *ws = ga_conv_ws_floats(&s);
    /* kernel='implicit' never has an im2col matrix; 'auto' reserves one, since its
     * answer comes at the first forward (and may be im2col) */
    if (l->spec.kernel != GA_VARIANT_IMPLICIT)
        GA_TRY(ga_net_alloc_floats(net, &l->col, ga_conv_col_floats(&s)));
    if (!l->fused_pool)
        GA_TRY(ga_net_alloc_floats(net, &l->y, n * per_sample(l->out)));
    return ga_layer_reserve_z(net, l, n);
}

static ga_status forward(ga_net *net, ga_layer *l, int64_t n, int training, const float *in, float **y)
{
    (void)training;
    ga_conv_shape s = conv_shape(l, n);
    if (l->spec.kernel == GA_CONV_AUTO) /* measured once per shape; backward runs the same */
        l->variant = GA_VARIANT_FAST;
    if (l->spec.kernel == GA_CONV_AUTO && net->be->conv2d_choose)
        BE(net, conv2d_choose(&l->variant, &s));
    /* TF32: 'auto' means im2col, whose GEMMs run on the tensor cores (the implicit
     * GEMM is fp32 only); the precision flag goes with every variant */
    if (l->spec.kernel == GA_CONV_AUTO && net->precision && l->variant == GA_VARIANT_IMPLICIT)
        l->variant = GA_VARIANT_FAST;
    if (l->fused_pool) { /* the pool after this layer runs both */
        *y = (float *)in;
        return GA_OK;
    }
    BE(net, conv2d_forward(ga_act_target(l, *y), l->col, net->ws, in, layer_w(net, l), layer_b(net, l),
                           ga_act_fused(l->spec.act), &s, l->variant | net->precision));
    return ga_layer_finish_act(net, l, n * per_sample(l->out), *y);
}

static ga_status backward(ga_net *net, ga_layer *l, int64_t n, int training, int lowest, int need_dx, float *g,
                          float *spare, int *moved)
{
    (void)training;
    (void)lowest;
    ga_conv_shape s = conv_shape(l, n);
    float *dx = need_dx ? spare : NULL, *dw = layer_dw(net, l), *db = layer_db(net, l);
    *moved = need_dx;
    if (!dw && !dx) /* frozen and nothing below needs the gradient */
        return GA_OK;
    if (l->fused_pool) { /* g is the gradient of the pool's output */
        const ga_layer *pool = l + 1;
        ga_pool_shape ps = {
            .n = n, .c = pool->in[0], .h = pool->in[1], .w = pool->in[2],
            .size = pool->spec.kernel_h, .stride = pool->spec.stride, .p = pool->out[1], .q = pool->out[2],
        };
        BE(net, conv2d_pool_backward(dx, dw, db, net->ws, l->x_seen, l->col, layer_w(net, l), g, pool->y_seen,
                                     pool->arg, l->spec.act, &s, &ps, l->variant | net->precision));
        return GA_OK;
    }
    if (l->spec.act.kind != GA_ACT_NONE)
        BE(net, act_backward(g, ga_act_input(l), g, n * per_sample(l->out), l->spec.act));
    BE(net, conv2d_backward(dx, dw, db, net->ws, l->x_seen, l->col, layer_w(net, l), g, &s,
                            l->variant | net->precision));
    return GA_OK;
}

const ga_layer_ops ga_conv2d_layer = {
    .kind = "conv2d",
    .name = "Conv2D",
    .keys = {"units", "kernel_h", "kernel_w", "stride", "pad", "activation", "alpha", "use_bias", "kernel"},
    .fuse_next = fuse_next,
    .infer = infer,
    .describe = describe,
    .init = init,
    .footprint = footprint,
    .reserve = reserve,
    .forward = forward,
    .backward = backward,
};
