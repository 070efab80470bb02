/* Sequential network: shapes, buffers, forward, backward, update. See net.h. */
#include "net/net.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/rng.h"

/* A backend keeps its own last-error text (the CUDA one lives in another
 * shared object): copy it into ours so the binding can raise it. */
static ga_status backend_failed(const ga_backend *be, ga_status st)
{
    if (be->last_error != ga_last_error)
        ga_fail(st, "%s", be->last_error());
    return st;
}

#define BE(net, call)                                      \
    do {                                                   \
        ga_status be_st_ = (net)->be->call;                \
        if (be_st_ != GA_OK)                               \
            return backend_failed((net)->be, be_st_);      \
    } while (0)

static int64_t per_sample(const int64_t s[3]) { return s[0] * s[1] * s[2]; }

/* No buffer may hold more than 2^40 floats (4 TiB): far beyond any real network,
 * and small enough that byte counts never overflow. */
#define GA_MAX_ELEMS ((int64_t)1 << 40)
#define GA_MAX_DIM ((int64_t)INT32_MAX)

/* a * b, or -1 when either is negative or the product passes GA_MAX_ELEMS. */
static int64_t checked_mul(int64_t a, int64_t b)
{
    int64_t r;
    if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &r) || r > GA_MAX_ELEMS)
        return -1;
    return r;
}

static ga_conv_shape conv_shape(const ga_layer *l, int64_t n)
{
    ga_conv_shape s = {
        .n = n, .c = l->in[0], .h = l->in[1], .w = l->in[2],
        .k = l->spec.units, .r = l->spec.kernel_h, .s = l->spec.kernel_w,
        .stride = l->spec.stride, .pad = l->spec.pad, .p = l->out[1], .q = l->out[2],
    };
    return s;
}

/* The 1x1 projection of a residual end: skip (n, c', h', w') -> (n, k, p, q). */
static ga_conv_shape proj_shape(const ga_layer *l, int64_t n)
{
    ga_conv_shape s = {
        .n = n, .c = l->skip[0], .h = l->skip[1], .w = l->skip[2],
        .k = l->out[0], .r = 1, .s = 1, .stride = l->proj_stride, .pad = 0,
        .p = l->out[1], .q = l->out[2],
    };
    return s;
}

static ga_pool_shape pool_shape(const ga_layer *l, int64_t n)
{
    ga_pool_shape s = {
        .n = n, .c = l->in[0], .h = l->in[1], .w = l->in[2],
        .size = l->spec.kernel_h, .stride = l->spec.stride, .p = l->out[1], .q = l->out[2],
    };
    return s;
}

static int same_shape(const int64_t a[3], const int64_t b[3])
{
    return a[0] == b[0] && a[1] == b[1] && a[2] == b[2];
}

/* Output shape and parameter count of layer `i` given its input shape. */
static ga_status infer_layer(ga_net *net, int i, int64_t *nparams)
{
    ga_layer *l = &net->layers[i];
    const ga_layer_spec *sp = &l->spec;
    const int64_t c = l->in[0], h = l->in[1], w = l->in[2];
    if (sp->units > GA_MAX_DIM || sp->kernel_h > GA_MAX_DIM || sp->kernel_w > GA_MAX_DIM ||
        sp->stride > GA_MAX_DIM || sp->pad > GA_MAX_DIM)
        return ga_fail(GA_ERR_VALUE, "layer %d: sizes above 2^31 - 1 are not supported", i);
    switch (sp->kind) {
    case GA_LAYER_CONV2D: {
        if (sp->units <= 0 || sp->kernel_h <= 0 || sp->kernel_w <= 0 || sp->stride <= 0 || sp->pad < 0)
            return ga_fail(GA_ERR_VALUE, "layer %d (Conv2D): filters, kernel and stride must be positive, padding >= 0", i);
        int64_t p = h + 2 * sp->pad - sp->kernel_h, q = w + 2 * sp->pad - sp->kernel_w;
        if (p < 0 || q < 0)
            return ga_fail(GA_ERR_VALUE, "layer %d (Conv2D): kernel %lldx%lld is larger than its padded input %lldx%lld",
                           i, (long long)sp->kernel_h, (long long)sp->kernel_w,
                           (long long)(h + 2 * sp->pad), (long long)(w + 2 * sp->pad));
        l->out[0] = sp->units;
        l->out[1] = p / sp->stride + 1;
        l->out[2] = q / sp->stride + 1;
        l->nw = checked_mul(checked_mul(sp->units, c), checked_mul(sp->kernel_h, sp->kernel_w));
        l->nb = sp->use_bias ? sp->units : 0;
        break;
    }
    case GA_LAYER_MAXPOOL2D:
        if (sp->kernel_h <= 0 || sp->stride <= 0)
            return ga_fail(GA_ERR_VALUE, "layer %d (MaxPool2D): pool size and stride must be positive", i);
        if (sp->kernel_h > h || sp->kernel_h > w)
            return ga_fail(GA_ERR_VALUE, "layer %d (MaxPool2D): pool size %lld is larger than its input %lldx%lld",
                           i, (long long)sp->kernel_h, (long long)h, (long long)w);
        l->out[0] = c;
        l->out[1] = (h - sp->kernel_h) / sp->stride + 1;
        l->out[2] = (w - sp->kernel_h) / sp->stride + 1;
        break;
    case GA_LAYER_FLATTEN:
        l->out[0] = checked_mul(checked_mul(c, h), w);
        l->out[1] = l->out[2] = 1;
        break;
    case GA_LAYER_DENSE:
        if (sp->units <= 0)
            return ga_fail(GA_ERR_VALUE, "layer %d (Dense): units must be positive", i);
        l->out[0] = sp->units;
        l->out[1] = l->out[2] = 1;
        l->nw = checked_mul(sp->units, checked_mul(checked_mul(c, h), w)); /* read in C, H, W order */
        l->nb = sp->use_bias ? sp->units : 0;
        break;
    case GA_LAYER_DROPOUT:
        if (!(sp->rate >= 0.0f && sp->rate < 1.0f))
            return ga_fail(GA_ERR_VALUE, "layer %d (Dropout): rate must be in [0, 1), got %g", i, (double)sp->rate);
        memcpy(l->out, l->in, sizeof l->out);
        break;
    case GA_LAYER_RELU:
        memcpy(l->out, l->in, sizeof l->out);
        break;
    case GA_LAYER_BATCHNORM:
        if (!(sp->momentum >= 0.0f && sp->momentum <= 1.0f) || !(sp->eps > 0.0f) || !isfinite(sp->eps))
            return ga_fail(GA_ERR_VALUE, "layer %d (BatchNormalization): momentum must be in [0, 1] and epsilon > 0", i);
        memcpy(l->out, l->in, sizeof l->out);
        l->nw = c; /* gamma */
        l->nb = c; /* beta */
        l->ns = 2 * c;
        l->s_off = net->nstate;
        net->nstate += l->ns;
        l->a_off = net->naux;
        net->naux += 2 * c;
        break;
    case GA_LAYER_GLOBAL_AVGPOOL:
        l->out[0] = c;
        l->out[1] = l->out[2] = 1;
        break;
    case GA_LAYER_RES_BEGIN:
        memcpy(l->out, l->in, sizeof l->out);
        break;
    case GA_LAYER_RES_END: {
        const ga_layer *b = &net->layers[l->match];
        memcpy(l->skip, b->in, sizeof l->skip);
        memcpy(l->out, l->in, sizeof l->out);
        if (sp->projection != GA_PROJ_NONE && sp->projection != GA_PROJ_YES && sp->projection != GA_PROJ_AUTO)
            return ga_fail(GA_ERR_VALUE, "layer %d (residual end): unknown projection mode %d", i, sp->projection);
        l->proj = sp->projection == GA_PROJ_YES || (sp->projection == GA_PROJ_AUTO && !same_shape(l->skip, l->in));
        if (!l->proj) {
            if (!same_shape(l->skip, l->in))
                return ga_fail(GA_ERR_VALUE,
                               "layer %d (residual end): the branch output (%lld, %lld, %lld) differs from the block input "
                               "(%lld, %lld, %lld); use a projection",
                               i, (long long)c, (long long)h, (long long)w, (long long)l->skip[0],
                               (long long)l->skip[1], (long long)l->skip[2]);
            break;
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
        break;
    }
    default:
        return ga_fail(GA_ERR_VALUE, "layer %d: unknown layer kind %d", i, sp->kind);
    }
    if (l->nw < 0 || l->out[0] < 0 || checked_mul(checked_mul(l->out[0], l->out[1]), l->out[2]) < 0 ||
        *nparams + l->nw + l->nb > GA_MAX_ELEMS)
        return ga_fail(GA_ERR_VALUE, "layer %d: more than 2^40 weights or outputs per sample: too large", i);
    l->w_off = *nparams;
    l->b_off = l->w_off + l->nw;
    *nparams += l->nw + l->nb;
    return GA_OK;
}

/* Glorot-uniform weights (the Keras default), zero biases, from the
 * counter-based stream so the same seed gives the same net on every device. */
static void init_params(ga_net *net, float *host)
{
    if (net->nparams == 0)
        return;
    memset(host, 0, (size_t)net->nparams * sizeof(float));
    for (int i = 0; i < net->nlayers; i++) {
        const ga_layer *l = &net->layers[i];
        if (l->nw == 0)
            continue;
        if (l->spec.kind == GA_LAYER_BATCHNORM) { /* gamma = 1, beta = 0 */
            for (int64_t j = 0; j < l->nw; j++)
                host[l->w_off + j] = 1.0f;
            continue;
        }
        double fan_in, fan_out;
        if (l->spec.kind == GA_LAYER_RES_END) { /* 1x1 projection */
            fan_in = (double)l->skip[0];
            fan_out = (double)l->out[0];
        } else if (l->spec.kind == GA_LAYER_CONV2D) {
            double rs = (double)(l->spec.kernel_h * l->spec.kernel_w);
            fan_in = (double)l->in[0] * rs;
            fan_out = (double)l->spec.units * rs;
        } else {
            fan_in = (double)per_sample(l->in);
            fan_out = (double)l->spec.units;
        }
        float limit = (float)sqrt(6.0 / (fan_in + fan_out));
        uint64_t stream = ga_rng_hash(net->seed, (uint64_t)i);
        float *w = host + l->w_off;
        for (int64_t j = 0; j < l->nw; j++)
            w[j] = (2.0f * ga_rng_uniform(stream, (uint64_t)j) - 1.0f) * limit;
    }
}

static void free_activations(ga_net *net)
{
    const ga_backend *be = net->be;
    for (int i = 0; i < net->nlayers; i++) {
        ga_layer *l = &net->layers[i];
        be->release(l->y);
        be->release(l->col);
        be->release(l->arg);
        be->release(l->mask);
        be->release(l->dskip);
        l->y = l->col = l->mask = l->dskip = NULL;
        l->arg = NULL;
    }
    be->release(net->x);
    be->release(net->labels);
    be->release(net->grad_a);
    be->release(net->grad_b);
    be->release(net->ws);
    if (be->host_free)
        be->host_free(net->stage); /* waits for the device: no copy still reads it */
    net->x = net->grad_a = net->grad_b = net->ws = NULL;
    net->labels = NULL;
    net->stage = NULL;
    net->staged = 0;
    net->cap = 0;
}

static ga_status alloc_floats(ga_net *net, float **p, int64_t count)
{
    BE(net, alloc((void **)p, (size_t)count * sizeof(float)));
    return GA_OK;
}

/* The largest buffer the net needs, in floats per sample (activations, im2col
 * and conv scratch); -1 when one would pass GA_MAX_ELEMS. */
static int64_t footprint(const ga_net *net)
{
    int64_t most = per_sample(net->in);
    for (int i = 0; i < net->nlayers; i++) {
        const ga_layer *l = &net->layers[i];
        int64_t need = per_sample(l->out);
        if (l->spec.kind == GA_LAYER_CONV2D || (l->spec.kind == GA_LAYER_RES_END && l->proj)) {
            ga_conv_shape s = l->spec.kind == GA_LAYER_CONV2D ? conv_shape(l, 1) : proj_shape(l, 1);
            int64_t pq = checked_mul(s.p, s.q);
            int64_t col = checked_mul(checked_mul(checked_mul(s.c, s.r), s.s), pq);
            int64_t ws = checked_mul(s.k, pq);
            if (col < 0 || ws < 0 || col + ws > GA_MAX_ELEMS)
                return -1;
            need = col + ws > need ? col + ws : need;
        }
        most = need > most ? need : most;
    }
    return most;
}

/* Make every activation buffer hold at least n samples. */
static ga_status reserve(ga_net *net, int64_t n)
{
    if (n <= net->cap)
        return GA_OK;
    if (checked_mul(n, net->footprint) < 0)
        return ga_fail(GA_ERR_MEMORY, "a batch of %lld samples needs buffers of more than 2^40 floats",
                       (long long)n);
    free_activations(net);
    int64_t act = per_sample(net->in), ws = 0;
    for (int i = 0; i < net->nlayers; i++) {
        ga_layer *l = &net->layers[i];
        int64_t out = per_sample(l->out);
        act = out > act ? out : act;
        switch (l->spec.kind) {
        case GA_LAYER_CONV2D: {
            ga_conv_shape s = conv_shape(l, n);
            int64_t need = ga_conv_bwd_ws_floats(&s);
            if (ga_conv_fwd_ws_floats(&s) > need)
                need = ga_conv_fwd_ws_floats(&s);
            ws = need > ws ? need : ws;
            GA_TRY(alloc_floats(net, &l->col, ga_conv_col_floats(&s)));
            if (!l->fused_pool)
                GA_TRY(alloc_floats(net, &l->y, n * out));
            break;
        }
        case GA_LAYER_MAXPOOL2D:
            BE(net, alloc((void **)&l->arg, (size_t)(n * out) * sizeof(int32_t)));
            GA_TRY(alloc_floats(net, &l->y, n * out));
            break;
        case GA_LAYER_DROPOUT:
            GA_TRY(alloc_floats(net, &l->mask, n * out));
            GA_TRY(alloc_floats(net, &l->y, n * out));
            break;
        case GA_LAYER_RES_END:
            if (l->proj) {
                ga_conv_shape s = proj_shape(l, n);
                int64_t need = ga_conv_bwd_ws_floats(&s);
                if (ga_conv_fwd_ws_floats(&s) > need)
                    need = ga_conv_fwd_ws_floats(&s);
                ws = need > ws ? need : ws;
                GA_TRY(alloc_floats(net, &l->col, ga_conv_col_floats(&s)));
            }
            GA_TRY(alloc_floats(net, &l->dskip, n * per_sample(l->skip)));
            GA_TRY(alloc_floats(net, &l->y, n * out));
            break;
        case GA_LAYER_DENSE:
        case GA_LAYER_RELU:
        case GA_LAYER_BATCHNORM:
        case GA_LAYER_GLOBAL_AVGPOOL:
            GA_TRY(alloc_floats(net, &l->y, n * out));
            break;
        default: /* flatten, residual begin: views of their input */
            break;
        }
    }
    GA_TRY(alloc_floats(net, &net->x, n * per_sample(net->in)));
    BE(net, alloc((void **)&net->labels, (size_t)n * sizeof(int32_t)));
    GA_TRY(alloc_floats(net, &net->grad_a, n * act));
    GA_TRY(alloc_floats(net, &net->grad_b, n * act));
    GA_TRY(alloc_floats(net, &net->ws, ws));
    /* pinned staging (GPU): the input, then the labels. Only a speed-up: when the
     * host cannot pin that much, stage stays NULL and the batch is copied from
     * the caller's (pageable) memory as on a backend without host_alloc. */
    if (net->be->host_alloc &&
        net->be->host_alloc(&net->stage, (size_t)(n * per_sample(net->in)) * sizeof(float) +
                                             (size_t)n * sizeof(int32_t)) != GA_OK)
        net->stage = NULL;
    net->cap = n;
    return GA_OK;
}

ga_status ga_net_create(ga_net **out, const ga_backend *be, int device_index,
                        const ga_layer_spec *specs, int nlayers, const int64_t in_shape[3],
                        uint64_t seed)
{
    *out = NULL;
    if (!be || be->abi != GA_BACKEND_ABI)
        return ga_fail(GA_ERR_RUNTIME, "device backend missing or built for another version");
    if (nlayers <= 0 || !specs)
        return ga_fail(GA_ERR_VALUE, "a network needs at least one layer");
    for (int d = 0; d < 3; d++)
        if (in_shape[d] <= 0 || in_shape[d] > GA_MAX_DIM)
            return ga_fail(GA_ERR_VALUE, "input shape must be positive (C, H, W) and below 2^31");
    GA_TRY(be->set_device(device_index) == GA_OK ? GA_OK : backend_failed(be, GA_ERR_RUNTIME));

    ga_net *net = calloc(1, sizeof *net);
    if (!net)
        return ga_fail(GA_ERR_MEMORY, "out of host memory");
    net->be = be;
    net->device_index = device_index;
    net->seed = seed;
    memcpy(net->in, in_shape, sizeof net->in);
    net->layers = calloc((size_t)nlayers, sizeof *net->layers);
    if (!net->layers) {
        free(net);
        return ga_fail(GA_ERR_MEMORY, "out of host memory");
    }
    net->nlayers = nlayers;

    ga_status st = GA_OK;
    net->ranges = calloc((size_t)nlayers * 2, sizeof *net->ranges);
    if (!net->ranges)
        st = ga_fail(GA_ERR_MEMORY, "out of host memory");
    /* pair the residual brackets (a stack of open RES_BEGINs) */
    int depth = 0;
    int *open = st == GA_OK ? calloc((size_t)nlayers, sizeof *open) : NULL;
    if (st == GA_OK && !open)
        st = ga_fail(GA_ERR_MEMORY, "out of host memory");
    for (int i = 0; i < nlayers && st == GA_OK; i++) {
        ga_layer *l = &net->layers[i];
        l->spec = specs[i];
        l->trainable = 1;
        l->match = -1;
        if (l->spec.kind == GA_LAYER_RES_BEGIN) {
            open[depth++] = i;
        } else if (l->spec.kind == GA_LAYER_RES_END) {
            if (depth == 0)
                st = ga_fail(GA_ERR_VALUE, "layer %d: residual end without a residual begin", i);
            else {
                l->match = open[--depth];
                net->layers[l->match].match = i;
            }
        }
    }
    if (st == GA_OK && depth != 0)
        st = ga_fail(GA_ERR_VALUE, "layer %d: residual begin without a residual end", open[depth - 1]);
    free(open);
    const int64_t *shape = in_shape;
    for (int i = 0; i < nlayers && st == GA_OK; i++) {
        ga_layer *l = &net->layers[i];
        memcpy(l->in, shape, sizeof l->in);
        st = infer_layer(net, i, &net->nparams);
        shape = l->out;
    }
    /* conv -> max pool pairs run as one kernel where the backend has it (the
     * conv output then never goes through memory); GPUACCEL_FUSE=0 turns this
     * off, for tests that compare the two paths and for measurements */
    const char *fuse_env = getenv("GPUACCEL_FUSE");
    const int fuse = be->conv2d_pool_forward && be->conv2d_pool_backward && !(fuse_env && strcmp(fuse_env, "0") == 0);
    for (int i = 0; i + 1 < nlayers && st == GA_OK && fuse; i++)
        net->layers[i].fused_pool = net->layers[i].spec.kind == GA_LAYER_CONV2D &&
                                    net->layers[i + 1].spec.kind == GA_LAYER_MAXPOOL2D;
    if (st == GA_OK) {
        const ga_layer *last = &net->layers[nlayers - 1];
        net->classes = per_sample(last->out);
        net->footprint = footprint(net);
        if (last->out[1] != 1 || last->out[2] != 1)
            st = ga_fail(GA_ERR_VALUE, "the last layer must output a vector of class scores (add Flatten and Dense)");
        else if (net->footprint < 0)
            st = ga_fail(GA_ERR_VALUE, "a layer needs more than 2^40 floats per sample: too large");
    }
    float *host = NULL;
    if (st == GA_OK)
        st = ga_host_alloc((void **)&host, (size_t)net->nparams * sizeof(float));
    if (st == GA_OK) {
        size_t bytes = (size_t)net->nparams * sizeof(float);
        init_params(net, host);
        const ga_backend *b = be;
        if ((st = b->alloc((void **)&net->params, bytes)) == GA_OK &&
            (st = b->alloc((void **)&net->grads, bytes)) == GA_OK &&
            (st = b->alloc((void **)&net->opt1, bytes)) == GA_OK &&
            (st = b->alloc((void **)&net->opt2, bytes)) == GA_OK &&
            (st = b->alloc((void **)&net->stats, 2 * sizeof(float))) == GA_OK &&
            (st = b->alloc((void **)&net->state, (size_t)net->nstate * sizeof(float))) == GA_OK &&
            (st = b->alloc((void **)&net->aux, (size_t)net->naux * sizeof(float))) == GA_OK &&
            (st = b->to_device(net->params, host, bytes)) == GA_OK &&
            (st = b->zero(net->opt1, bytes)) == GA_OK &&
            (st = b->zero(net->aux, (size_t)net->naux * sizeof(float))) == GA_OK)
            st = b->zero(net->opt2, bytes);
        if (st != GA_OK)
            backend_failed(be, st);
    }
    ga_host_free(host);
    host = NULL;
    if (st == GA_OK && net->nstate > 0) { /* moving mean 0, moving variance 1 */
        st = ga_host_alloc((void **)&host, (size_t)net->nstate * sizeof(float));
        if (st == GA_OK) {
            for (int i = 0; i < nlayers; i++) {
                const ga_layer *l = &net->layers[i];
                for (int64_t j = 0; j < l->ns; j++)
                    host[l->s_off + j] = j < l->ns / 2 ? 0.0f : 1.0f;
            }
            st = be->to_device(net->state, host, (size_t)net->nstate * sizeof(float));
            if (st != GA_OK)
                backend_failed(be, st);
        }
        ga_host_free(host);
    }
    if (st == GA_OK) {
        int *all = calloc((size_t)nlayers, sizeof *all);
        if (!all)
            st = ga_fail(GA_ERR_MEMORY, "out of host memory");
        else {
            for (int i = 0; i < nlayers; i++)
                all[i] = 1;
            st = ga_net_set_trainable(net, all);
            free(all);
        }
    }
    if (st != GA_OK) {
        ga_net_destroy(net);
        return st;
    }
    net->opt = (ga_optimizer){.kind = GA_OPT_SGD, .lr = 0.01f};
    *out = net;
    return GA_OK;
}

void ga_net_destroy(ga_net *net)
{
    if (!net)
        return;
    if (net->be) {
        net->be->set_device(net->device_index);
        if (net->layers)
            free_activations(net);
        net->be->release(net->params);
        net->be->release(net->grads);
        net->be->release(net->opt1);
        net->be->release(net->opt2);
        net->be->release(net->stats);
        net->be->release(net->state);
        net->be->release(net->aux);
    }
    free(net->ranges);
    free(net->layers);
    free(net);
}

ga_status ga_net_set_optimizer(ga_net *net, const ga_optimizer *opt)
{
    if (opt->kind != GA_OPT_SGD && opt->kind != GA_OPT_ADAM)
        return ga_fail(GA_ERR_VALUE, "unknown optimizer kind %d", opt->kind);
    if (!(opt->lr >= 0.0f) || !isfinite(opt->lr))
        return ga_fail(GA_ERR_VALUE, "learning rate must be finite and >= 0");
    if (opt->kind == GA_OPT_ADAM && !(opt->beta1 >= 0.0f && opt->beta1 < 1.0f && opt->beta2 >= 0.0f &&
                                      opt->beta2 < 1.0f && opt->eps > 0.0f))
        return ga_fail(GA_ERR_VALUE, "Adam needs 0 <= beta1, beta2 < 1 and epsilon > 0");
    if (opt->kind == GA_OPT_SGD && !(opt->momentum >= 0.0f && opt->momentum < 1.0f))
        return ga_fail(GA_ERR_VALUE, "SGD momentum must be in [0, 1)");
    BE(net, set_device(net->device_index));
    size_t bytes = (size_t)net->nparams * sizeof(float);
    BE(net, zero(net->opt1, bytes));
    BE(net, zero(net->opt2, bytes));
    net->opt = *opt;
    net->t = 0;
    return GA_OK;
}

/* Forward over the batch already in net->x; leaves the logits in the last
 * layer's y_seen. Dropout is active only when `training`. */
static ga_status forward(ga_net *net, int64_t n, int training)
{
    const float *in = net->x;
    for (int i = 0; i < net->nlayers; i++) {
        ga_layer *l = &net->layers[i];
        const float *w = net->params + l->w_off, *b = l->nb ? net->params + l->b_off : NULL;
        const int64_t count = n * per_sample(l->out);
        float *y = l->y;
        switch (l->spec.kind) {
        case GA_LAYER_CONV2D: {
            ga_conv_shape s = conv_shape(l, n);
            if (l->fused_pool) { /* this layer and the pool after it, in one call */
                ga_layer *pool = &net->layers[i + 1];
                ga_pool_shape ps = pool_shape(pool, n);
                BE(net, conv2d_pool_forward(pool->y, pool->arg, l->col, net->ws, in, w, b, l->spec.relu, &s, &ps));
                l->x_seen = in;
                l->y_seen = NULL;
                pool->x_seen = NULL;
                pool->y_seen = pool->y;
                in = pool->y;
                i++;
                continue;
            }
            BE(net, conv2d_forward(y, l->col, net->ws, in, w, b, l->spec.relu, &s, GA_VARIANT_FAST));
            break;
        }
        case GA_LAYER_MAXPOOL2D: {
            ga_pool_shape s = pool_shape(l, n);
            BE(net, maxpool_forward(y, l->arg, in, &s));
            break;
        }
        case GA_LAYER_DENSE: {
            const int64_t fin = per_sample(l->in), units = l->spec.units;
            BE(net, gemm(y, in, w, 0, 1, n, units, fin, fin, fin, units, 1.0f, 0.0f, GA_VARIANT_FAST));
            if (b || l->spec.relu)
                BE(net, bias_act(y, b, n, units, l->spec.relu));
            break;
        }
        case GA_LAYER_DROPOUT:
            if (training && l->spec.rate > 0.0f) {
                uint64_t mask_seed = ga_rng_hash(net->seed ^ 0xD50F0A7ull, net->draws++);
                BE(net, dropout_forward(y, l->mask, in, count, l->spec.rate, mask_seed));
            } else {
                y = (float *)in; /* identity: a view */
            }
            break;
        case GA_LAYER_RELU:
            BE(net, relu_forward(y, in, count));
            break;
        case GA_LAYER_BATCHNORM: {
            const int64_t c = l->in[0], hw = l->in[1] * l->in[2];
            float *save = net->aux + l->a_off, *run = net->state + l->s_off;
            /* a frozen batch norm runs in inference mode, as in Keras */
            BE(net, batchnorm_forward(y, save, save + c, run, run + c, in, w, b, n, c, hw, l->spec.momentum,
                                      l->spec.eps, training && l->trainable));
            break;
        }
        case GA_LAYER_GLOBAL_AVGPOOL:
            BE(net, global_avgpool_forward(y, in, n * l->in[0], l->in[1] * l->in[2]));
            break;
        case GA_LAYER_RES_BEGIN:
            y = (float *)in; /* a view: the skip stays in the input's buffer, which no later layer writes */
            break;
        case GA_LAYER_RES_END: {
            const float *skip = net->layers[l->match].x_seen;
            if (l->proj) {
                ga_conv_shape s = proj_shape(l, n);
                BE(net, conv2d_forward(y, l->col, net->ws, skip, w, b, 0, &s, GA_VARIANT_FAST));
                BE(net, add(y, y, in, count));
            } else {
                BE(net, add(y, in, skip, count));
            }
            if (l->spec.relu)
                BE(net, relu_forward(y, y, count));
            break;
        }
        default: /* flatten: the same memory seen as a vector */
            y = (float *)in;
            break;
        }
        l->x_seen = in;
        l->y_seen = y;
        in = y;
    }
    return GA_OK;
}

/* Backward from the gradient of the last layer's output in net->grad_a, down
 * to layer `lowest` (the lowest trainable one in a training step; dx of that
 * layer is computed only when `dx_at_lowest`). Fills net->grads for trainable
 * layers and leaves the last gradient computed in *g_out. */
static ga_status backward(ga_net *net, int64_t n, int training, int lowest, int dx_at_lowest, float **g_out)
{
    float *g = net->grad_a, *spare = net->grad_b;
    for (int i = net->nlayers - 1; i >= lowest; i--) {
        ga_layer *l = &net->layers[i];
        const float *w = net->params + l->w_off;
        float *dw = net->grads + l->w_off, *db = l->nb ? net->grads + l->b_off : NULL;
        const int64_t count = n * per_sample(l->out);
        const int need_dx = i > lowest || dx_at_lowest; /* false only on the last layer visited */
        const int train_w = l->trainable;
        switch (l->spec.kind) {
        case GA_LAYER_CONV2D: {
            ga_conv_shape s = conv_shape(l, n);
            if (l->fused_pool) { /* g is the gradient of the pool's output (the pool deferred to here) */
                const ga_layer *pool = &net->layers[i + 1];
                ga_pool_shape ps = pool_shape(pool, n);
                if (train_w || need_dx)
                    BE(net, conv2d_pool_backward(need_dx ? spare : NULL, train_w ? dw : NULL, train_w ? db : NULL,
                                                 net->ws, l->x_seen, l->col, w, g, pool->y_seen, pool->arg,
                                                 l->spec.relu, &s, &ps));
                break;
            }
            if (l->spec.relu)
                BE(net, relu_backward(g, l->y_seen, g, count));
            if (train_w || need_dx) /* frozen: the input gradient only */
                BE(net, conv2d_backward(need_dx ? spare : NULL, train_w ? dw : NULL, train_w ? db : NULL,
                                        net->ws, l->x_seen, l->col, w, g, &s, GA_VARIANT_FAST));
            break;
        }
        case GA_LAYER_MAXPOOL2D: {
            ga_pool_shape s = pool_shape(l, n);
            if (i > lowest && net->layers[i - 1].fused_pool)
                continue; /* the fused conv below takes g as it is */
            if (need_dx)
                BE(net, maxpool_backward(spare, g, l->arg, &s));
            break;
        }
        case GA_LAYER_DENSE: {
            const int64_t fin = per_sample(l->in), units = l->spec.units;
            if (l->spec.relu)
                BE(net, relu_backward(g, l->y_seen, g, count));
            if (train_w) {
                BE(net, gemm(dw, g, l->x_seen, 1, 0, units, fin, n, units, fin, fin, 1.0f, 0.0f, GA_VARIANT_FAST));
                if (db)
                    BE(net, sum_rows(db, g, n, units));
            }
            if (need_dx)
                BE(net, gemm(spare, g, w, 0, 0, n, fin, units, units, fin, fin, 1.0f, 0.0f, GA_VARIANT_FAST));
            break;
        }
        case GA_LAYER_BATCHNORM: {
            const int64_t c = l->in[0], hw = l->in[1] * l->in[2];
            const float *save = net->aux + l->a_off;
            if (train_w || need_dx)
                BE(net, batchnorm_backward(need_dx ? spare : NULL, train_w ? dw : NULL, train_w ? db : NULL, g,
                                           l->x_seen, w, save, save + c, n, c, hw, training && train_w));
            break;
        }
        case GA_LAYER_GLOBAL_AVGPOOL:
            if (need_dx)
                BE(net, global_avgpool_backward(spare, g, n * l->in[0], l->in[1] * l->in[2]));
            break;
        case GA_LAYER_RES_END: {
            /* the branch gets g unchanged (it stays in place); the skip's share goes to dskip,
             * which RES_BEGIN adds, when the backward pass reaches it */
            const int need_skip = l->match >= lowest;
            if (l->spec.relu)
                BE(net, relu_backward(g, l->y_seen, g, count));
            if (l->proj) {
                ga_conv_shape s = proj_shape(l, n);
                const float *skip = net->layers[l->match].x_seen;
                if (train_w || need_skip)
                    BE(net, conv2d_backward(need_skip ? l->dskip : NULL, train_w ? dw : NULL,
                                            train_w ? db : NULL, net->ws, skip, l->col, w, g, &s,
                                            GA_VARIANT_FAST));
            } else if (need_skip) {
                BE(net, copy(l->dskip, g, (size_t)count * sizeof(float)));
            }
            continue;
        }
        case GA_LAYER_RES_BEGIN:
            BE(net, add(g, g, net->layers[l->match].dskip, count));
            continue;
        case GA_LAYER_DROPOUT:
            if (training && l->spec.rate > 0.0f)
                BE(net, mul(g, g, l->mask, count));
            continue; /* in place: g stays */
        case GA_LAYER_RELU:
            BE(net, relu_backward(g, l->y_seen, g, count));
            continue;
        default: /* flatten */
            continue;
        }
        if (need_dx) { /* the gradient now lives in spare */
            float *t = g;
            g = spare;
            spare = t;
        }
    }
    *g_out = g;
    return GA_OK;
}

static ga_status check_batch(ga_net *net, const void *x, int64_t n)
{
    if (n <= 0)
        return ga_fail(GA_ERR_VALUE, "empty batch: need at least one sample");
    if (!x)
        return ga_fail(GA_ERR_VALUE, "NULL input");
    return GA_OK;
}

/* Copies the batch in and runs forward + loss; stats left on the device.
 * With pinned staging (GPU) the batch goes through net->stage and the copies
 * are queued on the stream; the caller's read-back (to_host, the call's one
 * synchronisation) is what frees the stage for the next batch, and it clears
 * net->staged. Only a call that failed before its read-back leaves staged set:
 * then the next one waits for the stream before overwriting the stage. */
static ga_status load_and_forward(ga_net *net, const float *x_host, const int32_t *labels_host,
                                  int64_t n, int training, float grad_scale)
{
    GA_TRY(check_batch(net, x_host, n));
    BE(net, set_device(net->device_index));
    if (net->staged) {
        BE(net, synchronize());
        net->staged = 0;
    }
    GA_TRY(reserve(net, n));
    const size_t xbytes = (size_t)(n * per_sample(net->in)) * sizeof(float);
    const size_t lbytes = (size_t)n * sizeof(int32_t);
    if (net->stage) {
        /* the labels' part starts after cap samples of input (see reserve) */
        int32_t *lstage = (int32_t *)((float *)net->stage + net->cap * per_sample(net->in));
        memcpy(net->stage, x_host, xbytes);
        if (labels_host)
            memcpy(lstage, labels_host, lbytes);
        net->staged = 1;
        BE(net, to_device_async(net->x, net->stage, xbytes));
        if (labels_host)
            BE(net, to_device_async(net->labels, lstage, lbytes));
    } else {
        BE(net, to_device(net->x, x_host, xbytes));
    }
    GA_TRY(forward(net, n, training));
    if (!labels_host)
        return GA_OK;
    if (!net->stage)
        BE(net, to_device(net->labels, labels_host, lbytes));
    BE(net, zero(net->stats, 2 * sizeof(float)));
    const float *logits = net->layers[net->nlayers - 1].y_seen;
    BE(net, softmax_xent(net->stats, training ? net->grad_a : NULL, logits, net->labels, n,
                         net->classes, grad_scale));
    return GA_OK;
}

ga_status ga_net_train_step(ga_net *net, const float *x_host, const int32_t *labels_host,
                            int64_t n, float *loss, int64_t *correct)
{
    if (!labels_host)
        return ga_fail(GA_ERR_VALUE, "training needs labels");
    GA_TRY(load_and_forward(net, x_host, labels_host, n, 1, 1.0f / (float)n));
    if (net->lowest >= 0) {
        float *g;
        GA_TRY(backward(net, n, 1, net->lowest, 0, &g));
    }
    net->t++;
    const ga_optimizer *o = &net->opt;
    /* only the trainable runs of the block: one fused launch per run */
    for (int r = 0; r < net->nranges; r++) {
        const int64_t off = net->ranges[2 * r], cnt = net->ranges[2 * r + 1];
        if (o->kind == GA_OPT_ADAM)
            BE(net, adam_update(net->params + off, net->opt1 + off, net->opt2 + off, net->grads + off, cnt,
                                o->lr, o->beta1, o->beta2, o->eps, o->weight_decay, net->t));
        else
            BE(net, sgd_update(net->params + off, net->opt1 + off, net->grads + off, cnt, o->lr, o->momentum,
                               o->weight_decay, o->nesterov));
    }
    float stats[2];
    BE(net, to_host(stats, net->stats, sizeof stats)); /* the step's one synchronisation */
    net->staged = 0;
    *loss = stats[0] / (float)n;
    *correct = (int64_t)stats[1];
    return GA_OK;
}

ga_status ga_net_predict(ga_net *net, const float *x_host, int64_t n, float *logits_host)
{
    GA_TRY(load_and_forward(net, x_host, NULL, n, 0, 0.0f));
    const float *logits = net->layers[net->nlayers - 1].y_seen;
    BE(net, to_host(logits_host, logits, (size_t)(n * net->classes) * sizeof(float)));
    net->staged = 0;
    return GA_OK;
}

ga_status ga_net_evaluate(ga_net *net, const float *x_host, const int32_t *labels_host,
                          int64_t n, double *loss_sum, int64_t *correct)
{
    if (!labels_host)
        return ga_fail(GA_ERR_VALUE, "evaluation needs labels");
    GA_TRY(load_and_forward(net, x_host, labels_host, n, 0, 0.0f));
    float stats[2];
    BE(net, to_host(stats, net->stats, sizeof stats));
    net->staged = 0;
    *loss_sum = stats[0];
    *correct = (int64_t)stats[1];
    return GA_OK;
}

ga_status ga_net_get_params(ga_net *net, float *host)
{
    BE(net, set_device(net->device_index));
    BE(net, to_host(host, net->params, (size_t)net->nparams * sizeof(float)));
    return GA_OK;
}

ga_status ga_net_set_params(ga_net *net, const float *host)
{
    BE(net, set_device(net->device_index));
    BE(net, to_device(net->params, host, (size_t)net->nparams * sizeof(float)));
    return GA_OK;
}

ga_status ga_net_get_state(ga_net *net, float *host)
{
    BE(net, set_device(net->device_index));
    BE(net, to_host(host, net->state, (size_t)net->nstate * sizeof(float)));
    return GA_OK;
}

ga_status ga_net_set_state(ga_net *net, const float *host)
{
    BE(net, set_device(net->device_index));
    BE(net, to_device(net->state, host, (size_t)net->nstate * sizeof(float)));
    return GA_OK;
}

ga_status ga_net_set_trainable(ga_net *net, const int *flags)
{
    net->nranges = 0;
    net->ntrainable = 0;
    net->lowest = -1;
    for (int i = 0; i < net->nlayers; i++) {
        ga_layer *l = &net->layers[i];
        l->trainable = flags[i] != 0;
        const int64_t cnt = l->nw + l->nb;
        if (!l->trainable || cnt == 0)
            continue;
        if (net->lowest < 0)
            net->lowest = i;
        net->ntrainable += cnt;
        int64_t *last = net->nranges ? &net->ranges[2 * (net->nranges - 1)] : NULL;
        if (last && last[0] + last[1] == l->w_off) { /* contiguous: extend the run */
            last[1] += cnt;
        } else {
            net->ranges[2 * net->nranges] = l->w_off;
            net->ranges[2 * net->nranges + 1] = cnt;
            net->nranges++;
        }
    }
    return GA_OK;
}

ga_status ga_net_forward(ga_net *net, const float *x_host, int64_t n, int training, float *out_host)
{
    GA_TRY(load_and_forward(net, x_host, NULL, n, training != 0, 0.0f));
    net->last_training = training != 0;
    net->last_n = n;
    const float *out = net->layers[net->nlayers - 1].y_seen;
    BE(net, to_host(out_host, out, (size_t)(n * net->classes) * sizeof(float)));
    net->staged = 0;
    return GA_OK;
}

ga_status ga_net_backward(ga_net *net, int64_t n, const float *dout_host, float *dx_host,
                          float *grads_host)
{
    if (n <= 0 || n != net->last_n || n > net->cap)
        return ga_fail(GA_ERR_VALUE, "backward needs a forward of the same batch size first");
    if (!dout_host)
        return ga_fail(GA_ERR_VALUE, "NULL output gradient");
    BE(net, set_device(net->device_index));
    BE(net, zero(net->grads, (size_t)net->nparams * sizeof(float)));
    BE(net, to_device(net->grad_a, dout_host, (size_t)(n * net->classes) * sizeof(float)));
    float *g = NULL;
    GA_TRY(backward(net, n, net->last_training, 0, 1, &g));
    if (dx_host)
        BE(net, to_host(dx_host, g, (size_t)(n * per_sample(net->in)) * sizeof(float)));
    if (grads_host)
        BE(net, to_host(grads_host, net->grads, (size_t)net->nparams * sizeof(float)));
    return GA_OK;
}
