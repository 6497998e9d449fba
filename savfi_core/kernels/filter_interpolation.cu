// DAIN adaptive warping layer (see filter_interpolation.py). `scalar_t` is defined by the loader.
// image [B,C,H,W], flow [B,2,H,W], filters [B,S*S,H,W], dense row-major; one thread per pixel.

// Sample point of pixel (x, y); false where DAIN copies the input pixel instead of warping.
__device__ bool sample_point(const scalar_t fx, const scalar_t fy, const int x, const int y, const int H, const int W,
                             int* x0, int* y0, scalar_t* alpha, scalar_t* beta)
{
    const scalar_t x2 = x + fx, y2 = y + fy;
    if (!(x2 >= 0 && y2 >= 0 && x2 <= W - 1 && y2 <= H - 1 && fabs(fx) < W / (scalar_t)2 && fabs(fy) < H / (scalar_t)2)) {
        return false;
    }
    *x0 = (int)floor(x2);
    *y0 = (int)floor(y2);
    *alpha = x2 - *x0;
    *beta = y2 - *y0;
    return true;
}

extern "C" __global__ void filter_interpolation_forward(
    const int total, const int B, const int C, const int H, const int W, const int S,
    const scalar_t* __restrict__ image, const scalar_t* __restrict__ flow, const scalar_t* __restrict__ filters,
    scalar_t* __restrict__ output)
{
    const int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= total) return;
    const int pixel = n % (H * W);
    const int b = n / (H * W);
    const int x = pixel % W, y = pixel / W;
    const long plane = (long)H * W;
    int x0, y0;
    scalar_t alpha, beta;
    const bool warp = sample_point(flow[(long)b * 2 * plane + pixel], flow[((long)b * 2 + 1) * plane + pixel],
                                   x, y, H, W, &x0, &y0, &alpha, &beta);
    const int half = S / 2;
    for (int c = 0; c < C; ++c) {
        const scalar_t* source = image + ((long)b * C + c) * plane;
        scalar_t sum = 0;
        if (!warp) {
            sum = source[pixel];
        } else {
            for (int r = 0; r < S; ++r) {
                const int ty = min(max(y0 - half + 1 + r, 0), H - 1);
                const scalar_t wy = r < half ? 1 - beta : beta;
                for (int k = 0; k < S; ++k) {
                    const int tx = min(max(x0 - half + 1 + k, 0), W - 1);
                    const scalar_t wx = k < half ? 1 - alpha : alpha;
                    sum += source[(long)ty * W + tx] * filters[((long)b * S * S + r * S + k) * plane + pixel] * wx * wy;
                }
            }
        }
        output[((long)b * C + c) * plane + pixel] = sum;
    }
}

extern "C" __global__ void filter_interpolation_backward(
    const int total, const int B, const int C, const int H, const int W, const int S,
    const scalar_t* __restrict__ image, const scalar_t* __restrict__ flow, const scalar_t* __restrict__ filters,
    const scalar_t* __restrict__ grad_output,
    scalar_t* __restrict__ grad_image, scalar_t* __restrict__ grad_flow, scalar_t* __restrict__ grad_filters)
{
    // grad_image is zero-initialised and receives atomicAdd scatters; grad_flow and grad_filters are
    // written once per pixel.
    const int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= total) return;
    const int pixel = n % (H * W);
    const int b = n / (H * W);
    const int x = pixel % W, y = pixel / W;
    const long plane = (long)H * W;
    int x0, y0;
    scalar_t alpha, beta;
    const bool warp = sample_point(flow[(long)b * 2 * plane + pixel], flow[((long)b * 2 + 1) * plane + pixel],
                                   x, y, H, W, &x0, &y0, &alpha, &beta);
    const int half = S / 2;
    if (!warp) {
        for (int c = 0; c < C; ++c) {
            atomicAdd(&grad_image[((long)b * C + c) * plane + pixel], grad_output[((long)b * C + c) * plane + pixel]);
        }
        for (int t = 0; t < S * S; ++t) grad_filters[((long)b * S * S + t) * plane + pixel] = 0;
        grad_flow[(long)b * 2 * plane + pixel] = 0;
        grad_flow[((long)b * 2 + 1) * plane + pixel] = 0;
        return;
    }
    scalar_t grad_alpha = 0, grad_beta = 0;
    for (int r = 0; r < S; ++r) {
        const int ty = min(max(y0 - half + 1 + r, 0), H - 1);
        const scalar_t wy = r < half ? 1 - beta : beta;
        const scalar_t dwy = r < half ? -1 : 1;
        for (int k = 0; k < S; ++k) {
            const int tx = min(max(x0 - half + 1 + k, 0), W - 1);
            const scalar_t wx = k < half ? 1 - alpha : alpha;
            const scalar_t dwx = k < half ? -1 : 1;
            const long filter_index = ((long)b * S * S + r * S + k) * plane + pixel;
            const scalar_t filter = filters[filter_index];
            // tap_grad = sum_c grad_output[c] * image[c, tap]
            scalar_t tap_grad = 0;
            for (int c = 0; c < C; ++c) {
                const scalar_t g = grad_output[((long)b * C + c) * plane + pixel];
                tap_grad += g * image[((long)b * C + c) * plane + (long)ty * W + tx];
                atomicAdd(&grad_image[((long)b * C + c) * plane + (long)ty * W + tx], g * filter * wx * wy);
            }
            grad_filters[filter_index] = tap_grad * wx * wy;
            grad_alpha += tap_grad * filter * dwx * wy;
            grad_beta += tap_grad * filter * wx * dwy;
        }
    }
    grad_flow[(long)b * 2 * plane + pixel] = grad_alpha;
    grad_flow[((long)b * 2 + 1) * plane + pixel] = grad_beta;
}
