/* Residual blocks as brackets in the linear table (see net.h): RES_BEGIN is a
 * view of its input (the skip), RES_END adds the skip (through a 1x1
 * convolution with stride when it projects) to the branch's output, then the
 * optional ReLU. Backward: RES_END passes g to the branch unchanged and keeps
 * the skip's share in dskip; RES_BEGIN adds it. l->match pairs the two
 * (net.c sets it before shapes are inferred). */
#include "net/layer.h"

#include <string.h>

/* The projection: skip (n, c', h', w') -> (n, k, p, q). */
static ga_conv_shape proj_shape(const ga_layer *l, int64_t n)
{
    ga_conv_shape s = {
        .n = n, .c = l->skip[0], .h = l->skip[1], .w = l->skip[2],
        .k = l->out[0], .r = 1, .s = 1, .stride = l->proj_stride, .pad = 0,
        .p = l->out[1], .q = l->out[2],
    };
    return s;
}

/* ---- RES_BEGIN ---- */

static ga_status begin_infer(ga_net *net, ga_layer *l, int i)
{
    (void)net, (void)i;
    memcpy(l->out, l->in, sizeof l->out);
    return GA_OK;
}

static ga_status begin_backward(ga_net *net, ga_layer *l, int64_t n, int training, int lowest, int need_dx, float *g,
                                float *spare, int *moved)
{
    (void)training, (void)lowest, (void)need_dx, (void)spare;
    *moved = 0;
    BE(net, add(g, g, net->layers[l->match].dskip, n * per_sample(l->out)));
    return GA_OK;
}

const ga_layer_ops ga_res_begin_layer = {
    .kind = "res_begin",
    .name = "residual begin",
    .infer = begin_infer,
    .reserve = ga_layer_reserve_none,
    .forward = ga_layer_forward_view,
    .backward = begin_backward,
};

/* ---- RES_END ---- */

static ga_status end_infer(ga_net *net, ga_layer *l, int i)
{
    const ga_layer_spec *sp = &l->spec;
    const int64_t c = l->in[0], h = l->in[1], w = l->in[2];
    memcpy(l->skip, net->layers[l->match].in, sizeof l->skip);
    memcpy(l->out, l->in, sizeof l->out);
    if (sp->projection != GA_PROJ_NONE && sp->projection != GA_PROJ_YES && sp->projection != GA_PROJ_AUTO)
        return ga_fail(GA_ERR_VALUE, "layer %d (residual end): unknown projection mode %d", i, sp->projection);
    l->proj = sp->projection == GA_PROJ_YES || (sp->projection == GA_PROJ_AUTO && !same_shape(l->skip, l->in));
    if (!l->proj) {
        if (!same_shape(l->skip, l->in))
            return ga_fail(GA_ERR_VALUE,
                           "layer %d (residual end): the branch output (%lld, %lld, %lld) differs from the block input "
                           "(%lld, %lld, %lld); use a projection",
                           i, (long long)c, (long long)h, (long long)w, (long long)l->skip[0], (long long)l->skip[1],
                           (long long)l->skip[2]);
        return GA_OK;
    }
    int64_t st = sp->stride;
    if (st < 0)
        return ga_fail(GA_ERR_VALUE, "layer %d (residual end): projection stride must be >= 0 (0: inferred)", i);
    if (st == 0) /* the smallest stride that maps the skip onto the branch output */
        for (int64_t t = 1; t <= l->skip[1] && st == 0; t++)
            if ((l->skip[1] - 1) / t + 1 == h && (l->skip[2] - 1) / t + 1 == w)
                st = t;
    if (st <= 0 || (l->skip[1] - 1) / st + 1 != h || (l->skip[2] - 1) / st + 1 != w)
        return ga_fail(GA_ERR_VALUE,
                       "layer %d (residual end): no 1x1 projection maps the block input %lldx%lld onto the branch "
                       "output %lldx%lld",
                       i, (long long)l->skip[1], (long long)l->skip[2], (long long)h, (long long)w);
    l->proj_stride = st;
    l->nw = checked_mul(c, l->skip[0]);
    l->nb = sp->use_bias ? c : 0;
    return GA_OK;
}

static void end_describe(ga_layer *l)
{
    if (!l->proj)
        return;
    ga_layer_add_slot(l, "projection_kernel", GA_BLOCK_PARAMS, l->w_off, 4, l->out[0], l->skip[0], 1, 1);
    if (l->nb)
        ga_layer_add_slot(l, "projection_bias", GA_BLOCK_PARAMS, l->b_off, 1, l->nb, 0, 0, 0);
}

static void end_init(const ga_net *net, const ga_layer *l, int i, float *host)
{
    ga_layer_glorot(net, l, i, (double)l->skip[0], (double)l->out[0], host);
}

static int64_t end_footprint(const ga_layer *l)
{
    if (!l->proj)
        return 0;
    ga_conv_shape s = proj_shape(l, 1);
    return ga_conv_footprint(&s);
}

static ga_status end_reserve(ga_net *net, ga_layer *l, int64_t n, int64_t *ws)
{
    *ws = 0;
    if (l->proj) {
        ga_conv_shape s = proj_shape(l, n);
        *ws = ga_conv_ws_floats(&s);
        GA_TRY(ga_net_alloc_floats(net, &l->col, ga_conv_col_floats(&s)));
    }
    GA_TRY(ga_net_alloc_floats(net, &l->dskip, n * per_sample(l->skip)));
    GA_TRY(ga_layer_reserve_z(net, l, n));
    return ga_net_alloc_floats(net, &l->y, n * per_sample(l->out));
}

static ga_status end_forward(ga_net *net, ga_layer *l, int64_t n, int training, const float *in, float **y)
{
    (void)training;
    const float *skip = net->layers[l->match].x_seen;
    const int64_t count = n * per_sample(l->out);
    const ga_act act = ga_act_fused(l->spec.act);
    float *sum = ga_act_target(l, *y);
    if (l->proj) {
        ga_conv_shape s = proj_shape(l, n);
        BE(net, conv2d_forward(sum, l->col, net->ws, skip, layer_w(net, l), layer_b(net, l),
                               (ga_act){GA_ACT_NONE, 0.0f}, &s, GA_VARIANT_FAST | net->precision));
        BE(net, add(sum, sum, in, count));
    } else {
        BE(net, add(sum, in, skip, count));
    }
    if (act.kind != GA_ACT_NONE)
        BE(net, act_forward(sum, sum, count, act));
    return ga_layer_finish_act(net, l, count, *y);
}

static ga_status end_backward(ga_net *net, ga_layer *l, int64_t n, int training, int lowest, int need_dx, float *g,
                              float *spare, int *moved)
{
    (void)training, (void)need_dx, (void)spare;
    const int64_t count = n * per_sample(l->out);
    const int need_skip = l->match >= lowest;
    *moved = 0; /* the branch gets g unchanged, in place */
    if (l->spec.act.kind != GA_ACT_NONE)
        BE(net, act_backward(g, ga_act_input(l), g, count, l->spec.act));
    if (l->proj) {
        ga_conv_shape s = proj_shape(l, n);
        float *dw = layer_dw(net, l);
        if (dw || need_skip)
            BE(net, conv2d_backward(need_skip ? l->dskip : NULL, dw, layer_db(net, l), net->ws,
                                    net->layers[l->match].x_seen, l->col, layer_w(net, l), g, &s, GA_VARIANT_FAST | net->precision));
    } else if (need_skip) {
        BE(net, copy(l->dskip, g, (size_t)count * sizeof(float)));
    }
    return GA_OK;
}

const ga_layer_ops ga_res_end_layer = {
    .kind = "res_end",
    .name = "residual end",
    .keys = {"projection", "stride", "activation", "alpha", "use_bias"},
    .infer = end_infer,
    .describe = end_describe,
    .init = end_init,
    .footprint = end_footprint,
    .reserve = end_reserve,
    .forward = end_forward,
    .backward = end_backward,
};
