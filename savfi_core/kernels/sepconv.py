"""Separable local convolution of SepConv (Niklaus et al., ICCV 2017).

Math. With input ``I`` of shape [B, C, H+K-1, W+K-1] and per-pixel 1-D kernels ``V`` (vertical) and
``Hz`` (horizontal) of shape [B, K, H, W]:

    out[b, c, y, x] = sum_{i<K} sum_{j<K} I[b, c, y+i, x+j] * V[b, i, y, x] * Hz[b, j, y, x]

Implementation. All first and higher derivatives come from one multilinear form

    S(G, I, V, Hz) = sum_{b,c,y,x,i,j} G[b,c,y,x] * I[b,c,y+i,x+j] * V[b,i,y,x] * Hz[b,j,y,x],

because ``out = dS/dG`` and S is linear in each argument. The vector-Jacobian product of
``dS/dX`` w.r.t. another argument ``Y`` is ``dS/dY`` with ``X`` replaced by the incoming gradient. So
one autograd Function, "the partial of S w.r.t. one role given the other three", is closed under
differentiation: its backward calls itself, and `create_graph=True` works to any order on both
backends. The four partials are:

    dS/dG  [B,C,H,W]:          sum_i V_i(y,x) sum_j I(y+i, x+j) Hz_j(y,x)            (the forward)
    dS/dI  [B,C,H+K-1,W+K-1]:  sum_{i,j} G(p-i, q-j) V_i(p-i, q-j) Hz_j(p-i, q-j)   (transposed)
    dS/dV  [B,K,H,W]:          sum_c G_c(y,x) sum_j I_c(y+i, x+j) Hz_j(y,x)
    dS/dHz [B,K,H,W]:          sum_c G_c(y,x) sum_i I_c(y+i, x+j) V_i(y,x)

The PyTorch reference computes each partial with K*K in-place multiply-adds of shifted [B,C,H,W]
slices, so it never holds a [B,C,H,W,K,K] patch tensor (at 1x3x256x448, K=51 it needs tens of MB
beyond its inputs, see benchmarks/kernels-cpu.md). The CuPy backend computes the same partials with
the kernels in ``sepconv.cu`` (one thread per output element, gathers only, no atomics).
"""
from __future__ import annotations

import torch

from ._backend import check_shape, fold_vmapped_batch, launch, require_contiguous, select_backend

ROLES = ("output", "input", "vertical", "horizontal")


def sepconv(input: torch.Tensor, vertical: torch.Tensor, horizontal: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Per-pixel separable convolution: [B,C,H+K-1,W+K-1] x [B,K,H,W] x [B,K,H,W] -> [B,C,H,W].

    ``out[b,c,y,x] = sum_i sum_j input[b,c,y+i,x+j] * vertical[b,i,y,x] * horizontal[b,j,y,x]``.
    The caller pads ``input`` by K-1 (SepConv pads by K//2 on each side with replication).
    Differentiable to any order w.r.t. all three inputs on both backends.
    ``backend``: "auto", "cupy" or "torch" (see ``savfi_core.kernels.last_backend``).
    """
    check_shape("sepconv", "input", input, 4)
    check_shape("sepconv", "vertical", vertical, 4)
    check_shape("sepconv", "horizontal", horizontal, 4)
    batch, _, padded_height, padded_width = input.shape
    kernel_size, height, width = vertical.shape[1:]
    if horizontal.shape != vertical.shape:
        raise ValueError(
            f"savfi_core.kernels.sepconv: vertical {tuple(vertical.shape)} and horizontal {tuple(horizontal.shape)} must match"
        )
    if vertical.shape[0] != batch or padded_height != height + kernel_size - 1 or padded_width != width + kernel_size - 1:
        raise ValueError(
            f"savfi_core.kernels.sepconv: input {tuple(input.shape)} must be [B, C, H+K-1, W+K-1] for kernels "
            f"[B, K, H, W] = {tuple(vertical.shape)}"
        )
    chosen = select_backend("sepconv", backend, input, vertical, horizontal)
    if chosen == "cupy":
        require_contiguous("sepconv", input=input, vertical=vertical, horizontal=horizontal)
    return _SeparableContraction.apply("output", chosen, None, input, vertical, horizontal)


class _SeparableContraction(torch.autograd.Function):
    """dS/d(role) given the other three operands of S (the slot of ``role`` is None)."""

    @staticmethod
    def forward(role, backend, output, input, vertical, horizontal):
        operands = dict(zip(ROLES, (output, input, vertical, horizontal)))
        compute = _cupy_partial if backend == "cupy" else _torch_partial
        return compute(role, operands)

    @staticmethod
    def setup_context(ctx, inputs, output):
        role, backend, *slots = inputs
        operands = dict(zip(ROLES, slots))
        ctx.role = role
        ctx.backend = backend
        ctx.save_for_backward(*(operands[name] for name in ROLES if name != role))

    @staticmethod
    def vmap(info, in_dims, role, backend, *slots):
        """Under ``torch.func.vmap``: every operand already has a batch dimension, so the vmapped
        one is folded into it and the op runs once, on either backend."""
        result = _SeparableContraction.apply(role, backend, *fold_vmapped_batch(info.batch_size, in_dims[2:], slots))
        return result.reshape(info.batch_size, -1, *result.shape[1:]), 0

    @staticmethod
    def backward(ctx, grad):
        others = [name for name in ROLES if name != ctx.role]
        operands = dict(zip(others, ctx.saved_tensors))
        operands[ctx.role] = grad
        grads = []
        for index, name in enumerate(ROLES):
            if name == ctx.role or not ctx.needs_input_grad[2 + index]:
                grads.append(None)
                continue
            slots = [None if slot == name else operands[slot] for slot in ROLES]
            grads.append(_SeparableContraction.apply(name, ctx.backend, *slots))
        return (None, None, *grads)


def _sizes(operands: dict) -> tuple[int, int, int, int, int]:
    """(B, C, H, W, K) from whichever operands are present."""
    kernels = operands["vertical"] if operands["vertical"] is not None else operands["horizontal"]
    batch, kernel_size, height, width = kernels.shape
    channels_source = operands["output"] if operands["output"] is not None else operands["input"]
    return batch, channels_source.shape[1], height, width, kernel_size


def _torch_partial(role: str, operands: dict) -> torch.Tensor:
    """Reference partials by K*K in-place multiply-adds of shifted slices (runs under no_grad)."""
    batch, channels, height, width, kernel_size = _sizes(operands)
    output, input, vertical, horizontal = (operands[name] for name in ROLES)
    present = next(tensor for tensor in operands.values() if tensor is not None)
    like = dict(dtype=present.dtype, device=present.device)

    def window(i: int, j: int) -> torch.Tensor:
        return input[:, :, i:i + height, j:j + width]

    if role == "output":
        result = torch.zeros(batch, channels, height, width, **like)
        row = torch.empty(batch, channels, height, width, **like)
        for i in range(kernel_size):
            row.zero_()
            for j in range(kernel_size):
                row.addcmul_(window(i, j), horizontal[:, j:j + 1])
            result.addcmul_(row, vertical[:, i:i + 1])
        return result
    if role == "input":
        result = torch.zeros(batch, channels, height + kernel_size - 1, width + kernel_size - 1, **like)
        for i in range(kernel_size):
            weighted = output * vertical[:, i:i + 1]
            for j in range(kernel_size):
                result[:, :, i:i + height, j:j + width].addcmul_(weighted, horizontal[:, j:j + 1])
        return result
    if role == "vertical":
        result = torch.empty(batch, kernel_size, height, width, **like)
        row = torch.empty(batch, channels, height, width, **like)
        for i in range(kernel_size):
            row.zero_()
            for j in range(kernel_size):
                row.addcmul_(window(i, j), horizontal[:, j:j + 1])
            torch.sum(row * output, dim=1, out=result[:, i])
        return result
    if role == "horizontal":
        result = torch.empty(batch, kernel_size, height, width, **like)
        column = torch.empty(batch, channels, height, width, **like)
        for j in range(kernel_size):
            column.zero_()
            for i in range(kernel_size):
                column.addcmul_(window(i, j), vertical[:, i:i + 1])
            torch.sum(column * output, dim=1, out=result[:, j])
        return result
    raise ValueError(f"unknown role {role!r}")


_CHANNEL_GROUP = 4  # must equal CHANNEL_GROUP in sepconv.cu

_KERNEL_NAMES = {
    "output": "sepconv_output",
    "input": "sepconv_input",
    "vertical": "sepconv_vertical",
    "horizontal": "sepconv_horizontal",
}


def _cupy_partial(role: str, operands: dict) -> torch.Tensor:
    """CuPy partials; gradients arriving from autograd may be strided, so make them dense here."""
    batch, channels, height, width, kernel_size = _sizes(operands)
    dense = {name: (None if tensor is None else tensor.contiguous()) for name, tensor in operands.items()}
    present = next(tensor for tensor in dense.values() if tensor is not None)
    shapes = {
        "output": (batch, channels, height, width),
        "input": (batch, channels, height + kernel_size - 1, width + kernel_size - 1),
        "vertical": (batch, kernel_size, height, width),
        "horizontal": (batch, kernel_size, height, width),
    }
    result = torch.empty(shapes[role], dtype=present.dtype, device=present.device)
    placeholder = result  # the kernel never reads the slot that it writes
    arguments = [dense[name] if dense[name] is not None else placeholder for name in ROLES]
    threads = result.numel()
    if role == "output":
        # sepconv_output runs one thread per pixel and group of CHANNEL_GROUP (4) channels
        threads = batch * ((channels + _CHANNEL_GROUP - 1) // _CHANNEL_GROUP) * height * width
    launch("sepconv.cu", _KERNEL_NAMES[role], threads,
           [threads, batch, channels, height, width, kernel_size, *arguments, result], result)
    return result
