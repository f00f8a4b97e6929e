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

// Many splits (small B): block (32, 8) of grid (ceil(D / 32), B) adds the splits of 32 features
// (8 rows of threads take every 8th split), then writes its share of dot, |sr|^2, |st|^2 to
// fin[b, f, 0:3]; set_final adds the shares in a fixed order (deterministic).
extern "C" __global__ void set_reduce(const float* __restrict__ part, float* __restrict__ fin,
                                      int D, int nsplit) {
    __shared__ float sr_s[8][33];
    __shared__ float st_s[8][33];
    int b = blockIdx.y, f = blockIdx.x, nf = gridDim.x;
    int d = f * 32 + threadIdx.x;
    const float* pb = part + (long long)b * nsplit * 2 * D;
    float sr = 0.f, st = 0.f;
    if (d < D)
        for (int s = threadIdx.y; s < nsplit; s += 8) {
            sr += pb[(long long)s * 2 * D + d];
            st += pb[(long long)s * 2 * D + D + d];
        }
    sr_s[threadIdx.y][threadIdx.x] = sr;
    st_s[threadIdx.y][threadIdx.x] = st;
    __syncthreads();
    if (threadIdx.y == 0) {
        float r = 0.f, t = 0.f;
        for (int y = 0; y < 8; ++y) { r += sr_s[y][threadIdx.x]; t += st_s[y][threadIdx.x]; }
        float dot = warp_sum(r * t), nr = warp_sum(r * r), nt = warp_sum(t * t);
        if (threadIdx.x == 0) {
            float* o = fin + ((long long)b * nf + f) * 3;
            o[0] = dot; o[1] = nr; o[2] = nt;
        }
    }
}

extern "C" __global__ void set_final(const float* __restrict__ fin, float* __restrict__ out, int nf) {
    int b = blockIdx.x;
    float dot = 0.f, nr = 0.f, nt = 0.f;
    for (int f = threadIdx.x; f < nf; f += 32) {
        const float* o = fin + ((long long)b * nf + f) * 3;
        dot += o[0]; nr += o[1]; nt += o[2];
    }
    dot = warp_sum(dot); nr = warp_sum(nr); nt = warp_sum(nt);
    if (threadIdx.x == 0) out[b] = safe_cos(dot, nr, nt);
}
