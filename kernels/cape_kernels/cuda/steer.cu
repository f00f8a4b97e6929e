// steering injection, in place, one block per row of h [T, D].
// Pass 1 reduces dot(h, v), |h|^2, |v|^2; pass 2 (only for rows that are changed) writes
// h + coef * v, re-reading the row from L1/L2, so h crosses DRAM once each way.
// v_row_stride is D for per-row vectors, 0 for one shared direction.
template <typename T, typename V>
__device__ void steer_impl(T* __restrict__ h, const V* __restrict__ v, const float* __restrict__ alpha,
                           float* __restrict__ proj, int D, long long v_row_stride,
                           int relative, int gate, float tau) {
    __shared__ float scratch[32];
    long long t = blockIdx.x;
    T* row = h + t * D;
    const V* vr = v + t * v_row_stride;
    float dot = 0.f, hh = 0.f, vv = 0.f;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float x = to_f(row[d]), y = to_f(vr[d]);
        dot += x * y;
        hh += x * x;
        vv += y * y;
    }
    dot = block_sum(dot, scratch);
    hh = block_sum(hh, scratch);
    vv = block_sum(vv, scratch);
    float c = safe_cos(dot, hh, vv);
    if (threadIdx.x == 0) proj[t] = c;
    float a = alpha[t];
    if (a == 0.0f || !(vv > 0.0f)) return;
    if (gate && !(c < tau)) return;
    float coef = a / sqrtf(vv);
    if (relative) coef *= sqrtf(hh);
    for (int d = threadIdx.x; d < D; d += blockDim.x)
        row[d] = from_f<T>(to_f(row[d]) + coef * to_f(vr[d]));
}

#define CAPE_STEER(T, V, SUF)                                                                    \
    extern "C" __global__ void steer_##SUF(T* h, const V* v, const float* alpha, float* proj,    \
                                           int D, long long v_row_stride, int relative, int gate, \
                                           float tau) {                                          \
        steer_impl<T, V>(h, v, alpha, proj, D, v_row_stride, relative, gate, tau);               \
    }
CAPE_STEER(float, float, f32)
CAPE_STEER(f16, f16, f16)
CAPE_STEER(bf16, bf16, bf16)
CAPE_STEER(f16, float, f16_vf32)
CAPE_STEER(bf16, float, bf16_vf32)

// Rows of D <= 1024: one warp per row (8 rows per 256-thread block), reductions by shuffles.
template <typename T, typename V>
__device__ void steer_warp_impl(T* __restrict__ h, const V* __restrict__ v, const float* __restrict__ alpha,
                                float* __restrict__ proj, int Tn, int D, long long v_row_stride,
                                int relative, int gate, float tau) {
    int lane = threadIdx.x & 31;
    long long t = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (t >= Tn) return;
    T* row = h + t * D;
    const V* vr = v + t * v_row_stride;
    float dot = 0.f, hh = 0.f, vv = 0.f;
    for (int d = lane; d < D; d += 32) {
        float x = to_f(row[d]), y = to_f(vr[d]);
        dot += x * y;
        hh += x * x;
        vv += y * y;
    }
    dot = warp_sum(dot);
    hh = warp_sum(hh);
    vv = warp_sum(vv);
    float c = safe_cos(dot, hh, vv);
    if (lane == 0) proj[t] = c;
    float a = alpha[t];
    if (a == 0.0f || !(vv > 0.0f)) return;
    if (gate && !(c < tau)) return;
    float coef = a / sqrtf(vv);
    if (relative) coef *= sqrtf(hh);
    for (int d = lane; d < D; d += 32) row[d] = from_f<T>(to_f(row[d]) + coef * to_f(vr[d]));
}

#define CAPE_STEER_WARP(T, V, SUF)                                                                    \
    extern "C" __global__ void steer_warp_##SUF(T* h, const V* v, const float* alpha, float* proj,    \
                                                int Tn, int D, long long v_row_stride, int relative,  \
                                                int gate, float tau) {                                \
        steer_warp_impl<T, V>(h, v, alpha, proj, Tn, D, v_row_stride, relative, gate, tau);           \
    }
CAPE_STEER_WARP(float, float, f32)
CAPE_STEER_WARP(f16, f16, f16)
CAPE_STEER_WARP(bf16, bf16, bf16)
CAPE_STEER_WARP(f16, float, f16_vf32)
CAPE_STEER_WARP(bf16, float, bf16_vf32)
