// Streaming ops (cape_kernels.streaming); compiled after common.cu.
//
// pool_acc_<in>_<sums>: one block per row b (blockDim.x a multiple of 32).  The block finds the
//   row's last token / token count from the mask, then each thread pools its columns d (mode
//   "last": one load; "mean": a loop over s, coalesced across the warp), writes pooled[b, d],
//   atomically adds it into sums[slot_b, d], and sums its squares; after a block reduction of the
//   norm, each thread adds pooled[b, d] / |pooled[b]| for the same columns into unit_sums (it reads
//   back only what it wrote itself).  in: f32, f16, bf16 (pooled f32) or f64 (pooled f64); sums:
//   s32 (float) or s64 (double).
// count_pairs_<in>: C = A B^T in 64 x 64 tiles (256 threads, 4 x 4 outputs each, K step 16, fp32
//   FMA) on the raw rows; the same loads give the rows' squared norms, so cos = dot * (1/|a|) *
//   (1/|b|) with IEEE sqrt and division.  Pairs with cos < thr (NaN never) go to a shared-memory
//   histogram of G x G cells (G*G <= HIST; larger G: straight to global atomics), flushed to the
//   int64 counts with one atomicAdd per nonzero cell.  One launch per call.

__device__ __forceinline__ float to_acc(float x) { return x; }
__device__ __forceinline__ float to_acc(f16 x) { return to_f(x); }
__device__ __forceinline__ float to_acc(bf16 x) { return to_f(x); }
__device__ __forceinline__ double to_acc(double x) { return x; }

template <typename A> __device__ __forceinline__ A warp_sum_t(A v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

template <typename A> __device__ __forceinline__ A block_sum_t(A v, A* scratch /* [32] */) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum_t(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    A t = (lane < nw) ? scratch[lane] : (A)0;
    return warp_sum_t(t);
}

__device__ __forceinline__ int block_max_i(int v, int* scratch) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, o));
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    int t = (lane < nw) ? scratch[lane] : -1;
    for (int o = 16; o > 0; o >>= 1) t = max(t, __shfl_xor_sync(0xffffffffu, t, o));
    return t;
}

template <typename T, typename P, typename A>
__device__ void pool_acc_impl(const T* __restrict__ h, const unsigned char* __restrict__ m, int has_mask,
                              const long long* __restrict__ slot, A* sums, A* units, int has_units,
                              P* __restrict__ out, int S, int D, long long G, int mean) {
    __shared__ A scratch[32];
    __shared__ int iscratch[32];
    long long b = blockIdx.x;
    int last = S - 1, cnt = S;
    if (has_mask) {
        const unsigned char* mrow = m + b * S;
        int l = -1, c = 0;
        for (int s = threadIdx.x; s < S; s += blockDim.x)
            if (mrow[s]) { ++c; l = max(l, s); }
        last = block_max_i(l, iscratch);
        cnt = (int)block_sum_t<float>((float)c, (float*)iscratch);  // exact: S < 2^24
    }
    long long g = slot[b];
    bool ok = g >= 0 && g < G;
    const T* hrow = h + b * (long long)S * D;
    const unsigned char* mrow = m + b * S;
    A ss = 0;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        P p = 0;
        if (mean) {
            P acc = 0;
            for (int s = 0; s < S; ++s)
                if (!has_mask || mrow[s]) acc += to_acc(hrow[(long long)s * D + d]);
            p = cnt > 0 ? acc / (P)cnt : (P)0;
        } else if (last >= 0) {
            p = to_acc(hrow[(long long)last * D + d]);
        }
        out[b * D + d] = p;
        A pa = (A)p;
        ss += pa * pa;
        if (ok) atomicAdd(&sums[g * D + d], pa);
    }
    if (!has_units) return;
    ss = block_sum_t(ss, scratch);
    A nrm = sqrt(ss);
    A inv = isnan(nrm) ? nrm : (nrm > (A)0 ? (A)1 / nrm : (A)0);
    if (!ok) return;
    for (int d = threadIdx.x; d < D; d += blockDim.x)  // the columns this thread wrote above
        atomicAdd(&units[g * D + d], (A)out[b * D + d] * inv);
}

#define CAPE_POOL_ACC(T, P, A, SUF)                                                               \
    extern "C" __global__ void pool_acc_##SUF(const T* h, const unsigned char* m, int has_mask,   \
                                              const long long* slot, A* sums, A* units,           \
                                              int has_units, P* out, int S, int D, long long G,   \
                                              int mean) {                                         \
        pool_acc_impl<T, P, A>(h, m, has_mask, slot, sums, units, has_units, out, S, D, G, mean); \
    }
CAPE_POOL_ACC(float, float, float, f32_s32)
CAPE_POOL_ACC(float, float, double, f32_s64)
CAPE_POOL_ACC(f16, float, float, f16_s32)
CAPE_POOL_ACC(f16, float, double, f16_s64)
CAPE_POOL_ACC(bf16, float, float, bf16_s32)
CAPE_POOL_ACC(bf16, float, double, bf16_s64)
CAPE_POOL_ACC(double, double, float, f64_s32)
CAPE_POOL_ACC(double, double, double, f64_s64)

#define CTM 64
#define CTK 16
#define HIST 4096

template <typename T>
__device__ void count_pairs_impl(const T* __restrict__ A, const T* __restrict__ B,
                                 const long long* __restrict__ ga, const long long* __restrict__ gb,
                                 int grouped, unsigned long long* counts, int n, int m, int D,
                                 long long G, float thr) {
    __shared__ float As[CTK][CTM + 4];
    __shared__ float Bs[CTK][CTM + 4];
    __shared__ float inva[CTM], invb[CTM];
    __shared__ int ka[CTM], kb[CTM];
    __shared__ unsigned int hist[HIST];
    __shared__ unsigned int red_c[8];
    int i0 = blockIdx.y * CTM, j0 = blockIdx.x * CTM;
    int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
    bool shared_hist = grouped && G * G <= HIST;
    if (shared_hist)
        for (int c = threadIdx.x; c < G * G; c += blockDim.x) hist[c] = 0u;
    if (threadIdx.x < CTM) {
        int i = i0 + threadIdx.x, j = j0 + threadIdx.x;
        long long a = (grouped && i < n) ? ga[i] : 0, b = (grouped && j < m) ? gb[j] : 0;
        ka[threadIdx.x] = (i < n && a >= 0 && a < G) ? (int)(a * G) : -1;
        kb[threadIdx.x] = (j < m && b >= 0 && b < G) ? (int)b : -1;
    }
    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = 0.f;
    int lr = threadIdx.x >> 2;       // 0..63: the tile row this thread loads
    int lk = (threadIdx.x & 3) * 4;  // 0, 4, 8, 12
    float sa = 0.f, sb = 0.f;
    for (int k0 = 0; k0 < D; k0 += CTK) {
#pragma unroll
        for (int u = 0; u < 4; ++u) {
            int k = k0 + lk + u;
            int ir = i0 + lr, jr = j0 + lr;
            float x = (ir < n && k < D) ? to_f(A[(long long)ir * D + k]) : 0.f;
            float y = (jr < m && k < D) ? to_f(B[(long long)jr * D + k]) : 0.f;
            As[lk + u][lr] = x;
            Bs[lk + u][lr] = y;
            sa = fmaf(x, x, sa);
            sb = fmaf(y, y, sb);
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < CTK; ++kk) {
            float a[4], c[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) a[i] = As[kk][ty + 16 * i];
#pragma unroll
            for (int j = 0; j < 4; ++j) c[j] = Bs[kk][tx + 16 * j];
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], c[j], acc[i][j]);
        }
        __syncthreads();
    }
    // the four loader threads of a row are adjacent lanes: add their squared norms
    sa += __shfl_xor_sync(0xffffffffu, sa, 1);
    sa += __shfl_xor_sync(0xffffffffu, sa, 2);
    sb += __shfl_xor_sync(0xffffffffu, sb, 1);
    sb += __shfl_xor_sync(0xffffffffu, sb, 2);
    if ((threadIdx.x & 3) == 0) {
        float na = sqrtf(sa), nb = sqrtf(sb);
        inva[lr] = isnan(na) ? na : (na > 0.f ? 1.0f / na : 0.f);
        invb[lr] = isnan(nb) ? nb : (nb > 0.f ? 1.0f / nb : 0.f);
    }
    __syncthreads();
    unsigned int cnt = 0;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        int r = ty + 16 * i;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            int q = tx + 16 * j;
            if (ka[r] < 0 || kb[q] < 0) continue;  // outside the matrix or an uncounted group
            float c = acc[i][j] * inva[r] * invb[q];
            c = isnan(c) ? c : fminf(1.0f, fmaxf(-1.0f, c));
            if (!(c < thr)) continue;  // NaN < thr is false
            if (!grouped) ++cnt;
            else if (shared_hist) atomicAdd(&hist[ka[r] + kb[q]], 1u);
            else atomicAdd(&counts[ka[r] + kb[q]], 1ull);
        }
    }
    if (!grouped) {
        for (int o = 16; o > 0; o >>= 1) cnt += __shfl_xor_sync(0xffffffffu, cnt, o);
        int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
        if (lane == 0) red_c[warp] = cnt;
        __syncthreads();
        if (threadIdx.x == 0) {
            unsigned long long t = 0;
            for (int w = 0; w < (int)(blockDim.x >> 5); ++w) t += red_c[w];
            if (t) atomicAdd(&counts[0], t);
        }
    } else if (shared_hist) {
        __syncthreads();
        for (int c = threadIdx.x; c < G * G; c += blockDim.x)
            if (hist[c]) atomicAdd(&counts[c], (unsigned long long)hist[c]);
    }
}

#define CAPE_COUNT(T, SUF)                                                                        \
    extern "C" __global__ void __launch_bounds__(256)                                             \
    count_pairs_##SUF(const T* A, const T* B, const long long* ga, const long long* gb,           \
                      int grouped, unsigned long long* counts, int n, int m, int D, long long G,  \
                      float thr) {                                                                \
        count_pairs_impl<T>(A, B, ga, gb, grouped, counts, n, m, D, G, thr);                      \
    }
CAPE_COUNT(float, f32)
CAPE_COUNT(f16, f16)
CAPE_COUNT(bf16, bf16)
