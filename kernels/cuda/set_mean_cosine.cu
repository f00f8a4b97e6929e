// set-mean cosine, two launches, deterministic.
// stage 1, grid (ceil(D / blockDim.x), nsplit, B): part[b, split, 0, d] = sum of R rows of this
//   split, part[b, split, 1, d] the same for T.  One thread per feature, rows unrolled by 4.
// stage 2, grid (B), block 256: add the splits, reduce dot and norms, write the cosine.
template <typename T>
__device__ float rows_sum(const T* __restrict__ X, long long base, int lo, int hi, int D, int d) {
    float a0 = 0.f, a1 = 0.f, a2 = 0.f, a3 = 0.f;
    int p = lo;
    for (; p + 3 < hi; p += 4) {
        a0 += to_f(X[base + (long long)p * D + d]);
        a1 += to_f(X[base + (long long)(p + 1) * D + d]);
        a2 += to_f(X[base + (long long)(p + 2) * D + d]);
        a3 += to_f(X[base + (long long)(p + 3) * D + d]);
    }
    for (; p < hi; ++p) a0 += to_f(X[base + (long long)p * D + d]);
    return (a0 + a1) + (a2 + a3);
}

template <typename T>
__device__ void set_partial_impl(const T* __restrict__ R, const T* __restrict__ Tt,
                                 float* __restrict__ part, int P, int Q, int D,
                                 int rows_r, int rows_t, int nsplit) {
    int d = blockIdx.x * blockDim.x + threadIdx.x;
    int sp = blockIdx.y;
    int b = blockIdx.z;
    if (d >= D) return;
    int plo = sp * rows_r, phi = min(P, plo + rows_r);
    int qlo = sp * rows_t, qhi = min(Q, qlo + rows_t);
    long long o = (((long long)b * nsplit + sp) * 2) * D + d;
    part[o] = rows_sum<T>(R, (long long)b * P * D, plo, phi, D, d);
    part[o + D] = rows_sum<T>(Tt, (long long)b * Q * D, qlo, qhi, D, d);
}

#define CAPE_SETP(T, SUF)                                                                         \
    extern "C" __global__ void set_partial_##SUF(const T* R, const T* Tt, float* part, int P,     \
                                                 int Q, int D, int rows_r, int rows_t,           \
                                                 int nsplit) {                                   \
        set_partial_impl<T>(R, Tt, part, P, Q, D, rows_r, rows_t, nsplit);                       \
    }
CAPE_SETP(float, f32)
CAPE_SETP(f16, f16)
CAPE_SETP(bf16, bf16)

extern "C" __global__ void set_finish(const float* __restrict__ part, float* __restrict__ out,
                                      int D, int nsplit) {
    __shared__ float scratch[32];
    int b = blockIdx.x;
    const float* pb = part + (long long)b * nsplit * 2 * D;
    float dot = 0.f, nr = 0.f, nt = 0.f;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float r0 = 0.f, r1 = 0.f, t0 = 0.f, t1 = 0.f;
        int s = 0;
        for (; s + 1 < nsplit; s += 2) {  // two splits at a time: independent loads in flight
            r0 += pb[(long long)s * 2 * D + d];
            t0 += pb[(long long)s * 2 * D + D + d];
            r1 += pb[(long long)(s + 1) * 2 * D + d];
            t1 += pb[(long long)(s + 1) * 2 * D + D + d];
        }
        if (s < nsplit) {
            r0 += pb[(long long)s * 2 * D + d];
            t0 += pb[(long long)s * 2 * D + D + d];
        }
        float sr = r0 + r1, st = t0 + t1;
        dot += sr * st;
        nr += sr * sr;
        nt += st * st;
    }
    dot = block_sum(dot, scratch);
    nr = block_sum(nr, scratch);
    nt = block_sum(nt, scratch);
    if (threadIdx.x == 0) out[b] = safe_cos(dot, nr, nt);
}
