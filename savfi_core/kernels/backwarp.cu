// Backward bilinear warping (see backwarp.py). `scalar_t` is defined by the loader.
// image [B,C,H,W], flow [B,2,H,W] (x then y displacement, pixels), dense row-major.
// zeros_mode = 0: coordinates clamped into the image ("border"); 1: taps outside contribute 0.
// In both modes a tap outside the image is skipped: in border mode such a tap has weight 0.

extern "C" __global__ void backwarp_forward(
    const int total, const int B, const int C, const int H, const int W, const int zeros_mode,
    const scalar_t* __restrict__ image, const scalar_t* __restrict__ flow, scalar_t* __restrict__ output)
{
    const int n = blockIdx.x * blockDim.x + threadIdx.x;  // over B*C*H*W
    if (n >= total) return;
    const int x = n % W;
    const int y = (n / W) % H;
    const int c = (n / (W * H)) % C;
    const int b = n / (W * H * C);
    const long plane = (long)H * W;
    scalar_t sx = x + flow[((long)b * 2 + 0) * plane + (long)y * W + x];
    scalar_t sy = y + flow[((long)b * 2 + 1) * plane + (long)y * W + x];
    if (!zeros_mode) {
        sx = fmin(fmax(sx, (scalar_t)0), (scalar_t)(W - 1));
        sy = fmin(fmax(sy, (scalar_t)0), (scalar_t)(H - 1));
    }
    const scalar_t left = floor(sx), top = floor(sy);
    const scalar_t ax = sx - left, ay = sy - top;
    const int x0 = (int)left, y0 = (int)top;
    const scalar_t* source = image + ((long)b * C + c) * plane;
    scalar_t sum = 0;
    for (int dy = 0; dy < 2; ++dy) {
        const int ty = y0 + dy;
        if (ty < 0 || ty > H - 1) continue;
        const scalar_t wy = dy ? ay : 1 - ay;
        for (int dx = 0; dx < 2; ++dx) {
            const int tx = x0 + dx;
            if (tx < 0 || tx > W - 1) continue;
            const scalar_t wx = dx ? ax : 1 - ax;
            sum += wx * wy * source[(long)ty * W + tx];
        }
    }
    output[n] = sum;
}

extern "C" __global__ void backwarp_backward(
    const int total, const int B, const int C, const int H, const int W, const int zeros_mode,
    const scalar_t* __restrict__ image, const scalar_t* __restrict__ flow, const scalar_t* __restrict__ grad_output,
    scalar_t* __restrict__ grad_image, scalar_t* __restrict__ grad_flow)
{
    // One thread per pixel (B*H*W): the flow gradient sums over channels in registers; the image
    // gradient is a scatter of the bilinear weights (atomicAdd into zero-initialised grad_image).
    const int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= total) return;
    const int x = n % W;
    const int y = (n / W) % H;
    const int b = n / (W * H);
    const long plane = (long)H * W;
    const long pixel = (long)y * W + x;
    scalar_t sx = x + flow[((long)b * 2 + 0) * plane + pixel];
    scalar_t sy = y + flow[((long)b * 2 + 1) * plane + pixel];
    // torch.clamp passes the gradient where min <= value <= max and blocks it strictly outside.
    scalar_t pass_x = 1, pass_y = 1;
    if (!zeros_mode) {
        if (sx < 0 || sx > W - 1) pass_x = 0;
        if (sy < 0 || sy > H - 1) pass_y = 0;
        sx = fmin(fmax(sx, (scalar_t)0), (scalar_t)(W - 1));
        sy = fmin(fmax(sy, (scalar_t)0), (scalar_t)(H - 1));
    }
    const scalar_t left = floor(sx), top = floor(sy);
    const scalar_t ax = sx - left, ay = sy - top;
    const int x0 = (int)left, y0 = (int)top;
    scalar_t gx = 0, gy = 0;
    for (int c = 0; c < C; ++c) {
        const scalar_t g = grad_output[((long)b * C + c) * plane + pixel];
        const scalar_t* source = image + ((long)b * C + c) * plane;
        scalar_t* target = grad_image + ((long)b * C + c) * plane;
        for (int dy = 0; dy < 2; ++dy) {
            const int ty = y0 + dy;
            if (ty < 0 || ty > H - 1) continue;
            const scalar_t wy = dy ? ay : 1 - ay;
            const scalar_t dwy = dy ? 1 : -1;
            for (int dx = 0; dx < 2; ++dx) {
                const int tx = x0 + dx;
                if (tx < 0 || tx > W - 1) continue;
                const scalar_t wx = dx ? ax : 1 - ax;
                const scalar_t dwx = dx ? 1 : -1;
                const scalar_t value = source[(long)ty * W + tx];
                gx += g * dwx * wy * value;
                gy += g * wx * dwy * value;
                atomicAdd(&target[(long)ty * W + tx], g * wx * wy);
            }
        }
    }
    grad_flow[((long)b * 2 + 0) * plane + pixel] = gx * pass_x;
    grad_flow[((long)b * 2 + 1) * plane + pixel] = gy * pass_y;
}
