// DAIN depth-aware flow projection (see depth_flow_projection.py). `scalar_t` is defined by the
// loader. flow [B,2,H,W], depth [B,1,H,W], numerator [B,2,H,W], count [B,1,H,W], dense row-major.
// One thread per pixel (B*H*W) in every kernel.

// The four splat targets of source pixel (x, y) moved by d = time * flow; false when outside.
__device__ bool splat_targets(const int x, const int y, const scalar_t dx, const scalar_t dy, const int H, const int W,
                              int targets[4])
{
    const scalar_t x2 = x + dx, y2 = y + dy;
    if (!(x2 >= 0 && y2 >= 0 && x2 <= W - 1 && y2 <= H - 1)) return false;
    const int left = (int)floor(x2), top = (int)floor(y2);
    const int right = min(left + 1, W - 1), bottom = min(top + 1, H - 1);
    targets[0] = top * W + left;
    targets[1] = top * W + right;
    targets[2] = bottom * W + left;
    targets[3] = bottom * W + right;
    return true;
}

// DAIN's fill-hole search: nearest pixel with count > 0 to the left, right, above and below (-1: none).
__device__ int find_neighbours(const scalar_t* count, const int x, const int y, const int H, const int W, int found[4])
{
    const int steps_x[4] = {-1, 1, 0, 0};
    const int steps_y[4] = {0, 0, -1, 1};
    int number = 0;
    for (int d = 0; d < 4; ++d) {
        int nx = x + steps_x[d], ny = y + steps_y[d];
        while (nx >= 0 && nx < W && ny >= 0 && ny < H && count[ny * W + nx] <= 0) {
            nx += steps_x[d];
            ny += steps_y[d];
        }
        if (nx >= 0 && nx < W && ny >= 0 && ny < H) {
            found[d] = ny * W + nx;
            ++number;
        } else {
            found[d] = -1;
        }
    }
    return number;
}

extern "C" __global__ void projection_splat(
    const int total, const int B, const int H, const int W, const scalar_t time,
    const scalar_t* __restrict__ flow, const scalar_t* __restrict__ depth,
    scalar_t* __restrict__ numerator, scalar_t* __restrict__ count)
{
    const int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= total) return;
    const int pixel = n % (H * W);
    const int b = n / (H * W);
    const long plane = (long)H * W;
    const scalar_t dx = time * flow[(long)b * 2 * plane + pixel];
    const scalar_t dy = time * flow[((long)b * 2 + 1) * plane + pixel];
    int targets[4];
    if (!splat_targets(pixel % W, pixel / W, dx, dy, H, W, targets)) return;
    const scalar_t weight = 1 / depth[(long)b * plane + pixel];
    for (int t = 0; t < 4; ++t) {
        atomicAdd(&numerator[(long)b * 2 * plane + targets[t]], weight * dx);
        atomicAdd(&numerator[((long)b * 2 + 1) * plane + targets[t]], weight * dy);
        atomicAdd(&count[(long)b * plane + targets[t]], weight);
    }
}

extern "C" __global__ void projection_finish(
    const int total, const int B, const int H, const int W, const int fill_holes,
    const scalar_t* __restrict__ numerator, const scalar_t* __restrict__ count, scalar_t* __restrict__ output)
{
    const int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= total) return;
    const int pixel = n % (H * W);
    const int b = n / (H * W);
    const long plane = (long)H * W;
    const scalar_t* counts = count + (long)b * plane;
    const scalar_t* numerator_x = numerator + (long)b * 2 * plane;
    const scalar_t* numerator_y = numerator_x + plane;
    scalar_t value_x = 0, value_y = 0;
    if (counts[pixel] > 0) {
        value_x = -numerator_x[pixel] / counts[pixel];
        value_y = -numerator_y[pixel] / counts[pixel];
    } else if (fill_holes) {
        int found[4];
        const int number = find_neighbours(counts, pixel % W, pixel / W, H, W, found);
        for (int d = 0; d < 4; ++d) {
            if (found[d] < 0) continue;
            value_x += -numerator_x[found[d]] / counts[found[d]];
            value_y += -numerator_y[found[d]] / counts[found[d]];
        }
        if (number > 0) {
            value_x /= number;
            value_y /= number;
        }
    }
    output[(long)b * 2 * plane + pixel] = value_x;
    output[((long)b * 2 + 1) * plane + pixel] = value_y;
}

extern "C" __global__ void projection_backward_spread(
    const int total, const int B, const int H, const int W, const int fill_holes,
    const scalar_t* __restrict__ count, const scalar_t* __restrict__ grad_output, scalar_t* __restrict__ grad_projected)
{
    // grad_projected (zero-initialised) at a covered pixel = its own gradient + 1/number of the
    // gradient of each hole that averaged it.
    const int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= total) return;
    const int pixel = n % (H * W);
    const int b = n / (H * W);
    const long plane = (long)H * W;
    const scalar_t* counts = count + (long)b * plane;
    const scalar_t grad_x = grad_output[(long)b * 2 * plane + pixel];
    const scalar_t grad_y = grad_output[((long)b * 2 + 1) * plane + pixel];
    if (counts[pixel] > 0) {
        atomicAdd(&grad_projected[(long)b * 2 * plane + pixel], grad_x);
        atomicAdd(&grad_projected[((long)b * 2 + 1) * plane + pixel], grad_y);
    } else if (fill_holes) {
        int found[4];
        const int number = find_neighbours(counts, pixel % W, pixel / W, H, W, found);
        for (int d = 0; d < 4; ++d) {
            if (found[d] < 0) continue;
            atomicAdd(&grad_projected[(long)b * 2 * plane + found[d]], grad_x / number);
            atomicAdd(&grad_projected[((long)b * 2 + 1) * plane + found[d]], grad_y / number);
        }
    }
}

extern "C" __global__ void projection_backward_source(
    const int total, const int B, const int H, const int W, const scalar_t time,
    const scalar_t* __restrict__ flow, const scalar_t* __restrict__ depth, const scalar_t* __restrict__ count,
    const scalar_t* __restrict__ output, const scalar_t* __restrict__ grad_projected,
    scalar_t* __restrict__ grad_flow, scalar_t* __restrict__ grad_depth)
{
    // out(t) = -N(t)/Q(t): d out(t)/d d(x) = -w(x)/Q(t); d out(t)/d w(x) = (-d(x) - out(t))/Q(t);
    // w = 1/depth, so d w / d depth = -w^2.
    const int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= total) return;
    const int pixel = n % (H * W);
    const int b = n / (H * W);
    const long plane = (long)H * W;
    const scalar_t dx = time * flow[(long)b * 2 * plane + pixel];
    const scalar_t dy = time * flow[((long)b * 2 + 1) * plane + pixel];
    const scalar_t weight = 1 / depth[(long)b * plane + pixel];
    scalar_t grad_dx = 0, grad_dy = 0, grad_weight = 0;
    int targets[4];
    if (splat_targets(pixel % W, pixel / W, dx, dy, H, W, targets)) {
        for (int t = 0; t < 4; ++t) {
            const scalar_t q = count[(long)b * plane + targets[t]];
            const scalar_t g_x = grad_projected[(long)b * 2 * plane + targets[t]];
            const scalar_t g_y = grad_projected[((long)b * 2 + 1) * plane + targets[t]];
            const scalar_t out_x = output[(long)b * 2 * plane + targets[t]];
            const scalar_t out_y = output[((long)b * 2 + 1) * plane + targets[t]];
            grad_dx += -g_x * weight / q;
            grad_dy += -g_y * weight / q;
            grad_weight += (g_x * (-dx - out_x) + g_y * (-dy - out_y)) / q;
        }
    }
    grad_flow[(long)b * 2 * plane + pixel] = time * grad_dx;
    grad_flow[((long)b * 2 + 1) * plane + pixel] = time * grad_dy;
    grad_depth[(long)b * plane + pixel] = -weight * weight * grad_weight;
}
