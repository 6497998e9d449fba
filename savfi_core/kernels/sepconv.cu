// Separable local convolution (SepConv) and the three other partials of the multilinear form
//   S(G, I, V, Hz) = sum_{b,c,y,x,i,j} G[b,c,y,x] I[b,c,y+i,x+j] V[b,i,y,x] Hz[b,j,y,x]
// (see sepconv.py). `scalar_t` is defined by the loader (float or double). All tensors are dense
// row-major: G [B,C,H,W], I [B,C,H+K-1,W+K-1], V and Hz [B,K,H,W]. One thread per element of the
// result (sepconv_output: per pixel and group of channels); every kernel gathers (no atomics), so
// results are deterministic.
// The argument list is the same for the four kernels; the slot being computed is not read.

#define CHANNEL_GROUP 4

extern "C" __global__ void sepconv_output(
    const int total, const int B, const int C, const int H, const int W, const int K,
    const scalar_t* __restrict__ G, const scalar_t* __restrict__ I,
    const scalar_t* __restrict__ V, const scalar_t* __restrict__ Hz, scalar_t* __restrict__ result)
{
    // One thread per (b, group of up to CHANNEL_GROUP channels, y, x): each kernel weight is loaded
    // once and used for every channel of the group (C = 3 for images: one group).
    const int groups = (C + CHANNEL_GROUP - 1) / CHANNEL_GROUP;
    const int n = blockIdx.x * blockDim.x + threadIdx.x;  // total = B * groups * H * W
    if (n >= total) return;
    const int x = n % W;
    const int y = (n / W) % H;
    const int group = (n / (W * H)) % groups;
    const int b = n / (W * H * groups);
    const int first = group * CHANNEL_GROUP;
    const int count = min(CHANNEL_GROUP, C - first);
    const int PH = H + K - 1, PW = W + K - 1;
    const long plane = (long)H * W;
    const long padded_plane = (long)PH * PW;
    const scalar_t* input = I + ((long)(b * C + first) * PH + y) * PW + x;
    const scalar_t* vertical = V + (long)b * K * plane + (long)y * W + x;
    const scalar_t* horizontal = Hz + (long)b * K * plane + (long)y * W + x;
    scalar_t sum[CHANNEL_GROUP];
    scalar_t row[CHANNEL_GROUP];
#pragma unroll
    for (int g = 0; g < CHANNEL_GROUP; ++g) sum[g] = 0;
    for (int i = 0; i < K; ++i) {
#pragma unroll
        for (int g = 0; g < CHANNEL_GROUP; ++g) row[g] = 0;
        for (int j = 0; j < K; ++j) {
            const scalar_t weight = horizontal[j * plane];
#pragma unroll
            for (int g = 0; g < CHANNEL_GROUP; ++g) {
                if (g < count) row[g] += input[g * padded_plane + (long)i * PW + j] * weight;
            }
        }
        const scalar_t weight = vertical[i * plane];
#pragma unroll
        for (int g = 0; g < CHANNEL_GROUP; ++g) sum[g] += row[g] * weight;
    }
#pragma unroll
    for (int g = 0; g < CHANNEL_GROUP; ++g) {
        if (g < count) result[((long)(b * C + first + g)) * plane + (long)y * W + x] = sum[g];
    }
}

extern "C" __global__ void sepconv_input(
    const int total, const int B, const int C, const int H, const int W, const int K,
    const scalar_t* __restrict__ G, const scalar_t* __restrict__ I,
    const scalar_t* __restrict__ V, const scalar_t* __restrict__ Hz, scalar_t* __restrict__ result)
{
    // Transposed operation: input pixel (p, q) collects from every output (p-i, q-j) that reads it.
    const int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= total) return;
    const int PH = H + K - 1, PW = W + K - 1;
    const int q = n % PW;
    const int p = (n / PW) % PH;
    const int c = (n / (PW * PH)) % C;
    const int b = n / (PW * PH * C);
    const long plane = (long)H * W;
    const int i_begin = max(0, p - H + 1), i_end = min(K - 1, p);
    const int j_begin = max(0, q - W + 1), j_end = min(K - 1, q);
    scalar_t sum = 0;
    for (int i = i_begin; i <= i_end; ++i) {
        const int y = p - i;
        for (int j = j_begin; j <= j_end; ++j) {
            const int x = q - j;
            const long pixel = (long)y * W + x;
            sum += G[(long)(b * C + c) * plane + pixel] * V[((long)b * K + i) * plane + pixel]
                 * Hz[((long)b * K + j) * plane + pixel];
        }
    }
    result[n] = sum;
}

extern "C" __global__ void sepconv_vertical(
    const int total, const int B, const int C, const int H, const int W, const int K,
    const scalar_t* __restrict__ G, const scalar_t* __restrict__ I,
    const scalar_t* __restrict__ V, const scalar_t* __restrict__ Hz, scalar_t* __restrict__ result)
{
    const int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= total) return;
    const int x = n % W;
    const int y = (n / W) % H;
    const int i = (n / (W * H)) % K;
    const int b = n / (W * H * K);
    const int PH = H + K - 1, PW = W + K - 1;
    const long plane = (long)H * W;
    const long pixel = (long)y * W + x;
    // sum_j Hz_j sum_c G_c I_c(y+i, x+j): each weight loaded once, channels innermost.
    const scalar_t* input = I + ((long)b * C * PH + y + i) * PW + x;
    const long padded_plane = (long)PH * PW;
    scalar_t sum = 0;
    for (int j = 0; j < K; ++j) {
        scalar_t channels = 0;
        for (int c = 0; c < C; ++c) {
            channels += G[(long)(b * C + c) * plane + pixel] * input[c * padded_plane + j];
        }
        sum += channels * Hz[((long)b * K + j) * plane + pixel];
    }
    result[n] = sum;
}

extern "C" __global__ void sepconv_horizontal(
    const int total, const int B, const int C, const int H, const int W, const int K,
    const scalar_t* __restrict__ G, const scalar_t* __restrict__ I,
    const scalar_t* __restrict__ V, const scalar_t* __restrict__ Hz, scalar_t* __restrict__ result)
{
    const int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= total) return;
    const int x = n % W;
    const int y = (n / W) % H;
    const int j = (n / (W * H)) % K;
    const int b = n / (W * H * K);
    const int PH = H + K - 1, PW = W + K - 1;
    const long plane = (long)H * W;
    const long pixel = (long)y * W + x;
    // sum_i V_i sum_c G_c I_c(y+i, x+j): each weight loaded once, channels innermost.
    const scalar_t* input = I + ((long)b * C * PH + y) * PW + x + j;
    const long padded_plane = (long)PH * PW;
    scalar_t sum = 0;
    for (int i = 0; i < K; ++i) {
        scalar_t channels = 0;
        for (int c = 0; c < C; ++c) {
            channels += G[(long)(b * C + c) * plane + pixel] * input[c * padded_plane + (long)i * PW];
        }
        sum += channels * V[((long)b * K + i) * plane + pixel];
    }
    result[n] = sum;
}
