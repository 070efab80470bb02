/* Sequential network: shapes, buffers, forward, backward, update. See net.h.
 * Each layer kind lives in csrc/net/layers/ behind a ga_layer_ops table
 * (net/layer.h); this file runs the layers through their tables. */
#include "net/layer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/checks.h"
#include "core/rng.h"
#include "core/steps.h"

extern const ga_layer_ops ga_conv2d_layer, ga_maxpool2d_layer, ga_flatten_layer, ga_dense_layer, ga_dropout_layer,
    ga_activation_layer, ga_batchnorm_layer, ga_global_avgpool_layer, ga_res_begin_layer, ga_res_end_layer,
    ga_avgpool2d_layer, ga_global_maxpool_layer, ga_rescaling_layer, ga_random_flip_layer,
    ga_random_translation_layer, ga_random_zoom_layer, ga_random_rotation_layer;

const ga_layer_ops *const ga_layer_table[GA_LAYER_KINDS] = {
    [GA_LAYER_CONV2D] = &ga_conv2d_layer,
    [GA_LAYER_MAXPOOL2D] = &ga_maxpool2d_layer,
    [GA_LAYER_FLATTEN] = &ga_flatten_layer,
    [GA_LAYER_DENSE] = &ga_dense_layer,
    [GA_LAYER_DROPOUT] = &ga_dropout_layer,
    [GA_LAYER_ACTIVATION] = &ga_activation_layer,
    [GA_LAYER_BATCHNORM] = &ga_batchnorm_layer,
    [GA_LAYER_GLOBAL_AVGPOOL] = &ga_global_avgpool_layer,
    [GA_LAYER_RES_BEGIN] = &ga_res_begin_layer,
    [GA_LAYER_RES_END] = &ga_res_end_layer,
    [GA_LAYER_AVGPOOL2D] = &ga_avgpool2d_layer,
    [GA_LAYER_GLOBAL_MAXPOOL] = &ga_global_maxpool_layer,
    [GA_LAYER_RESCALING] = &ga_rescaling_layer,
    [GA_LAYER_RANDOM_FLIP] = &ga_random_flip_layer,
    [GA_LAYER_RANDOM_TRANSLATION] = &ga_random_translation_layer,
    [GA_LAYER_RANDOM_ZOOM] = &ga_random_zoom_layer,
    [GA_LAYER_RANDOM_ROTATION] = &ga_random_rotation_layer,
};

const char *ga_layer_kind_name(int kind)
{
    return kind >= 0 && kind < GA_LAYER_KINDS ? ga_layer_table[kind]->kind : NULL;
}

const char *const *ga_layer_kind_keys(int kind)
{
    return kind >= 0 && kind < GA_LAYER_KINDS ? ga_layer_table[kind]->keys : NULL;
}

ga_status ga_net_backend_failed(const ga_backend *be, ga_status st)
{
    if (be->last_error != ga_last_error)
        ga_fail(st, "%s", be->last_error());
    return st;
}
#define backend_failed ga_net_backend_failed

void ga_layer_add_slot(ga_layer *l, const char *name, int block, int64_t off, int ndim, int64_t d0, int64_t d1,
                       int64_t d2, int64_t d3)
{
    if (l->nslots < GA_MAX_SLOTS)
        l->slots[l->nslots++] = (ga_slot){.name = name, .block = block, .ndim = ndim, .off = off,
                                          .shape = {d0, d1, d2, d3}};
}

void ga_layer_kernel_bias_slots(ga_layer *l, int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3)
{
    ga_layer_add_slot(l, "kernel", GA_BLOCK_PARAMS, l->w_off, ndim, d0, d1, d2, d3);
    if (l->nb)
        ga_layer_add_slot(l, "bias", GA_BLOCK_PARAMS, l->b_off, 1, l->nb, 0, 0, 0);
}

void ga_layer_glorot(const ga_net *net, const ga_layer *l, int i, double fan_in, double fan_out, float *host)
{
    float limit = (float)sqrt(6.0 / (fan_in + fan_out));
    uint64_t stream = ga_rng_hash(net->seed, (uint64_t)i);
    float *w = host + l->w_off;
    for (int64_t j = 0; j < l->nw; j++)
        w[j] = (2.0f * ga_rng_uniform(stream, (uint64_t)j) - 1.0f) * limit;
}

int64_t ga_conv_ws_floats(const ga_conv_shape *s)
{
    const int64_t f = ga_conv_fwd_ws_floats(s), b = ga_conv_bwd_ws_floats(s);
    return f > b ? f : b;
}

int64_t ga_conv_footprint(const ga_conv_shape *s)
{
    int64_t pq = checked_mul(s->p, s->q);
    int64_t col = checked_mul(checked_mul(checked_mul(s->c, s->r), s->s), pq);
    int64_t ws = checked_mul(s->k, pq);
    if (col < 0 || ws < 0 || col + ws > GA_MAX_ELEMS)
        return -1;
    return col + ws;
}

/* Output shape, parameter counts and slots of layer `i` given its input shape. */
static ga_status infer_layer(ga_net *net, int i, int64_t *nparams)
{
    ga_layer *l = &net->layers[i];
    const ga_layer_spec *sp = &l->spec;
    if (sp->units > GA_MAX_DIM || sp->kernel_h > GA_MAX_DIM || sp->kernel_w > GA_MAX_DIM ||
        sp->stride > GA_MAX_DIM || sp->pad > GA_MAX_DIM)
        return ga_fail(GA_ERR_VALUE, "layer %d: sizes above 2^31 - 1 are not supported", i);
    char what[48];
    snprintf(what, sizeof what, "layer %d (%s)", i, l->ops->name);
    GA_TRY(ga_check_act(what, sp->act));
    GA_TRY(l->ops->infer(net, l, i));
    if (l->nw < 0 || l->out[0] < 0 || checked_mul(checked_mul(l->out[0], l->out[1]), l->out[2]) < 0 ||
        *nparams + l->nw + l->nb > GA_MAX_ELEMS)
        return ga_fail(GA_ERR_VALUE, "layer %d: more than 2^40 weights or outputs per sample: too large", i);
    l->w_off = *nparams;
    l->b_off = l->w_off + l->nw;
    *nparams += l->nw + l->nb;
    l->nslots = 0;
    if (l->ops->describe)
        l->ops->describe(l);
    return GA_OK;
}

/* Initial weights, each layer's own (Glorot-uniform for kernels, zero biases). */
static void init_params(ga_net *net, float *host)
{
    if (net->nparams == 0)
        return;
    memset(host, 0, (size_t)net->nparams * sizeof(float));
    for (int i = 0; i < net->nlayers; i++) {
        const ga_layer *l = &net->layers[i];
        if (l->nw && l->ops->init)
            l->ops->init(net, l, i, host);
    }
}

/* ---- recorded calls (graphs) ---- */

/* Every recording points at the buffers it ran on: drop them all whenever one
 * moves (activations regrown, data rebound) or a number they hold by value
 * changes (learning rate, optimizer, trainable layers). */
static void drop_graphs(ga_net *net)
{
    for (int i = 0; i < GA_NET_GRAPHS; i++) {
        if (net->graphs[i].graph && net->be->graph_free)
            net->be->graph_free(net->graphs[i].graph);
        net->graphs[i] = (ga_net_graph){0};
    }
}

int ga_net_graph_count(const ga_net *net)
{
    int c = 0;
    for (int i = 0; i < GA_NET_GRAPHS; i++)
        c += net->graphs[i].graph != NULL;
    return c;
}

/* The host's counters to the device (after the host changed them). */
static ga_status put_counters(ga_net *net)
{
    const int64_t ctl[GA_STEP_COUNTERS] = {[GA_STEP_T] = net->t, [GA_STEP_DRAWS] = (int64_t)net->draws,
                                           [GA_STEP_POS] = net->pos, [GA_STEP_ZERO] = 0};
    BE(net, to_device(net->ctl, ctl, sizeof ctl));
    return GA_OK;
}

/* The counters move on, on the device (queued after the kernels that read the
 * old values) and in the host's mirrors: dt optimizer steps, the masks the
 * last forward drew, dpos samples. */
static ga_status advance(ga_net *net, int64_t dt, int64_t dpos)
{
    if (dt == 0 && dpos == 0 && net->fwd_draws == 0)
        return GA_OK;
    BE(net, advance_counters(net->ctl, dt, net->fwd_draws, dpos));
    net->t += dt;
    net->draws += (uint64_t)net->fwd_draws;
    net->pos += dpos;
    return GA_OK;
}

static void free_activations(ga_net *net)
{
    drop_graphs(net);
    const ga_backend *be = net->be;
    for (int i = 0; i < net->nlayers; i++) {
        ga_layer *l = &net->layers[i];
        be->release(l->y);
        be->release(l->col);
        be->release(l->arg);
        be->release(l->mask);
        be->release(l->dskip);
        be->release(l->z);
        l->y = l->col = l->mask = l->dskip = l->z = NULL;
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

ga_status ga_net_alloc_floats(ga_net *net, float **p, int64_t count)
{
    BE(net, alloc((void **)p, (size_t)count * sizeof(float)));
    return GA_OK;
}
#define alloc_floats ga_net_alloc_floats

ga_status ga_layer_reserve_output(ga_net *net, ga_layer *l, int64_t n, int64_t *ws)
{
    *ws = 0;
    return ga_net_alloc_floats(net, &l->y, n * per_sample(l->out));
}

ga_status ga_layer_reserve_z(ga_net *net, ga_layer *l, int64_t n)
{
    return ga_act_needs_z(l->spec.act) ? ga_net_alloc_floats(net, &l->z, n * per_sample(l->out)) : GA_OK;
}

ga_status ga_layer_finish_act(ga_net *net, ga_layer *l, int64_t count, float *y)
{
    if (ga_act_needs_z(l->spec.act))
        BE(net, act_forward(y, l->z, count, l->spec.act));
    return GA_OK;
}

ga_status ga_layer_reserve_none(ga_net *net, ga_layer *l, int64_t n, int64_t *ws)
{
    *ws = 0;
    return GA_OK;
}

ga_status ga_layer_forward_view(ga_net *net, ga_layer *l, int64_t n, int training, const float *in, float **y)
{
    *y = (float *)in;
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
        if (l->ops->footprint) {
            int64_t own = l->ops->footprint(l);
            if (own < 0)
                return -1;
            need = own > need ? own : need;
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
        int64_t need = 0;
        GA_TRY(l->ops->reserve(net, l, n, &need));
        ws = need > ws ? need : ws;
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
        if (l->spec.kind < 0 || l->spec.kind >= GA_LAYER_KINDS) {
            st = ga_fail(GA_ERR_VALUE, "layer %d: unknown layer kind %d", i, l->spec.kind);
            break;
        }
        l->ops = ga_layer_table[l->spec.kind];
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
    /* a layer may run with the next one as one kernel (conv -> max pool);
     * GPUACCEL_FUSE=0 turns this off, for tests that compare the two paths
     * and for measurements */
    const char *fuse_env = getenv("GPUACCEL_FUSE");
    const int fuse = !(fuse_env && strcmp(fuse_env, "0") == 0);
    for (int i = 0; i + 1 < nlayers && st == GA_OK && fuse; i++)
        if (net->layers[i].ops->fuse_next)
            net->layers[i].fused_pool = net->layers[i].ops->fuse_next(net, &net->layers[i]);
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
            (st = b->alloc((void **)&net->ctl, GA_STEP_COUNTERS * sizeof(int64_t))) == GA_OK &&
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
    if (st == GA_OK)
        st = put_counters(net);
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
        for (int i = 0; i < GA_DATA_SLOTS; i++)
            ga_net_clear_data(net, i);
        net->be->release(net->ctl);
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

ga_status ga_net_set_learning_rate(ga_net *net, float lr)
{
    if (!net)
        return ga_fail(GA_ERR_VALUE, "set_learning_rate: NULL net");
    if (!(lr >= 0.0f) || !isfinite(lr))
        return ga_fail(GA_ERR_VALUE, "learning rate must be finite and >= 0");
    if (lr != net->opt.lr)
        drop_graphs(net); /* the update kernels take it by value */
    net->opt.lr = lr;
    return GA_OK;
}

ga_status ga_net_set_precision(ga_net *net, int precision)
{
    if (precision != 0 && precision != GA_PRECISION_TF32)
        return ga_fail(GA_ERR_VALUE, "unknown precision flags 0x%x", precision);
    if (precision && net->be->host_memory)
        return ga_fail(GA_ERR_VALUE, "precision 'tf32' runs on NVIDIA tensor cores (sm_80+); the CPU computes in fp32");
    if (precision != net->precision)
        drop_graphs(net); /* the kernels take it by value */
    net->precision = precision;
    return GA_OK;
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
    drop_graphs(net);
    net->opt = *opt;
    net->t = 0;
    return put_counters(net);
}

/* Forward over the batch already in net->x; leaves the logits in the last
 * layer's y_seen. Dropout is active only when `training`. */
static ga_status forward(ga_net *net, int64_t n, int training)
{
    const float *in = net->x;
    net->fwd_draws = 0;
    for (int i = 0; i < net->nlayers; i++) {
        ga_layer *l = &net->layers[i];
        float *y = l->y;
        l->x_seen = in;
        GA_TRY(l->ops->forward(net, l, n, training, in, &y));
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
        const int need_dx = i > lowest || dx_at_lowest; /* false only on the last layer visited */
        int moved = 0;
        GA_TRY(l->ops->backward(net, l, n, training, lowest, need_dx, g, spare, &moved));
        if (moved) { /* the gradient now lives in spare */
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

/* The update of the trainable runs of the block, one fused launch per run; Adam
 * reads its step number from the counters (advanced before this). */
static ga_status update(ga_net *net)
{
    const ga_optimizer *o = &net->opt;
    for (int r = 0; r < net->nranges; r++) {
        const int64_t off = net->ranges[2 * r], cnt = net->ranges[2 * r + 1];
        if (o->kind == GA_OPT_ADAM)
            BE(net, adam_update(net->params + off, net->opt1 + off, net->opt2 + off, net->grads + off, cnt,
                                o->lr, o->beta1, o->beta2, o->eps, o->weight_decay, net->ctl + GA_STEP_T));
        else
            BE(net, sgd_update(net->params + off, net->opt1 + off, net->grads + off, cnt, o->lr, o->momentum,
                               o->weight_decay, o->nesterov));
    }
    return GA_OK;
}

/* After forward + loss of n samples: backward, counters, update. */
static ga_status finish_step(ga_net *net, int64_t n, int64_t dpos)
{
    if (net->lowest >= 0) {
        float *g;
        GA_TRY(backward(net, n, 1, net->lowest, 0, &g));
    }
    if (net->reducer.fn && net->nranges > 0) { /* data-parallel: sum the trainable span over the processes */
        const int64_t lo = net->ranges[0];
        const int64_t hi = net->ranges[2 * (net->nranges - 1)] + net->ranges[2 * net->nranges - 1];
        ga_status st = net->reducer.fn(net->reducer.ctx, net->be, net->device_index, net->grads + lo, hi - lo);
        if (st != GA_OK && net->reducer.last_error != ga_last_error) /* the reducer's module's message */
            ga_fail(st, "%s", net->reducer.last_error());
        if (st != GA_OK)
            return st;
    }
    GA_TRY(advance(net, 1, dpos));
    return update(net);
}

ga_status ga_net_train_step(ga_net *net, const float *x_host, const int32_t *labels_host,
                            int64_t n, float *loss, int64_t *correct)
{
    if (!labels_host)
        return ga_fail(GA_ERR_VALUE, "training needs labels");
    GA_TRY(load_and_forward(net, x_host, labels_host, n, 1, 1.0f / (float)(net->grad_batch ? net->grad_batch : n)));
    GA_TRY(finish_step(net, n, 0));
    float stats[2];
    BE(net, to_host(stats, net->stats, sizeof stats)); /* the step's one synchronisation */
    net->staged = 0;
    *loss = stats[0] / (float)n;
    *correct = (int64_t)stats[1];
    return GA_OK;
}

/* ---- data resident on the device ---- */

void ga_net_clear_data(ga_net *net, int slot)
{
    if (!net || slot < 0 || slot >= GA_DATA_SLOTS)
        return;
    ga_net_data *d = &net->data[slot];
    if (slot == GA_DATA_TRAIN && d->x)
        drop_graphs(net);
    if (net->be) {
        net->be->release(d->own);
        net->be->release(d->labels);
        net->be->release(d->order);
    }
    *d = (ga_net_data){0};
}

/* *p holds at least n items of `size` bytes: regrown when it is smaller (and
 * then, for the train slot's buffers, every recording dropped: they point at it). */
static ga_status hold(ga_net *net, int slot, void **p, int64_t *cap, int64_t n, size_t size)
{
    if (*p && *cap >= n)
        return GA_OK;
    if (slot == GA_DATA_TRAIN)
        drop_graphs(net);
    net->be->release(*p);
    *p = NULL;
    *cap = 0;
    BE(net, alloc(p, (size_t)n * size));
    *cap = n;
    return GA_OK;
}

ga_status ga_net_set_data(ga_net *net, int slot, const float *x_dev, const float *x_host,
                          const int32_t *labels_host, int64_t n)
{
    if (!net || slot < 0 || slot >= GA_DATA_SLOTS)
        return ga_fail(GA_ERR_VALUE, "set_data: no such data slot %d", slot);
    if (n <= 0 || (!x_dev && !x_host))
        return ga_fail(GA_ERR_VALUE, "set_data: need at least one sample");
    if (slot == GA_DATA_TRAIN && !labels_host)
        return ga_fail(GA_ERR_VALUE, "set_data: training data needs labels");
    if (n > GA_MAX_DIM)
        return ga_fail(GA_ERR_VALUE, "set_data: at most 2^31 - 1 samples");
    const int64_t row = per_sample(net->in);
    if (checked_mul(n, row) < 0 || n * row > GA_MAX_ELEMS)
        return ga_fail(GA_ERR_VALUE, "set_data: more than 2^40 floats");
    for (int64_t i = 0; labels_host && i < n; i++)
        if (labels_host[i] < 0 || labels_host[i] >= net->classes)
            return ga_fail(GA_ERR_VALUE, "label %d at index %lld is outside [0, %lld)", labels_host[i],
                           (long long)i, (long long)net->classes);
    BE(net, set_device(net->device_index));
    ga_net_data *d = &net->data[slot];
    if (!x_dev) {
        GA_TRY(hold(net, slot, (void **)&d->own, &d->x_cap, n, (size_t)row * sizeof(float)));
        BE(net, to_device(d->own, x_host, (size_t)(n * row) * sizeof(float)));
    }
    if (labels_host) {
        GA_TRY(hold(net, slot, (void **)&d->labels, &d->label_cap, n, sizeof(int32_t)));
        BE(net, to_device(d->labels, labels_host, (size_t)n * sizeof(int32_t)));
    }
    const float *x = x_dev ? x_dev : d->own;
    if (x != d->x && slot == GA_DATA_TRAIN)
        drop_graphs(net);
    d->x = x;
    d->n = n;
    d->has_labels = labels_host != NULL;
    if (slot == GA_DATA_TRAIN)
        return ga_net_set_order(net, NULL);
    return GA_OK;
}

ga_status ga_net_set_order(ga_net *net, const int32_t *order_host)
{
    ga_net_data *d = &net->data[GA_DATA_TRAIN];
    if (!d->x)
        return ga_fail(GA_ERR_VALUE, "set_order: no training data bound (set_data first)");
    for (int64_t i = 0; order_host && i < d->n; i++)
        if (order_host[i] < 0 || order_host[i] >= d->n)
            return ga_fail(GA_ERR_VALUE, "order[%lld] = %d is outside [0, %lld)", (long long)i, order_host[i],
                           (long long)d->n);
    BE(net, set_device(net->device_index));
    if (order_host) {
        GA_TRY(hold(net, GA_DATA_TRAIN, (void **)&d->order, &d->order_cap, d->n, sizeof(int32_t)));
        BE(net, to_device(d->order, order_host, (size_t)d->n * sizeof(int32_t)));
    }
    if (d->has_order != (order_host != NULL))
        drop_graphs(net);
    d->has_order = order_host != NULL;
    net->pos = 0;
    return put_counters(net);
}

/* k training steps of n samples each, from the train slot at the counters' position. */
static ga_status steps_on_data(ga_net *net, int64_t k, int64_t n)
{
    const ga_net_data *d = &net->data[GA_DATA_TRAIN];
    const float *logits = NULL;
    for (int64_t s = 0; s < k; s++) {
        BE(net, gather_rows(net->x, net->labels, d->x, d->labels, d->has_order ? d->order : NULL,
                            net->ctl + GA_STEP_POS, n, per_sample(net->in)));
        GA_TRY(forward(net, n, 1));
        logits = net->layers[net->nlayers - 1].y_seen;
        BE(net, softmax_xent(net->stats, net->grad_a, logits, net->labels, n, net->classes,
                             1.0f / (float)(net->grad_batch ? net->grad_batch : n)));
        GA_TRY(finish_step(net, n, n));
    }
    return GA_OK;
}

static int graphs_enabled(const ga_net *net)
{
    const char *env = getenv("GPUACCEL_CUDA_GRAPHS");
    return net->be->graph_begin && !net->reducer.fn && !(env && strcmp(env, "0") == 0);
}

/* The slot of key (k, n): found, or the oldest one replaced. */
static ga_net_graph *graph_slot(ga_net *net, int64_t k, int64_t n)
{
    ga_net_graph *g = &net->graphs[0];
    for (int i = 0; i < GA_NET_GRAPHS; i++) {
        ga_net_graph *c = &net->graphs[i];
        if (c->steps == k && c->n == n) {
            g = c;
            break;
        }
        if (c->stamp < g->stamp)
            g = c;
    }
    if (g->steps != k || g->n != n) {
        if (g->graph)
            net->be->graph_free(g->graph);
        *g = (ga_net_graph){.steps = k, .n = n};
    }
    g->stamp = ++net->graph_clock;
    return g;
}

/* k steps of n samples: replayed from a recording when there is one, recorded
 * the second time this (k, n) comes (so the first run sized every buffer and
 * measured every 'auto' convolution), else run as they are. */
static ga_status run_steps(ga_net *net, int64_t k, int64_t n)
{
    ga_net_graph *g = graphs_enabled(net) ? graph_slot(net, k, n) : NULL;
    if (g && g->graph && g->generation != net->be->graph_generation()) {
        net->be->graph_free(g->graph); /* the backend's scratch moved under it */
        g->graph = NULL;
    }
    if (g && !g->graph && g->seen == 1) {
        const int64_t t0 = net->t, p0 = net->pos;
        const uint64_t d0 = net->draws;
        ga_status st = net->be->graph_begin();
        if (st == GA_OK) {
            ga_status run = steps_on_data(net, k, n);
            void *graph = NULL;
            st = net->be->graph_end(&graph);
            if (run != GA_OK || st != GA_OK) {
                if (graph)
                    net->be->graph_free(graph);
                graph = NULL;
            }
            g->graph = graph;
        }
        /* recorded, not run: the counters move when it is launched */
        g->draws = (net->draws - d0) / (uint64_t)k;
        net->t = t0, net->pos = p0, net->draws = d0;
        g->generation = net->be->graph_generation();
        if (!g->graph)
            g->seen = -1; /* could not record it: run it as it is from now on */
    }
    if (g && g->graph) {
        BE(net, graph_launch(g->graph));
        net->t += k;
        net->pos += k * n;
        net->draws += (uint64_t)k * g->draws;
        return GA_OK;
    }
    if (g && g->seen == 0)
        g->seen = 1;
    return steps_on_data(net, k, n);
}

ga_status ga_net_train_steps(ga_net *net, int64_t steps, int64_t batch, int64_t *done, int64_t *samples,
                             double *loss_sum, int64_t *correct)
{
    *done = *samples = *correct = 0;
    *loss_sum = 0.0;
    const ga_net_data *d = &net->data[GA_DATA_TRAIN];
    if (steps <= 0 || batch <= 0)
        return ga_fail(GA_ERR_VALUE, "train_steps: steps and batch size must be >= 1");
    if (!d->x || !d->has_labels)
        return ga_fail(GA_ERR_VALUE, "train_steps: no labelled training data bound (set_data first)");
    const int64_t left = d->n - net->pos;
    if (left <= 0)
        return GA_OK;
    /* the loss and the count add up in floats on the device: at most 2^24 samples */
    const int64_t most = ((int64_t)1 << 24) / batch > 0 ? ((int64_t)1 << 24) / batch : 1;
    int64_t full = left / batch < steps ? left / batch : steps;
    full = full < most ? full : most;
    const int64_t part = full < steps && full < most ? (left - full * batch < batch ? left - full * batch : 0) : 0;
    BE(net, set_device(net->device_index));
    if (net->staged) {
        BE(net, synchronize());
        net->staged = 0;
    }
    GA_TRY(reserve(net, full ? batch : part));
    BE(net, zero(net->stats, 2 * sizeof(float)));
    if (full)
        GA_TRY(run_steps(net, full, batch));
    if (part)
        GA_TRY(run_steps(net, 1, part));
    float stats[2];
    BE(net, to_host(stats, net->stats, sizeof stats)); /* the call's one synchronisation */
    *done = full + (part > 0);
    *samples = full * batch + part;
    *loss_sum = stats[0];
    *correct = (int64_t)stats[1];
    return GA_OK;
}

/* Inference over slot's batches: each to the input buffer, forward, then `each`. */
static ga_status infer_data(ga_net *net, int slot, int64_t batch, int with_loss, float *logits_host)
{
    if (slot < 0 || slot >= GA_DATA_SLOTS || batch <= 0)
        return ga_fail(GA_ERR_VALUE, "bad data slot or batch size");
    const ga_net_data *d = &net->data[slot];
    if (!d->x || (with_loss && !d->has_labels))
        return ga_fail(GA_ERR_VALUE, with_loss ? "no labelled data bound" : "no data bound");
    BE(net, set_device(net->device_index));
    if (net->staged) {
        BE(net, synchronize());
        net->staged = 0;
    }
    const int64_t row = per_sample(net->in);
    GA_TRY(reserve(net, batch < d->n ? batch : d->n));
    BE(net, zero(net->stats, 2 * sizeof(float)));
    for (int64_t i = 0; i < d->n; i += batch) {
        const int64_t m = d->n - i < batch ? d->n - i : batch;
        BE(net, gather_rows(net->x, with_loss ? net->labels : NULL, d->x + i * row, with_loss ? d->labels + i : NULL,
                            NULL, net->ctl + GA_STEP_ZERO, m, row));
        GA_TRY(forward(net, m, 0));
        const float *logits = net->layers[net->nlayers - 1].y_seen;
        if (with_loss)
            BE(net, softmax_xent(net->stats, NULL, logits, net->labels, m, net->classes, 0.0f));
        else
            BE(net, to_host(logits_host + i * net->classes, logits, (size_t)(m * net->classes) * sizeof(float)));
    }
    return GA_OK;
}

ga_status ga_net_evaluate_data(ga_net *net, int slot, int64_t batch, double *loss_sum, int64_t *correct)
{
    GA_TRY(infer_data(net, slot, batch, 1, NULL));
    float stats[2];
    BE(net, to_host(stats, net->stats, sizeof stats));
    *loss_sum = stats[0];
    *correct = (int64_t)stats[1];
    return GA_OK;
}

ga_status ga_net_predict_data(ga_net *net, int slot, int64_t batch, float *logits_host)
{
    if (!logits_host)
        return ga_fail(GA_ERR_VALUE, "predict: NULL output");
    return infer_data(net, slot, batch, 0, logits_host);
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

/* The arguments of get/set_opt_state: the optimizer set now, its moment blocks
 * (Adam two, SGD one, the second NULL), `count` the parameter block's size. */
static ga_status check_opt_state(const ga_net *net, const char *what, int kind, int64_t count, const void *m1,
                                 const void *m2, const int64_t *counters)
{
    if (!net)
        return ga_fail(GA_ERR_VALUE, "%s: NULL net", what);
    if (kind != GA_OPT_SGD && kind != GA_OPT_ADAM)
        return ga_fail(GA_ERR_VALUE, "%s: unknown optimizer kind %d", what, kind);
    if (kind != net->opt.kind)
        return ga_fail(GA_ERR_VALUE, "%s: the state is for %s, the network's optimizer is %s", what,
                       kind == GA_OPT_ADAM ? "Adam" : "SGD", net->opt.kind == GA_OPT_ADAM ? "Adam" : "SGD");
    if (count != net->nparams)
        return ga_fail(GA_ERR_VALUE, "%s: moment blocks of %lld values, the network has %lld parameters", what,
                       (long long)count, (long long)net->nparams);
    if (!m1 || !counters)
        return ga_fail(GA_ERR_VALUE, "%s: NULL moment block or counters", what);
    if (kind == GA_OPT_ADAM && !m2)
        return ga_fail(GA_ERR_VALUE, "%s: Adam needs its second moment block", what);
    if (kind == GA_OPT_SGD && m2)
        return ga_fail(GA_ERR_VALUE, "%s: SGD keeps one moment block (the second must be NULL)", what);
    return GA_OK;
}

ga_status ga_net_get_opt_state(ga_net *net, int kind, int64_t count, float *m1, float *m2, int64_t counters[2])
{
    GA_TRY(check_opt_state(net, "get_opt_state", kind, count, m1, m2, counters));
    const size_t bytes = (size_t)net->nparams * sizeof(float);
    BE(net, set_device(net->device_index));
    BE(net, to_host(m1, net->opt1, bytes));
    if (m2)
        BE(net, to_host(m2, net->opt2, bytes));
    counters[0] = net->t; /* the host mirrors are current after every call */
    counters[1] = (int64_t)net->draws;
    return GA_OK;
}

ga_status ga_net_set_opt_state(ga_net *net, int kind, int64_t count, const float *m1, const float *m2,
                               const int64_t counters[2])
{
    GA_TRY(check_opt_state(net, "set_opt_state", kind, count, m1, m2, counters));
    if (counters[0] < 0 || counters[1] < 0)
        return ga_fail(GA_ERR_VALUE, "set_opt_state: step count and draws must be >= 0, got %lld and %lld",
                       (long long)counters[0], (long long)counters[1]);
    const size_t bytes = (size_t)net->nparams * sizeof(float);
    BE(net, set_device(net->device_index));
    BE(net, to_device(net->opt1, m1, bytes));
    if (m2)
        BE(net, to_device(net->opt2, m2, bytes));
    net->t = counters[0];
    net->draws = (uint64_t)counters[1];
    /* Recorded graphs stay valid: they read the counters from ctl (device memory,
     * core/steps.h) and the moments through the same pointers; nothing here is
     * baked into a recording by value. */
    return put_counters(net);
}

ga_status ga_net_set_trainable(ga_net *net, const int *flags)
{
    drop_graphs(net); /* the update's runs and backward's lowest layer change */
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
    GA_TRY(advance(net, 0, 0)); /* the dropout masks it drew */
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

/* ---- data-parallel training: the gradient reducer (net.h) ---- */

ga_status ga_net_set_reducer(ga_net *net, const ga_net_reducer *r)
{
    if (!net)
        return ga_fail(GA_ERR_VALUE, "set_reducer: NULL net");
    if (r && r->fn && r->abi != GA_NET_REDUCER_ABI)
        return ga_fail(GA_ERR_VALUE, "set_reducer: the reducer was built for ABI %d, the net expects %d", r->abi,
                       GA_NET_REDUCER_ABI);
    if (r && r->fn && !r->last_error)
        return ga_fail(GA_ERR_VALUE, "set_reducer: a reducer needs its last_error function");
    drop_graphs(net); /* none is recorded while a reducer is set */
    net->reducer = r && r->fn ? *r : (ga_net_reducer){0};
    return GA_OK;
}

ga_status ga_net_set_rng_salt(ga_net *net, uint64_t salt)
{
    if (!net)
        return ga_fail(GA_ERR_VALUE, "set_rng_salt: NULL net");
    if (salt != net->rng_salt)
        drop_graphs(net); /* the kernels take the stream seed by value */
    net->rng_salt = salt;
    return GA_OK;
}

ga_status ga_net_set_grad_batch(ga_net *net, int64_t global_batch)
{
    if (!net)
        return ga_fail(GA_ERR_VALUE, "set_grad_batch: NULL net");
    if (global_batch < 0 || global_batch > GA_MAX_DIM)
        return ga_fail(GA_ERR_VALUE, "set_grad_batch: the global batch must be in [0, 2^31), got %lld",
                       (long long)global_batch);
    if (global_batch != net->grad_batch)
        drop_graphs(net); /* the loss kernel takes the divisor by value */
    net->grad_batch = global_batch;
    return GA_OK;
}
