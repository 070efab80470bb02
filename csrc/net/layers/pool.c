/* Pooling: MaxPool2D (window, stride, no padding; argmax indices kept for
 * backward), AveragePooling2D (the same windows, means), and the global
 * GlobalAveragePooling2D and GlobalMaxPooling2D ((C, H, W) -> (C, 1, 1); the
 * max keeps its argmax per channel). A max pool after a fused Conv2D
 * (conv.c) runs the two layers as one kernel. */
#include "net/layer.h"

static ga_pool_shape pool_shape(const ga_layer *l, int64_t n)
{
    ga_pool_shape s = {
        .n = n, .c = l->in[0], .h = l->in[1], .w = l->in[2],
        .size = l->spec.kernel_h, .stride = l->spec.stride, .p = l->out[1], .q = l->out[2],
    };
    return s;
}

static int after_fused_conv(const ga_net *net, const ga_layer *l)
{
    return l > net->layers && l[-1].fused_pool;
}

/* Max and average pooling: the same window geometry. */
static ga_status pool_infer(ga_net *net, ga_layer *l, int i)
{
    (void)net;
    const ga_layer_spec *sp = &l->spec;
    const int64_t h = l->in[1], w = l->in[2];
    if (sp->kernel_h <= 0 || sp->stride <= 0)
        return ga_fail(GA_ERR_VALUE, "layer %d (%s): pool size and stride must be positive", i, l->ops->name);
    if (sp->kernel_h > h || sp->kernel_h > w)
        return ga_fail(GA_ERR_VALUE, "layer %d (%s): pool size %lld is larger than its input %lldx%lld", i,
                       l->ops->name, (long long)sp->kernel_h, (long long)h, (long long)w);
    l->out[0] = l->in[0];
    l->out[1] = (h - sp->kernel_h) / sp->stride + 1;
    l->out[2] = (w - sp->kernel_h) / sp->stride + 1;
    return GA_OK;
}

static ga_status maxpool_reserve(ga_net *net, ga_layer *l, int64_t n, int64_t *ws)
{
    *ws = 0;
    BE(net, alloc((void **)&l->arg, (size_t)(n * per_sample(l->out)) * sizeof(int32_t)));
    return ga_net_alloc_floats(net, &l->y, n * per_sample(l->out));
}

static ga_status maxpool_layer_forward(ga_net *net, ga_layer *l, int64_t n, int training, const float *in, float **y)
{
    (void)training;
    ga_pool_shape ps = pool_shape(l, n);
    if (after_fused_conv(net, l)) { /* in is the conv's input: run both layers here */
        ga_layer *conv = l - 1;
        ga_conv_shape cs = {
            .n = n, .c = conv->in[0], .h = conv->in[1], .w = conv->in[2],
            .k = conv->spec.units, .r = conv->spec.kernel_h, .s = conv->spec.kernel_w,
            .stride = conv->spec.stride, .pad = conv->spec.pad, .p = conv->out[1], .q = conv->out[2],
        };
        BE(net, conv2d_pool_forward(*y, l->arg, conv->col, net->ws, in, layer_w(net, conv), layer_b(net, conv),
                                    conv->spec.act, &cs, &ps, conv->variant | net->precision));
        return GA_OK;
    }
    BE(net, maxpool_forward(*y, l->arg, in, &ps));
    return GA_OK;
}

static ga_status maxpool_layer_backward(ga_net *net, ga_layer *l, int64_t n, int training, int lowest, int need_dx,
                                  float *g, float *spare, int *moved)
{
    (void)training;
    (void)lowest;
    *moved = 0;
    if (after_fused_conv(net, l)) /* the fused conv below takes g as it is */
        return GA_OK;
    *moved = need_dx;
    if (need_dx) {
        ga_pool_shape ps = pool_shape(l, n);
        BE(net, maxpool_backward(spare, g, l->arg, &ps));
    }
    return GA_OK;
}

const ga_layer_ops ga_maxpool2d_layer = {
    .kind = "maxpool2d",
    .name = "MaxPool2D",
    .keys = {"kernel_h", "kernel_w", "stride"},
    .infer = pool_infer,
    .reserve = maxpool_reserve,
    .forward = maxpool_layer_forward,
    .backward = maxpool_layer_backward,
};

static ga_status avgpool_layer_forward(ga_net *net, ga_layer *l, int64_t n, int training, const float *in,
                                       float **y)
{
    (void)training;
    ga_pool_shape ps = pool_shape(l, n);
    BE(net, avgpool_forward(*y, in, &ps));
    return GA_OK;
}

static ga_status avgpool_layer_backward(ga_net *net, ga_layer *l, int64_t n, int training, int lowest, int need_dx,
                                        float *g, float *spare, int *moved)
{
    (void)training;
    (void)lowest;
    *moved = need_dx;
    if (need_dx) {
        ga_pool_shape ps = pool_shape(l, n);
        BE(net, avgpool_backward(spare, g, &ps));
    }
    return GA_OK;
}

/* No fuse_next partner: conv.c fuses a conv only with a max pool. */
const ga_layer_ops ga_avgpool2d_layer = {
    .kind = "avgpool2d",
    .name = "AveragePooling2D",
    .keys = {"kernel_h", "kernel_w", "stride"},
    .infer = pool_infer,
    .reserve = ga_layer_reserve_output,
    .forward = avgpool_layer_forward,
    .backward = avgpool_layer_backward,
};

static ga_status gap_infer(ga_net *net, ga_layer *l, int i)
{
    (void)net;
    (void)i;
    l->out[0] = l->in[0];
    l->out[1] = l->out[2] = 1;
    return GA_OK;
}

static ga_status gap_forward(ga_net *net, ga_layer *l, int64_t n, int training, const float *in, float **y)
{
    (void)training;
    BE(net, global_avgpool_forward(*y, in, n * l->in[0], l->in[1] * l->in[2]));
    return GA_OK;
}

static ga_status gap_backward(ga_net *net, ga_layer *l, int64_t n, int training, int lowest, int need_dx, float *g,
                              float *spare, int *moved)
{
    (void)training;
    (void)lowest;
    *moved = need_dx;
    if (need_dx)
        BE(net, global_avgpool_backward(spare, g, n * l->in[0], l->in[1] * l->in[2]));
    return GA_OK;
}

const ga_layer_ops ga_global_avgpool_layer = {
    .kind = "global_avgpool",
    .name = "GlobalAveragePooling2D",
    .infer = gap_infer,
    .reserve = ga_layer_reserve_output,
    .forward = gap_forward,
    .backward = gap_backward,
};

static ga_status gmp_infer(ga_net *net, ga_layer *l, int i)
{
    if (l->in[1] * l->in[2] > INT32_MAX)
        return ga_fail(GA_ERR_VALUE, "layer %d (GlobalMaxPooling2D): h*w does not fit the int32 argmax", i);
    return gap_infer(net, l, i);
}

static ga_status gmp_reserve(ga_net *net, ga_layer *l, int64_t n, int64_t *ws)
{
    *ws = 0;
    BE(net, alloc((void **)&l->arg, (size_t)(n * l->in[0]) * sizeof(int32_t)));
    return ga_net_alloc_floats(net, &l->y, n * per_sample(l->out));
}

static ga_status gmp_forward(ga_net *net, ga_layer *l, int64_t n, int training, const float *in, float **y)
{
    (void)training;
    BE(net, global_maxpool_forward(*y, l->arg, in, n * l->in[0], l->in[1] * l->in[2]));
    return GA_OK;
}

static ga_status gmp_backward(ga_net *net, ga_layer *l, int64_t n, int training, int lowest, int need_dx, float *g,
                              float *spare, int *moved)
{
    (void)training;
    (void)lowest;
    *moved = need_dx;
    if (need_dx)
        BE(net, global_maxpool_backward(spare, g, l->arg, n * l->in[0], l->in[1] * l->in[2]));
    return GA_OK;
}

const ga_layer_ops ga_global_maxpool_layer = {
    .kind = "global_maxpool",
    .name = "GlobalMaxPooling2D",
    .infer = gmp_infer,
    .reserve = gmp_reserve,
    .forward = gmp_forward,
    .backward = gmp_backward,
};
