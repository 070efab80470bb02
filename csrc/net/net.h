/* A sequential network on one device: the layer table, its buffers, and the
 * training step (forward, loss, backward, update) as one call.
 *
 * Every kernel goes through net->be (core/backend.h), so the same code trains
 * on the CPU and on a GPU; only the table differs. All buffers live on the
 * device; the host sees only the batch going in and two numbers coming out. */
#ifndef GA_NET_H
#define GA_NET_H

#include <stdint.h>

#include "core/backend.h"

typedef enum {
    GA_LAYER_CONV2D = 0,
    GA_LAYER_MAXPOOL2D,
    GA_LAYER_FLATTEN,
    GA_LAYER_DENSE,
    GA_LAYER_DROPOUT,
    GA_LAYER_ACTIVATION,     /* an activation on its own (ReLU, Activation, LeakyReLU, ELU) */
    GA_LAYER_BATCHNORM,      /* per-channel normalisation, gamma/beta + moving mean/var */
    GA_LAYER_GLOBAL_AVGPOOL, /* (C, H, W) -> (C, 1, 1) */
    GA_LAYER_RES_BEGIN,      /* residual block: remembers its input (the skip) */
    GA_LAYER_RES_END,        /* residual block: y = act(branch + skip (or 1x1 projection of it)) */
    GA_LAYER_AVGPOOL2D,      /* window means, the MaxPool2D geometry */
    GA_LAYER_GLOBAL_MAXPOOL, /* (C, H, W) -> (C, 1, 1) maxima, argmax kept */
    GA_LAYER_RESCALING,      /* y = x scale + offset, always on (layers/augment.c) */
    GA_LAYER_RANDOM_FLIP,    /* random augmentation, training only, before any layer with weights: */
    GA_LAYER_RANDOM_TRANSLATION, /*   one affine kernel (core/augment.h) for the four of them */
    GA_LAYER_RANDOM_ZOOM,
    GA_LAYER_RANDOM_ROTATION,
    GA_LAYER_KINDS
} ga_layer_kind;

/* The most spec keys a kind reads besides "kind". */
#define GA_LAYER_MAX_KEYS 10

/* A kind's name in a spec ("conv2d", ...) and the spec keys it reads besides
 * "kind" (a list ended by NULL, at most 8); NULL for an unknown kind. */
const char *ga_layer_kind_name(int kind);
const char *const *ga_layer_kind_keys(int kind);

typedef struct ga_layer_ops ga_layer_ops; /* net/layer.h: what each kind does */

/* Residual blocks are brackets in the linear table: RES_BEGIN, the branch's
 * layers, RES_END (nesting allowed). Forward: RES_BEGIN is a view of its input;
 * RES_END adds that input (through a 1x1 convolution with stride when
 * `projection` is on) to the branch output and applies its activation.
 * Backward: RES_END passes its gradient to the branch unchanged and keeps the
 * skip's gradient (through the projection) in `dskip`; RES_BEGIN adds it. */
enum { GA_PROJ_NONE = 0, GA_PROJ_YES = 1, GA_PROJ_AUTO = 2 };

typedef struct {
    int kind;                     /* ga_layer_kind */
    int64_t units;                /* conv filters, dense units */
    int64_t kernel_h, kernel_w;   /* conv kernel; pool window (kernel_h) */
    int64_t stride, pad;          /* conv and pool */
    ga_act act;                   /* conv, dense, residual end (fused), activation layer */
    int use_bias;                 /* conv and dense */
    int kernel;                   /* conv: the algorithm, a GA_VARIANT_* or GA_CONV_AUTO */
    float rate;                   /* dropout */
    float momentum, eps;          /* batch norm (Keras: 0.99, 1e-3) */
    int projection;               /* residual end: GA_PROJ_* (AUTO: iff shapes differ);
                                     stride 0 = inferred, use_bias for the projection */
    float scale, offset;          /* rescaling */
    /* random augmentation (Keras's arguments; layers/augment.c turns them into l->aug):
     * flip: "mode" as GA_AUG_FLIP_* bits; translation and zoom: height_factor and
     * width_factor as [lo, hi] (factor_w_set = 0: width_factor None); rotation:
     * "factor" in factor_h */
    int flip_mode;
    float factor_h[2], factor_w[2];
    int factor_w_set;
    int fill_mode, interpolation; /* GA_FILL_*, GA_INTERP_* */
    float fill_value;
    int64_t seed;                 /* the layer's seed= (seeded = 0: None) */
    int seeded;
} ga_layer_spec;

/* One named array of a layer's weights or state, as get_weights() shows it:
 * where it lives (the parameter or the state block), its offset and shape. */
enum { GA_BLOCK_PARAMS = 0, GA_BLOCK_STATE = 1 };
#define GA_MAX_SLOTS 4
typedef struct {
    const char *name;             /* "kernel", "bias", "gamma", "moving_mean", ... */
    int block;                    /* GA_BLOCK_* */
    int ndim;
    int64_t off;                  /* in floats, inside its block */
    int64_t shape[4];
} ga_slot;

typedef struct {
    ga_layer_spec spec;
    const ga_layer_ops *ops;      /* the kind's operations (csrc/net/layers/) */
    int64_t in[3], out[3];        /* per-sample (C, H, W); vectors are (F, 1, 1) */
    int64_t w_off, nw, b_off, nb; /* weights and bias inside the parameter block */
    float *y;                     /* output buffer (cap samples); NULL for views */
    float *col;                   /* conv: im2col of the input, kept for backward */
    int32_t *arg;                 /* max-pool, global max-pool: argmax indices */
    float *mask;                  /* dropout: the scaled keep mask */
    float *z;                     /* the pre-activation, kept when the activation's
                                     derivative needs it (gelu, silu: ga_act_needs_z) */
    const float *x_seen;          /* input and output of the last forward */
    float *y_seen;
    int trainable;                /* weights updated, their gradients computed (default 1) */
    int match;                    /* residual: index of the matching begin / end */
    int proj;                     /* residual end: 1 when the skip goes through a 1x1 conv */
    int64_t proj_stride;          /* residual end: stride of that conv */
    int64_t skip[3];              /* residual end: per-sample shape of the skip */
    float *dskip;                 /* residual end: gradient of the skip (cap samples) */
    int64_t s_off, ns;            /* batch norm: moving mean, variance in the state block */
    int64_t a_off;                /* batch norm: batch mean, invstd of the last forward in aux */
    int variant;                  /* conv: the algorithm its last forward ran (GA_VARIANT_*;
                                     GA_CONV_AUTO before the first forward measured it) */
    int fused_pool;               /* conv: runs with the max pool after it as one kernel
                                     (its own output is never stored; y is NULL) */
    ga_augment aug;               /* random augmentation: the kernel's parameters */
    uint64_t aug_seed;            /* random augmentation: the layer's stream (model seed, layer seed) */
    int nslots;                   /* its weights and state, in get_weights() order */
    ga_slot slots[GA_MAX_SLOTS];
} ga_layer;

enum { GA_OPT_SGD = 0, GA_OPT_ADAM = 1 };

typedef struct {
    int kind;
    float lr, momentum, beta1, beta2, eps, weight_decay;
    int nesterov;
} ga_optimizer;

/* A data set resident on the device, batched there by gather_rows. */
enum {
    GA_DATA_TRAIN = 0, /* fit's training data, in the epoch's order */
    GA_DATA_EVAL = 1,  /* fit's validation data */
    GA_DATA_INFER = 2, /* one evaluate / predict call's data (bound, used, cleared at once) */
    GA_DATA_SLOTS = 3
};
typedef struct {
    const float *x;         /* device: (n, C, H, W), borrowed or `own` */
    float *own;             /* device: the copy of a host array (grown, never shrunk) */
    int64_t x_cap;          /* samples `own` holds */
    int32_t *labels;        /* device: (n) labels when has_labels */
    int64_t label_cap;
    int has_labels;
    int64_t n;
    int32_t *order;         /* device: the epoch's order (train slot) when has_order */
    int64_t order_cap;
    int has_order;          /* 0: the identity */
} ga_net_data;

/* One recorded training call: `steps` steps of `n` samples (a backend graph),
 * recorded the second time that call is made (the first one runs as it is:
 * buffers grow, 'auto' convolutions measure) and replayed from then on. */
#define GA_NET_GRAPHS 4
typedef struct {
    int64_t steps, n;       /* the key; steps == 0: a free slot */
    int seen;               /* the call ran once without recording */
    void *graph;            /* the backend's recording, or NULL */
    uint64_t generation;    /* the backend's graph_generation() when recorded */
    int64_t draws;          /* dropout masks one of its steps draws */
    uint64_t stamp;         /* last use, for replacing the oldest */
} ga_net_graph;

/* A gradient reducer (data-parallel training, gpuaccel._mpi): called by every
 * training step after backward has filled the gradient block and before the
 * optimizer update, with the block's trainable span (grads: `count` floats of
 * the device's memory). It must sum the span over the processes in place (the
 * step already divided each process's loss by the global batch, see
 * ga_net_set_grad_batch) and return GA_OK, or an error status with its message
 * in its own module's last_error(). be and device_index are the net's device:
 * a reducer may copy through be, set the device, or queue work on its stream. */
typedef ga_status (*ga_net_reduce_fn)(void *ctx, const ga_backend *be, int device_index, float *grads,
                                      int64_t count);
#define GA_NET_REDUCER_ABI 1
typedef struct {
    int abi;                       /* GA_NET_REDUCER_ABI */
    ga_net_reduce_fn fn;           /* NULL: no reducer */
    void *ctx;
    const char *(*last_error)(void); /* the reducer's module's message */
} ga_net_reducer;

typedef struct ga_net {
    const ga_backend *be;
    int device_index;
    int nlayers;
    ga_layer *layers;
    int64_t in[3];
    int64_t classes;
    int64_t nparams;
    int64_t footprint;      /* largest buffer, in floats per sample (checked against overflow) */
    float *params, *grads;  /* device: all weights, then all gradients, same layout */
    float *opt1, *opt2;     /* device: momentum / Adam m and v */
    int64_t nstate;
    float *state;           /* device: non-trainable state (batch-norm moving mean, variance) */
    float *aux;             /* device: batch-norm statistics of the last forward */
    int64_t naux;
    int64_t *ranges;        /* host: nranges (offset, count) runs of trainable parameters */
    int nranges;
    int64_t ntrainable;     /* trainable parameters (sum of the runs) */
    int lowest;             /* lowest layer with trainable weights (-1: none): backward stops there */
    int last_training;      /* mode of the last forward (for ga_net_backward) */
    int64_t last_n;
    ga_optimizer opt;
    int precision;          /* 0 (fp32) or GA_PRECISION_TF32: OR'ed into every GEMM's variant */
    int64_t t;              /* optimizer steps taken (host mirror of ctl[GA_STEP_T]) */
    uint64_t seed, draws;   /* dropout: seed and masks drawn so far (mirror of ctl[GA_STEP_DRAWS]) */
    int64_t pos;            /* mirror of ctl[GA_STEP_POS]: the next batch's place in the order */
    int64_t *ctl;           /* device: the step counters the kernels read (core/steps.h) */
    int fwd_draws;          /* masks drawn by the forward pass running now */
    ga_net_data data[GA_DATA_SLOTS];
    ga_net_graph graphs[GA_NET_GRAPHS];
    uint64_t graph_clock;
    /* activation buffers, sized for `cap` samples */
    int64_t cap;
    float *x;
    int32_t *labels;
    float *grad_a, *grad_b, *ws, *stats;
    /* host, only when the backend has host_alloc (a GPU): pinned staging for one
     * batch of `cap` samples, the input (cap C H W floats) then the labels (cap
     * int32). The batch is copied here and sent with to_device_async, so the
     * copy runs on the device's stream instead of as a pageable (blocking) copy. */
    void *stage;
    int staged;             /* 1 while a copy out of `stage` may still be in flight
                               (set when queued, cleared by the call's read-back) */
    ga_net_reducer reducer; /* data-parallel training: ga_net_set_reducer */
    int64_t grad_batch;     /* the loss's divisor (0: each step's own sample count) */
    uint64_t rng_salt;      /* mixed into the dropout / augmentation streams (ga_net_set_rng_salt) */
} ga_net;

ga_status ga_net_create(ga_net **out, const ga_backend *be, int device_index,
                        const ga_layer_spec *specs, int nlayers, const int64_t in_shape[3],
                        uint64_t seed);
void ga_net_destroy(ga_net *net);

/* The arithmetic of the network's matrix products: 0 (fp32) or GA_PRECISION_TF32
 * (tensor cores; refused where the device has none, the CPU included). */
ga_status ga_net_set_precision(ga_net *net, int precision);

/* Replaces the optimizer and clears its state (momentum, Adam moments, step). */
ga_status ga_net_set_optimizer(ga_net *net, const ga_optimizer *opt);
/* A new learning rate for the optimizer in place; its moments and step count stay
 * (learning-rate schedules). */
ga_status ga_net_set_learning_rate(ga_net *net, float lr);

/* x_host (n, C, H, W), labels_host (n) in [0, classes): one SGD/Adam step.
 * loss = mean loss of the batch before the update, correct = right argmaxes. */
ga_status ga_net_train_step(ga_net *net, const float *x_host, const int32_t *labels_host,
                            int64_t n, float *loss, int64_t *correct);

/* --- data resident on the device: many steps per call, no host copies per step ---
 * Binds slot (GA_DATA_*) to x (n, C, H, W): x_dev is device memory the caller keeps
 * alive and unchanged until the slot is bound again or cleared (a Tensor; on the CPU
 * any host array), or NULL to copy x_host in. labels_host (n) in [0, classes) is
 * copied (NULL: a slot only predict reads). The train slot's order becomes the
 * identity and its position the start. */
ga_status ga_net_set_data(ga_net *net, int slot, const float *x_dev, const float *x_host,
                          const int32_t *labels_host, int64_t n);
void ga_net_clear_data(ga_net *net, int slot);
/* The train slot's order for the next epoch: order_host (n entries in [0, n)), or
 * NULL for the identity; the position goes back to the start. */
ga_status ga_net_set_order(ga_net *net, const int32_t *order_host);
/* Up to `steps` training steps on the train slot's next batches of `batch` samples
 * in its order (the last batch of the data set may be shorter; none past its end),
 * as one call with one synchronisation: *done steps ran over *samples samples,
 * *loss_sum the sum of their losses (each before its step's update), *correct the
 * right argmaxes. On a device with graphs a call made before with the same sizes
 * replays its recording (GPUACCEL_CUDA_GRAPHS=0: never recorded); same results. */
ga_status ga_net_train_steps(ga_net *net, int64_t steps, int64_t batch, int64_t *done, int64_t *samples,
                             double *loss_sum, int64_t *correct);
/* Inference over a bound slot in batches of `batch`, one call: evaluate sums the
 * losses and right argmaxes (the slot needs labels), predict writes logits_host
 * (n, classes). */
ga_status ga_net_evaluate_data(ga_net *net, int slot, int64_t batch, double *loss_sum, int64_t *correct);
ga_status ga_net_predict_data(ga_net *net, int slot, int64_t batch, float *logits_host);
/* Recorded graphs held now (0 on the CPU), for tests and reports. */
int ga_net_graph_count(const ga_net *net);

/* Inference (dropout off): logits_host (n, classes). */
ga_status ga_net_predict(ga_net *net, const float *x_host, int64_t n, float *logits_host);

/* Inference loss: *loss_sum = sum of the n losses, *correct = right argmaxes. */
ga_status ga_net_evaluate(ga_net *net, const float *x_host, const int32_t *labels_host,
                          int64_t n, double *loss_sum, int64_t *correct);

/* Host copies of the parameter block (nparams floats) and optimizer state. */
ga_status ga_net_get_params(ga_net *net, float *host);
ga_status ga_net_set_params(ga_net *net, const float *host);

/* Host copies of the non-trainable state block (nstate floats). */
ga_status ga_net_get_state(ga_net *net, float *host);
ga_status ga_net_set_state(ga_net *net, const float *host);

/* The optimizer's state, for resuming training bit for bit (Sequential.save):
 * its moment blocks, each `count` (= nparams) floats in the parameter block's
 * layout (SGD: m1 the momentum velocity, m2 unused and NULL; Adam: m1 and m2 the
 * first and second moments), and the step counters that decide the next steps:
 * counters[0] optimizer steps taken (Adam's t, its bias correction), counters[1]
 * random masks drawn so far (dropout and augmentation continue the same stream).
 * `kind` (GA_OPT_*) must be the optimizer set now; set checks the counters
 * (t >= 0, draws >= 0). The data position is not part of it: every epoch starts
 * at its order's beginning. */
ga_status ga_net_get_opt_state(ga_net *net, int kind, int64_t count, float *m1, float *m2, int64_t counters[2]);
ga_status ga_net_set_opt_state(ga_net *net, int kind, int64_t count, const float *m1, const float *m2,
                               const int64_t counters[2]);

/* flags (nlayers): 1 = the layer's weights train. The optimizer then updates
 * only the trainable runs of the parameter block; frozen layers skip their
 * weight gradients (frozen batch norm runs in inference mode, as in Keras), and
 * backward stops at the lowest trainable layer. */
ga_status ga_net_set_trainable(ga_net *net, const int *flags);

/* For gradient checks: forward of x_host (n, C, H, W) in the given mode
 * (training: dropout on, batch norm on batch statistics and updating the
 * moving ones), out_host (n, classes) the last layer's output. */
ga_status ga_net_forward(ga_net *net, const float *x_host, int64_t n, int training, float *out_host);
/* After ga_net_forward with the same n: backward from dout_host (n, classes);
 * dx_host (n, C, H, W) (may be NULL) the input gradient, grads_host (nparams,
 * may be NULL) the parameter gradients (zero for frozen layers). */
ga_status ga_net_backward(ga_net *net, int64_t n, const float *dout_host, float *dx_host,
                          float *grads_host);

/* --- data-parallel training (gpuaccel._mpi) ---
 * ga_net_set_reducer: every training step from now on (train_step, train_steps)
 * hands its gradients to r->fn between backward and update (r NULL or r->fn NULL:
 * none). While a reducer is set no call is recorded as a graph (the emulator
 * cannot capture an MPI call, and one rule everywhere keeps results identical).
 * ga_net_set_grad_batch: the loss of each following step is the sum over its
 * samples divided by `global_batch` (0: by the step's own sample count, the
 * default); a process holding b of a global batch of B samples sets B, so the
 * summed gradients are the mean over the global batch, whatever each share. */
ga_status ga_net_set_reducer(ga_net *net, const ga_net_reducer *r);
ga_status ga_net_set_grad_batch(ga_net *net, int64_t global_batch);
/* ga_net_set_rng_salt: the dropout masks and augmentation transforms drawn from now
 * on come from streams mixed with `salt` (0, the default: the model's own streams;
 * the initial weights never change). Each data-parallel rank sets its rank, so the
 * ranks' shares of a global batch draw independent masks instead of the same ones. */
ga_status ga_net_set_rng_salt(ga_net *net, uint64_t salt);

#endif
