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

static ga_conv_shape conv_shape(const ga_layer *l, int64_t n)
{
    ga_conv_shape s = {
        .n = n, .c = l->in[0], .h = l->in[1], .w = l->in[2],
        .k = l->spec.units, .r = l->spec.kernel_h, .s = l->spec.kernel_w,
        .stride = l->spec.stride, .pad = l->spec.pad, .p = l->out[1], .q = l->out[2],
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

/* Output shape and parameter count of layer `i` given its input shape. */
static ga_status infer_layer(ga_layer *l, int i, int64_t *nparams)
{
    const ga_layer_spec *sp = &l->spec;
    const int64_t c = l->in[0], h = l->in[1], w = l->in[2];
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
        l->nw = sp->units * c * sp->kernel_h * sp->kernel_w;
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
        l->out[0] = c * h * w;
        l->out[1] = l->out[2] = 1;
        break;
    case GA_LAYER_DENSE:
        if (sp->units <= 0)
            return ga_fail(GA_ERR_VALUE, "layer %d (Dense): units must be positive", i);
        l->out[0] = sp->units;
        l->out[1] = l->out[2] = 1;
        l->nw = sp->units * c * h * w; /* a non-flat input is read in C, H, W order */
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
    default:
        return ga_fail(GA_ERR_VALUE, "layer %d: unknown layer kind %d", i, sp->kind);
    }
    l->w_off = *nparams;
    l->b_off = l->w_off + l->nw;
    *nparams += l->nw + l->nb;
    return GA_OK;
}

/* Glorot-uniform weights (the Keras default), zero biases, from the
 * counter-based stream so the same seed gives the same net on every device. */
static void init_params(ga_net *net, float *host)
{
    memset(host, 0, (size_t)net->nparams * sizeof(float));
    for (int i = 0; i < net->nlayers; i++) {
        const ga_layer *l = &net->layers[i];
        if (l->nw == 0)
            continue;
        double fan_in, fan_out;
        if (l->spec.kind == GA_LAYER_CONV2D) {
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
        l->y = l->col = l->mask = NULL;
        l->arg = NULL;
    }
    be->release(net->x);
    be->release(net->labels);
    be->release(net->grad_a);
    be->release(net->grad_b);
    be->release(net->ws);
    net->x = net->grad_a = net->grad_b = net->ws = NULL;
    net->labels = NULL;
    net->cap = 0;
}

static ga_status alloc_floats(ga_net *net, float **p, int64_t count)
{
    BE(net, alloc((void **)p, (size_t)count * sizeof(float)));
    return GA_OK;
}

/* Make every activation buffer hold at least n samples. */
static ga_status reserve(ga_net *net, int64_t n)
{
    if (n <= net->cap)
        return GA_OK;
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
        case GA_LAYER_DENSE:
        case GA_LAYER_RELU:
            GA_TRY(alloc_floats(net, &l->y, n * out));
            break;
        default: /* flatten: a view of its input */
            break;
        }
    }
    GA_TRY(alloc_floats(net, &net->x, n * per_sample(net->in)));
    BE(net, alloc((void **)&net->labels, (size_t)n * sizeof(int32_t)));
    GA_TRY(alloc_floats(net, &net->grad_a, n * act));
    GA_TRY(alloc_floats(net, &net->grad_b, n * act));
    GA_TRY(alloc_floats(net, &net->ws, ws));
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
        if (in_shape[d] <= 0)
            return ga_fail(GA_ERR_VALUE, "input shape must be positive (C, H, W)");
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
    const int64_t *shape = in_shape;
    for (int i = 0; i < nlayers && st == GA_OK; i++) {
        ga_layer *l = &net->layers[i];
        l->spec = specs[i];
        memcpy(l->in, shape, sizeof l->in);
        st = infer_layer(l, i, &net->nparams);
        shape = l->out;
    }
    if (st == GA_OK) {
        const ga_layer *last = &net->layers[nlayers - 1];
        net->classes = per_sample(last->out);
        if (last->out[1] != 1 || last->out[2] != 1)
            st = ga_fail(GA_ERR_VALUE, "the last layer must output a vector of class scores (add Flatten and Dense)");
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
            (st = b->to_device(net->params, host, bytes)) == GA_OK &&
            (st = b->zero(net->opt1, bytes)) == GA_OK)
            st = b->zero(net->opt2, bytes);
        if (st != GA_OK)
            backend_failed(be, st);
    }
    ga_host_free(host);
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
    }
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

/* Backward from dlogits in net->grad_a; fills net->grads. */
static ga_status backward(ga_net *net, int64_t n, int training)
{
    float *g = net->grad_a, *spare = net->grad_b;
    for (int i = net->nlayers - 1; i >= 0; i--) {
        ga_layer *l = &net->layers[i];
        const float *w = net->params + l->w_off;
        float *dw = net->grads + l->w_off, *db = l->nb ? net->grads + l->b_off : NULL;
        const int64_t count = n * per_sample(l->out);
        const int need_dx = i > 0; /* nothing below the first layer wants dx */
        switch (l->spec.kind) {
        case GA_LAYER_CONV2D: {
            ga_conv_shape s = conv_shape(l, n);
            if (l->spec.relu)
                BE(net, relu_backward(g, l->y_seen, g, count));
            BE(net, conv2d_backward(need_dx ? spare : NULL, dw, db, net->ws, l->x_seen, l->col, w, g,
                                    &s, GA_VARIANT_FAST));
            break;
        }
        case GA_LAYER_MAXPOOL2D: {
            ga_pool_shape s = pool_shape(l, n);
            if (need_dx)
                BE(net, maxpool_backward(spare, g, l->arg, &s));
            break;
        }
        case GA_LAYER_DENSE: {
            const int64_t fin = per_sample(l->in), units = l->spec.units;
            if (l->spec.relu)
                BE(net, relu_backward(g, l->y_seen, g, count));
            BE(net, gemm(dw, g, l->x_seen, 1, 0, units, fin, n, units, fin, fin, 1.0f, 0.0f, GA_VARIANT_FAST));
            if (db)
                BE(net, sum_rows(db, g, n, units));
            if (need_dx)
                BE(net, gemm(spare, g, w, 0, 0, n, fin, units, units, fin, fin, 1.0f, 0.0f, GA_VARIANT_FAST));
            break;
        }
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
        float *t = g; /* the gradient now lives in spare */
        g = spare;
        spare = t;
    }
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

/* Copies the batch in and runs forward + loss; stats left on the device. */
static ga_status load_and_forward(ga_net *net, const float *x_host, const int32_t *labels_host,
                                  int64_t n, int training, float grad_scale)
{
    GA_TRY(check_batch(net, x_host, n));
    BE(net, set_device(net->device_index));
    GA_TRY(reserve(net, n));
    BE(net, to_device(net->x, x_host, (size_t)(n * per_sample(net->in)) * sizeof(float)));
    GA_TRY(forward(net, n, training));
    if (!labels_host)
        return GA_OK;
    BE(net, to_device(net->labels, labels_host, (size_t)n * sizeof(int32_t)));
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
    GA_TRY(backward(net, n, 1));
    net->t++;
    const ga_optimizer *o = &net->opt;
    if (o->kind == GA_OPT_ADAM)
        BE(net, adam_update(net->params, net->opt1, net->opt2, net->grads, net->nparams, o->lr,
                            o->beta1, o->beta2, o->eps, o->weight_decay, net->t));
    else
        BE(net, sgd_update(net->params, net->opt1, net->grads, net->nparams, o->lr, o->momentum,
                           o->weight_decay, o->nesterov));
    float stats[2];
    BE(net, to_host(stats, net->stats, sizeof stats)); /* the step's one synchronisation */
    *loss = stats[0] / (float)n;
    *correct = (int64_t)stats[1];
    return GA_OK;
}

ga_status ga_net_predict(ga_net *net, const float *x_host, int64_t n, float *logits_host)
{
    GA_TRY(load_and_forward(net, x_host, NULL, n, 0, 0.0f));
    const float *logits = net->layers[net->nlayers - 1].y_seen;
    BE(net, to_host(logits_host, logits, (size_t)(n * net->classes) * sizeof(float)));
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
