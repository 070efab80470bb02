/* cuBLAS v2 as the gpuaccel CUDA emulator provides it (see cublas_api.h). */
#ifndef GA_EMU_CUBLAS_V2_H
#define GA_EMU_CUBLAS_V2_H
#include "cublas_api.h"
#endif
