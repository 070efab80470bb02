/* The parts of the CPU convolution that both of its fast algorithms share
 * (conv_cpu.c: im2col + GEMM; winograd_cpu.c: Winograd's minimal filtering):
 * the split of the batch into chunks of images, one thread per chunk, and the
 * epilogues that turn a chunk's result, laid out as ws (k, nb p q), into the
 * layer's output. Internal to csrc/cpu/. */
#ifndef GA_CONV_CPU_H
#define GA_CONV_CPU_H

#include "cpu/kernels_cpu.h"

#define GA_CONV_MAX_THREADS 256

/* How one call splits the batch: nt threads take chunks of `chunk` images
 * round-robin (nt <= nchunks: every thread gets at least one chunk, and
 * nt * chunk <= n: each thread's slice of a batch-sized buffer fits). */
typedef struct {
    int nt;
    int64_t chunk, nchunks;
} ga_conv_chunks;

/* The chunk that keeps a thread's working set (floats_per_image per image) near
 * one core's L2; GPUACCEL_CONV_CHUNK=<images> overrides it. */
ga_conv_chunks ga_conv_plan_chunks(const ga_conv_shape *s, int64_t floats_per_image);

int ga_conv_thread_id(void);
int ga_conv_team_size(void);

/* A worker's failure, carried out of the parallel region (the message is
 * thread-local). ga_conv_keep_error keeps the first one. */
typedef struct {
    ga_status st;
    char msg[512];
} ga_conv_error;
void ga_conv_keep_error(ga_conv_error *e, ga_status st);

/* ws (k, nb p q) -> y images [img0, img0 + nb) (n, k, p q), + bias, act. */
void ga_conv_store_output(float *y, const float *ws, const float *b, ga_act act, const ga_conv_shape *s,
                          int64_t img0, int64_t nb);
/* ws (k, nb p q) -> + bias, act -> max pool ps -> y, arg of images [img0, img0 + nb). */
void ga_conv_store_pooled(float *y, int32_t *arg, const float *ws, const float *b, ga_act act,
                          const ga_conv_shape *s, const ga_pool_shape *ps, int64_t img0, int64_t nb);
/* The epilogue of a chunk: ga_conv_store_pooled with a fused pool (ps), else
 * ga_conv_store_output (arg unused). */
void ga_conv_store(float *y, int32_t *arg, const float *ws, const float *b, ga_act act, const ga_conv_shape *s,
                   const ga_pool_shape *ps, int64_t img0, int64_t nb);
/* dyt (k, nb p q) = the conv output gradient of images [img0, img0 + nb), and
 * db (k) = (first ? 0 : db) + its sums (db may be NULL). Without `ps`, dy
 * (n, k, p q) is that gradient (transposed here); with `ps`, dy (n, k, pp, pq)
 * is the gradient of the fused pool's output, scattered through arg and taken
 * through the activation at the pooled y. */
void ga_conv_gather_dy(float *dyt, float *db, int first, const float *dy, const float *ypool, const int32_t *arg,
                       ga_act act, const ga_conv_shape *s, const ga_pool_shape *ps, int64_t img0, int64_t nb);

#endif
