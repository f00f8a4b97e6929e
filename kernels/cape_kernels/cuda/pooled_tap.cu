// pooled tap: hidden [N, S, D] + mask [N, S] (uint8) -> out [N, D] float32.
// grid (ceil(D / blockDim.x), N); one thread per feature, coalesced along D.
template <typename T>
__device__ void pool_impl(const T* __restrict__ h, const unsigned char* __restrict__ m,
                          float* __restrict__ out, int S, int D, int mean) {
    int n = blockIdx.y;
    int d = blockIdx.x * blockDim.x + threadIdx.x;
    if (d >= D) return;
    const T* row = h + (long long)n * S * D + d;
    const unsigned char* mr = m + (long long)n * S;
    float r = 0.0f;
    if (mean) {
        float acc = 0.0f;
        int cnt = 0;
        for (int s = 0; s < S; ++s)
            if (mr[s]) { acc += to_f(row[(long long)s * D]); ++cnt; }
        r = cnt > 0 ? acc / (float)cnt : 0.0f;
    } else {
        int last = -1;
        for (int s = S - 1; s >= 0; --s)
            if (mr[s]) { last = s; break; }
        r = last >= 0 ? to_f(row[(long long)last * D]) : 0.0f;
    }
    out[(long long)n * D + d] = r;
}

#define CAPE_POOL(T, SUF)                                                                        \
    extern "C" __global__ void pooled_tap_##SUF(const T* h, const unsigned char* m, float* out, \
                                                int S, int D, int mean) {                       \
        pool_impl<T>(h, m, out, S, D, mean);                                                    \
    }
CAPE_POOL(float, f32)
CAPE_POOL(f16, f16)
CAPE_POOL(bf16, bf16)
