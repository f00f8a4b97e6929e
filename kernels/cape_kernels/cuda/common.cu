// cape_kernels CUDA prelude: prepended to every other .cu file of this folder before compiling.
// No headers at all (NVRTC needs no include path): fp16/bf16 are raw 16-bit storage types
// converted with PTX cvt instructions (bf16 needs sm_80 or newer).
struct f16 { unsigned short bits; };
struct bf16 { unsigned short bits; };

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(f16 x) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(x.bits));
    return f;
}
__device__ __forceinline__ float to_f(bf16 x) { return __uint_as_float(((unsigned int)x.bits) << 16); }

template <typename T> __device__ __forceinline__ T from_f(float f);
template <> __device__ __forceinline__ float from_f<float>(float f) { return f; }
template <> __device__ __forceinline__ f16 from_f<f16>(float f) {
    f16 r;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r.bits) : "f"(f));
    return r;
}
template <> __device__ __forceinline__ bf16 from_f<bf16>(float f) {
    bf16 r;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r.bits) : "f"(f));
    return r;
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Sum of v over the block (blockDim.x a multiple of 32, at most 1024); every thread gets it.
__device__ __forceinline__ float block_sum(float v, float* scratch /* [32] shared */) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float t = (lane < nw) ? scratch[lane] : 0.0f;
    return warp_sum(t);
}

// cos = dot / (|a||b|), 0 when |a||b| == 0, clamped to [-1, 1]; NaN propagates.
__device__ __forceinline__ float safe_cos(float dot, float n2a, float n2b) {
    float den = sqrtf(n2a) * sqrtf(n2b);
    if (isnan(den) || isnan(dot)) return den + dot;
    if (!(den > 0.0f)) return 0.0f;
    return fminf(1.0f, fmaxf(-1.0f, dot / den));
}
