"""Sparse convolutions as autograd Functions over cached kernel maps.

Backward passes are gathers, never scatters: the submanifold neighbour relation is symmetric,
so the input gradient is the same convolution applied to the output gradient with the kernel
flipped and transposed; the k2 s2 down/up convolutions have exactly one parent per child.
Nothing of size ``N * K * C`` is kept for backward: blocks are re-gathered chunk by chunk.

All arithmetic runs in the dtype of the features it is given (see ``compute_dtype``).
"""

from __future__ import annotations

import torch

from sparsekits.sparse.kernel_map import CONFIG


def compute_dtype(features: torch.Tensor) -> torch.dtype:
    """The autocast dtype when autocast is on for the features' device, else their dtype."""
    device_type = features.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return features.dtype


def _chunk_rows(kernel_volume: int, channels: int, itemsize: int) -> int:
    return max(64, CONFIG.chunk_bytes // max(1, kernel_volume * channels * itemsize))


def _padded(features: torch.Tensor) -> torch.Tensor:
    """Features with the zero row that missing neighbours point at."""
    return torch.cat([features, features.new_zeros(1, features.shape[1])])


# -- submanifold convolution: forward kernels (no autograd) ------------------------------------
def _depthwise(features: torch.Tensor, nbr: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """out[i, c] = sum_k weight[k, c] * features[nbr[i, k], c]; weight is [K, C]."""
    n, k = nbr.shape
    padded = _padded(features)
    out = features.new_empty(n, features.shape[1])
    step = _chunk_rows(k, features.shape[1], features.element_size())
    for start in range(0, n, step):
        rows = nbr[start : start + step]
        block = padded.index_select(0, rows.reshape(-1)).view(len(rows), k, -1)
        torch.sum(block.mul_(weight), dim=1, out=out[start : start + step])
    return out


def _grouped(
    features: torch.Tensor, nbr: torch.Tensor, weight: torch.Tensor, groups: int
) -> torch.Tensor:
    """Gather-GEMM: weight is [G, K * Cin_g, Cout_g]; returns [N, G * Cout_g]."""
    n, k = nbr.shape
    cin = features.shape[1]
    cin_g = cin // groups
    padded = _padded(features)
    out = features.new_empty(n, groups * weight.shape[2])
    step = _chunk_rows(k, cin, features.element_size())
    for start in range(0, n, step):
        rows = nbr[start : start + step]
        block = padded.index_select(0, rows.reshape(-1))
        if groups == 1:
            torch.mm(block.view(len(rows), k * cin), weight[0], out=out[start : start + step])
            continue
        cols = block.view(len(rows), k, groups, cin_g).permute(2, 0, 1, 3)
        res = torch.bmm(cols.reshape(groups, len(rows), k * cin_g), weight)
        out[start : start + step] = res.permute(1, 0, 2).reshape(len(rows), -1)
    return out


def _depthwise_weight_grad(
    features: torch.Tensor, nbr: torch.Tensor, grad_out: torch.Tensor
) -> torch.Tensor:
    n, k = nbr.shape
    padded = _padded(features)
    grad = features.new_zeros(k, features.shape[1])
    step = _chunk_rows(k, features.shape[1], features.element_size())
    for start in range(0, n, step):
        rows = nbr[start : start + step]
        block = padded.index_select(0, rows.reshape(-1)).view(len(rows), k, -1)
        grad += (block * grad_out[start : start + step, None, :]).sum(0)
    return grad


def _grouped_weight_grad(
    features: torch.Tensor, nbr: torch.Tensor, grad_out: torch.Tensor, groups: int
) -> torch.Tensor:
    n, k = nbr.shape
    cin = features.shape[1]
    cin_g, cout_g = cin // groups, grad_out.shape[1] // groups
    padded = _padded(features)
    grad = features.new_zeros(groups, k * cin_g, cout_g)
    step = _chunk_rows(k, cin, features.element_size())
    for start in range(0, n, step):
        rows = nbr[start : start + step]
        m = len(rows)
        cols = padded.index_select(0, rows.reshape(-1)).view(m, k, groups, cin_g)
        cols = cols.permute(2, 1, 3, 0).reshape(groups, k * cin_g, m)  # [G, K*Cin_g, m]
        g = grad_out[start : start + step].view(m, groups, cout_g).transpose(0, 1)
        grad.baddbmm_(cols, g)
    return grad


class _DepthwiseSubMConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, features, weight, nbr):  # weight [K, C]
        ctx.save_for_backward(features, weight, nbr)
        return _depthwise(features, nbr, weight)

    @staticmethod
    def backward(ctx, grad_out):
        features, weight, nbr = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grad_in = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_in = _depthwise(grad_out, nbr, weight.flip(0))
        if ctx.needs_input_grad[1]:
            grad_w = _depthwise_weight_grad(features, nbr, grad_out)
        return grad_in, grad_w, None


class _GroupedSubMConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, features, weight, nbr, groups):  # weight [G, K * Cin_g, Cout_g]
        ctx.save_for_backward(features, weight, nbr)
        ctx.groups = groups
        return _grouped(features, nbr, weight, groups)

    @staticmethod
    def backward(ctx, grad_out):
        features, weight, nbr = ctx.saved_tensors
        groups, k = ctx.groups, nbr.shape[1]
        grad_out = grad_out.contiguous()
        grad_in = grad_w = None
        if ctx.needs_input_grad[0]:
            cout_g = weight.shape[2]
            flipped = weight.view(groups, k, -1, cout_g).flip(1).transpose(2, 3)
            grad_in = _grouped(grad_out, nbr, flipped.reshape(groups, k * cout_g, -1), groups)
        if ctx.needs_input_grad[1]:
            grad_w = _grouped_weight_grad(features, nbr, grad_out, groups)
        return grad_in, grad_w, None, None


def subm_conv3d(
    features: torch.Tensor,
    nbr: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    groups: int,
) -> torch.Tensor:
    """Submanifold conv with an nn.Conv3d weight [Cout, Cin/groups, k, k, k] over ``nbr``."""
    dtype = compute_dtype(features)
    features = features.to(dtype).contiguous()
    weight = weight.to(dtype)
    cout, cin_g = weight.shape[:2]
    k = nbr.shape[1]
    with torch.autocast(features.device.type, enabled=False):
        if groups == features.shape[1] == cout:
            out = _DepthwiseSubMConv.apply(features, weight.reshape(cout, k).t(), nbr)
        else:
            w = weight.reshape(groups, cout // groups, cin_g, k).permute(0, 3, 2, 1)
            out = _GroupedSubMConv.apply(
                features, w.reshape(groups, k * cin_g, cout // groups), nbr, groups
            )
    return out if bias is None else out + bias.to(dtype)


# -- k2 s2 down convolution and its transpose ---------------------------------------------------
def _scatter_rows(features: torch.Tensor, slot: torch.Tensor, num_slots: int) -> torch.Tensor:
    table = features.new_zeros(num_slots, features.shape[1])
    return table.index_copy_(0, slot, features)


class _SlotScatter(torch.autograd.Function):
    """[N, C] -> [num_slots, C] with row slot[i] = features[i], zeros elsewhere.

    Slots are unique, so the backward pass is a gather (no atomics).
    """

    @staticmethod
    def forward(ctx, features, slot, num_slots):
        ctx.save_for_backward(slot)
        return _scatter_rows(features, slot, num_slots)

    @staticmethod
    def backward(ctx, grad_table):
        (slot,) = ctx.saved_tensors
        return grad_table.index_select(0, slot), None, None


class _SlotGather(torch.autograd.Function):
    """table[slot] where slots are unique except the last row (a zero pad row, grad dropped);
    the backward pass is a copy into distinct rows, not an accumulating scatter.
    """

    @staticmethod
    def forward(ctx, table, slot):
        ctx.save_for_backward(slot)
        ctx.num_slots = table.shape[0]
        return table.index_select(0, slot)

    @staticmethod
    def backward(ctx, grad_out):
        (slot,) = ctx.saved_tensors
        return _scatter_rows(grad_out.contiguous(), slot, ctx.num_slots), None


def slot_table(features: torch.Tensor, slot: torch.Tensor, num_slots: int) -> torch.Tensor:
    """Children scattered into their (unique) parent slots: [num_slots, C], zeros elsewhere."""
    return _SlotScatter.apply(features, slot, num_slots)


def down_conv3d(
    features: torch.Tensor,
    slot: torch.Tensor,
    num_parents: int,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
) -> torch.Tensor:
    """Conv with kernel = stride = f: one GEMM over the zero-filled [M, f^3 * Cin] child table."""
    dtype = compute_dtype(features)
    cout, cin = weight.shape[:2]
    cells = weight[0, 0].numel()
    with torch.autocast(features.device.type, enabled=False):
        table = slot_table(features.to(dtype), slot, num_parents * cells)
        w = weight.to(dtype).reshape(cout, cin, cells).permute(2, 1, 0).reshape(cells * cin, cout)
        out = table.view(num_parents, cells * cin) @ w
    return out if bias is None else out + bias.to(dtype)


def inverse_conv3d(
    features: torch.Tensor,
    slot: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
) -> torch.Tensor:
    """Transposed conv (kernel = stride): Y = X @ W as [M, f^3, Cout], then child i takes
    Y[slot[i]]. A slot of M * f^3 marks a child whose parent is absent (it gets only the bias).
    """
    dtype = compute_dtype(features)
    cin, cout = weight.shape[:2]
    cells = weight[0, 0].numel()
    with torch.autocast(features.device.type, enabled=False):
        w = weight.to(dtype).reshape(cin, cout, cells).transpose(1, 2).reshape(cin, cells * cout)
        per_slot = (features.to(dtype) @ w).view(-1, cout)
        per_slot = torch.cat([per_slot, per_slot.new_zeros(1, cout)])
        out = _SlotGather.apply(per_slot, slot)
    return out if bias is None else out + bias.to(dtype)
