/* Argument checks that do not depend on the device: both kernel twins (and
 * the emulator build) call these, so a shape is judged by one rule and a bad
 * one gets the same message on every device. Each returns GA_OK or ga_fail. */
#ifndef GA_CHECKS_H
#define GA_CHECKS_H

#include <stdint.h>

#include "core/backend.h"

/* op names the operation in the message ("conv2d", "conv2d_backward", ...). */
ga_status ga_check_conv(const char *op, const ga_conv_shape *s);
/* A pooling window without padding; the flat h*w argmax index fits int32. */
ga_status ga_check_pool(const char *op, const ga_pool_shape *s);
/* x (n, c, hw) with n >= 0 and c, hw >= 1 (c fits an int for the launch grids). */
ga_status ga_check_channels(const char *op, int64_t n, int64_t c, int64_t hw);
/* Rows x (nc, hw) of a global pooling: nc >= 0, hw >= 1, nc * hw fits int64
 * and hw fits the int32 argmax of global max pooling. */
ga_status ga_check_rows(const char *op, int64_t nc, int64_t hw);
/* A kind in range; a negative alpha is refused for leaky_relu and elu (their
 * derivative is read off the sign of y, which needs alpha >= 0). */
ga_status ga_check_act(const char *op, ga_act act);
/* A fused activation + max pool: the activation must be monotone and its
 * derivative a function of its output (not gelu, silu). */
ga_status ga_check_act_poolable(const char *op, ga_act act);
/* An augment_affine call: x (n, c, h, w) with n >= 0, c, h, w >= 1, h and w
 * below 2^24 (exact as floats), a's flip bits, fill mode and interpolation
 * known, every range finite with lo <= hi, translations in [-1, 1], zooms
 * >= -1, a finite fill value. */
ga_status ga_check_augment(const char *op, const ga_augment *a, int64_t n, int64_t c, int64_t h, int64_t w);

#endif
