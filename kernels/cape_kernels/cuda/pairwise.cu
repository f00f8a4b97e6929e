// pairwise cosine statistics.
// unit_rows_*: one block per row, out[row] = x / |x| (float32; zero rows stay zero, NaN stays).
// pair_tile: C = Rn[b] Tn[b]^T in 64 x 64 tiles (256 threads, 4 x 4 outputs each, K step 16,
//   fp32 FMA), clamps to [-1, 1], reduces the tile to a sum and a count below thr written to
//   partials [(tile_p * gridDim.x + tile_q) * B + b]; writes the tile to full when asked.
template <typename T>
__device__ void unit_rows_impl(const T* __restrict__ x, float* __restrict__ out, int D) {
    __shared__ float scratch[32];
    long long r = blockIdx.x;
    const T* row = x + r * D;
    float ss = 0.f;
    for (int d = threadIdx.x; d < D; d += blockDim.x) { float v = to_f(row[d]); ss += v * v; }
    ss = block_sum(ss, scratch);
    float n = sqrtf(ss);
    float inv = isnan(n) ? n : (n > 0.f ? 1.0f / n : 0.0f);
    for (int d = threadIdx.x; d < D; d += blockDim.x) out[r * D + d] = to_f(row[d]) * inv;
}

#define CAPE_UNIT(T, SUF)                                                                   \
    extern "C" __global__ void unit_rows_##SUF(const T* x, float* out, int D) {            \
        unit_rows_impl<T>(x, out, D);                                                       \
    }
CAPE_UNIT(float, f32)
CAPE_UNIT(f16, f16)
CAPE_UNIT(bf16, bf16)

#define TM 64
#define TK 16

extern "C" __global__ void __launch_bounds__(256)
pair_tile(const float* __restrict__ Rn, const float* __restrict__ Tn, float* __restrict__ full,
          float* __restrict__ psum, unsigned int* __restrict__ pcnt, int B, int P, int Q, int D,
          float thr, int write_full) {
    __shared__ float As[TK][TM + 4];
    __shared__ float Bs[TK][TM + 4];
    __shared__ float red_s[8];
    __shared__ unsigned int red_c[8];
    int b = blockIdx.z;
    int p0 = blockIdx.y * TM, q0 = blockIdx.x * TM;
    int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
    const float* A = Rn + (long long)b * P * D;
    const float* Bm = Tn + (long long)b * Q * D;
    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = 0.f;
    // loader mapping: 256 threads x 4 = 64 rows x 16 k
    int lr = threadIdx.x >> 2;        // 0..63 row of the tile
    int lk = (threadIdx.x & 3) * 4;   // 0, 4, 8, 12
    for (int k0 = 0; k0 < D; k0 += TK) {
#pragma unroll
        for (int u = 0; u < 4; ++u) {
            int k = k0 + lk + u;
            int pr = p0 + lr, qr = q0 + lr;
            As[lk + u][lr] = (pr < P && k < D) ? A[(long long)pr * D + k] : 0.f;
            Bs[lk + u][lr] = (qr < Q && k < D) ? Bm[(long long)qr * D + k] : 0.f;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < TK; ++kk) {
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
    float s = 0.f;
    unsigned int cnt = 0;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        int p = p0 + ty + 16 * i;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            int q = q0 + tx + 16 * j;
            if (p < P && q < Q) {
                float v = acc[i][j];
                float c = isnan(v) ? v : fminf(1.0f, fmaxf(-1.0f, v));
                s += c;
                cnt += (c < thr) ? 1u : 0u;
                if (write_full) full[((long long)b * P + p) * Q + q] = c;
            }
        }
    }
    s = warp_sum(s);
    for (int o = 16; o > 0; o >>= 1) cnt += __shfl_xor_sync(0xffffffffu, cnt, o);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) { red_s[warp] = s; red_c[warp] = cnt; }
    __syncthreads();
    if (threadIdx.x == 0) {
        float ts = 0.f;
        unsigned int tc = 0;
        for (int w = 0; w < 8; ++w) { ts += red_s[w]; tc += red_c[w]; }
        long long tile = ((long long)blockIdx.y * gridDim.x + blockIdx.x) * B + b;
        psum[tile] = ts;
        pcnt[tile] = tc;
    }
}
