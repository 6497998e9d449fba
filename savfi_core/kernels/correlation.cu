// PWC-Net / DAIN cost volume with kernel_size 1 (see correlation.py). `scalar_t` is defined by the
// loader. f1, f2 [B,C,H,W], output [B,D*D,H,W] with R = max_displacement / stride, D = 2R+1 and
// channel k = (p+R)*D + (q+R) for the displacement (p*stride, q*stride) in (y, x). Zero padding.

extern "C" __global__ void correlation_forward(
    const int total, const int B, const int C, const int H, const int W, const int max_displacement, const int stride,
    const scalar_t* __restrict__ f1, const scalar_t* __restrict__ f2, scalar_t* __restrict__ output)
{
    const int R = max_displacement / stride, D = 2 * R + 1;
    const int n = blockIdx.x * blockDim.x + threadIdx.x;  // over B*D*D*H*W
    if (n >= total) return;
    const int x = n % W;
    const int y = (n / W) % H;
    const int k = (n / (W * H)) % (D * D);
    const int b = n / (W * H * D * D);
    const int y2 = y + (k / D - R) * stride;
    const int x2 = x + (k % D - R) * stride;
    scalar_t sum = 0;
    if (y2 >= 0 && y2 < H && x2 >= 0 && x2 < W) {
        const long plane = (long)H * W;
        for (int c = 0; c < C; ++c) {
            sum += f1[((long)b * C + c) * plane + (long)y * W + x] * f2[((long)b * C + c) * plane + (long)y2 * W + x2];
        }
    }
    output[n] = sum / C;
}

extern "C" __global__ void correlation_backward_feat1(
    const int total, const int B, const int C, const int H, const int W, const int max_displacement, const int stride,
    const scalar_t* __restrict__ f1, const scalar_t* __restrict__ f2, const scalar_t* __restrict__ grad_output,
    scalar_t* __restrict__ grad_f1)
{
    // d/d f1[b,c,y,x] = (1/C) sum_k g[b,k,y,x] f2[b,c,y+p s,x+q s]
    const int R = max_displacement / stride, D = 2 * R + 1;
    const int n = blockIdx.x * blockDim.x + threadIdx.x;  // over B*C*H*W
    if (n >= total) return;
    const int x = n % W;
    const int y = (n / W) % H;
    const int c = (n / (W * H)) % C;
    const int b = n / (W * H * C);
    const long plane = (long)H * W;
    scalar_t sum = 0;
    for (int k = 0; k < D * D; ++k) {
        const int y2 = y + (k / D - R) * stride;
        const int x2 = x + (k % D - R) * stride;
        if (y2 < 0 || y2 >= H || x2 < 0 || x2 >= W) continue;
        sum += grad_output[((long)b * D * D + k) * plane + (long)y * W + x] * f2[((long)b * C + c) * plane + (long)y2 * W + x2];
    }
    grad_f1[n] = sum / C;
}

extern "C" __global__ void correlation_backward_feat2(
    const int total, const int B, const int C, const int H, const int W, const int max_displacement, const int stride,
    const scalar_t* __restrict__ f1, const scalar_t* __restrict__ f2, const scalar_t* __restrict__ grad_output,
    scalar_t* __restrict__ grad_f2)
{
    // d/d f2[b,c,y2,x2] = (1/C) sum_k g[b,k,y2-p s,x2-q s] f1[b,c,y2-p s,x2-q s]
    const int R = max_displacement / stride, D = 2 * R + 1;
    const int n = blockIdx.x * blockDim.x + threadIdx.x;  // over B*C*H*W
    if (n >= total) return;
    const int x2 = n % W;
    const int y2 = (n / W) % H;
    const int c = (n / (W * H)) % C;
    const int b = n / (W * H * C);
    const long plane = (long)H * W;
    scalar_t sum = 0;
    for (int k = 0; k < D * D; ++k) {
        const int y = y2 - (k / D - R) * stride;
        const int x = x2 - (k % D - R) * stride;
        if (y < 0 || y >= H || x < 0 || x >= W) continue;
        sum += grad_output[((long)b * D * D + k) * plane + (long)y * W + x] * f1[((long)b * C + c) * plane + (long)y * W + x];
    }
    grad_f2[n] = sum / C;
}
