/* The DLPack ABI (https://dmlc.github.io/dlpack/latest/c_api.html), written out
 * here so the build needs no dlpack.h: the legacy DLManagedTensor (capsule
 * "dltensor") and the 1.0 DLManagedTensorVersioned ("dltensor_versioned"). A
 * consumer renames the capsule to "used_..." when it takes ownership. */
#ifndef GA_DLPACK_ABI_H
#define GA_DLPACK_ABI_H

#include <stdint.h>

#define GA_DLPACK_MAJOR 1
#define GA_DLPACK_MINOR 0

enum { GA_kDLCPU = 1, GA_kDLCUDA = 2 };
enum { GA_kDLFloat = 2 };

#define GA_DLPACK_FLAG_READ_ONLY (1ULL << 0)
#define GA_DLPACK_FLAG_IS_COPIED (1ULL << 1)

typedef struct {
    int32_t device_type;
    int32_t device_id;
} ga_DLDevice;

typedef struct {
    uint8_t code;
    uint8_t bits;
    uint16_t lanes;
} ga_DLDataType;

typedef struct {
    void *data;
    ga_DLDevice device;
    int32_t ndim;
    ga_DLDataType dtype;
    int64_t *shape;
    int64_t *strides; /* in elements; NULL: C-contiguous */
    uint64_t byte_offset;
} ga_DLTensor;

typedef struct ga_DLManagedTensor {
    ga_DLTensor dl_tensor;
    void *manager_ctx;
    void (*deleter)(struct ga_DLManagedTensor *self);
} ga_DLManagedTensor;

typedef struct {
    uint32_t major;
    uint32_t minor;
} ga_DLPackVersion;

typedef struct ga_DLManagedTensorVersioned {
    ga_DLPackVersion version;
    void *manager_ctx;
    void (*deleter)(struct ga_DLManagedTensorVersioned *self);
    uint64_t flags;
    ga_DLTensor dl_tensor;
} ga_DLManagedTensorVersioned;

#define GA_DLPACK_CAPSULE "dltensor"
#define GA_DLPACK_CAPSULE_USED "used_dltensor"
#define GA_DLPACK_CAPSULE_V "dltensor_versioned"
#define GA_DLPACK_CAPSULE_V_USED "used_dltensor_versioned"

#endif
