"""Sparse convolutions as autograd Functions over cached kernel maps.

Backward passes are gathers, never scatters: the submanifold neighbour relation is symmetric,
so the input gradient is the same convolution applied to the output gradient with the kernel
flipped and transposed; the k2 s2 down/up convolutions have exactly one parent per child.
Nothing of size ``N * K * C`` is kept for backward: blocks are re-gathered chunk by chunk.

All arithmetic runs in the dtype of the features it is given (see ``compute_dtype``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch

from sparsekits.sparse.kernel_map import CONFIG, NeighbourMap


def compute_dtype(features: torch.Tensor) -> torch.dtype:
    """The autocast dtype when autocast is on for the features' device, else their dtype."""
    device_type = features.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return features.dtype


class _Chunks:
    """Row chunks of a neighbour map and how to gather one into a reusable buffer.

    Allocating a fresh block per chunk costs page faults that dwarf the arithmetic on CPU; one
    buffer of about ``chunk_bytes`` per worker stays warm in its core's cache instead. Missing
    neighbours are gathered from row 0 and then zeroed, so the features are never copied to
    append a zero row.
    """

    def __init__(self, features: torch.Tensor, nbr: NeighbourMap):
        self.n, self.k = nbr.rows.shape
        self.nbr = nbr
        self.features = features
        self.channels = features.shape[1]
        budget = CONFIG.chunk_bytes if features.device.type == "cpu" else CONFIG.cuda_chunk_bytes
        row_bytes = self.k * self.channels * features.element_size()
        self.step = max(32, budget // max(1, row_bytes))
        self.count = -(-self.n // self.step)
        self.missing_bounds = nbr.chunk_bounds(self.step)

    def new_buffer(self) -> torch.Tensor:
        return self.features.new_empty(min(self.step, self.n) * self.k, self.channels)

    def gather(self, chunk: int, buffer: torch.Tensor) -> tuple[slice, torch.Tensor]:
        """(row slice, gathered block [rows, K, C]) of one chunk, written into ``buffer``."""
        start = chunk * self.step
        rows = self.nbr.rows[start : start + self.step]
        block = buffer[: rows.numel()]
        torch.index_select(self.features, 0, rows.view(-1), out=block)
        low, high = self.missing_bounds[chunk], self.missing_bounds[chunk + 1]
        if high > low:
            block.index_fill_(0, self.nbr.missing[low:high] - start * self.k, 0)
        return slice(start, start + len(rows)), block.view(len(rows), self.k, self.channels)


_POOLS: dict[int, ThreadPoolExecutor] = {}
# A forked child (DataLoader worker, multiprocessing) inherits the dict but not the threads.
os.register_at_fork(after_in_child=_POOLS.clear)


def _pool(workers: int) -> ThreadPoolExecutor:
    """Threads whose torch ops run single-threaded: each works through its own chunks.

    One parallel region per small op would put a thread barrier in every op; on a busy machine
    each barrier waits for a time slice. Coarse parallelism over chunks has none.
    """
    pool = _POOLS.get(workers)
    if pool is None:
        main_threads = torch.get_num_threads()
        started = threading.Barrier(workers + 1)

        def single_threaded() -> None:
            torch.get_num_threads()  # ATen's lazy per-thread init first, so it cannot undo ...
            torch.set_num_threads(1)  # ... this, which then holds for this thread alone
            started.wait()

        pool = ThreadPoolExecutor(workers, "sparsekits-chunks", initializer=single_threaded)
        for _ in range(workers):
            pool.submit(lambda: None)
        started.wait()
        torch.set_num_threads(main_threads)  # restore the default for threads made later
        _POOLS[workers] = pool
    return pool


def _map_chunks(
    features: torch.Tensor,
    nbr: NeighbourMap,
    body: Callable[[slice, torch.Tensor, torch.Tensor | None], None],
    make_accumulator: Callable[[], torch.Tensor] | None = None,
) -> list[torch.Tensor | None]:
    """Calls ``body(rows, block, accumulator)`` for every chunk; returns each worker's
    accumulator. On CPU the chunks are spread over ``torch.get_num_threads()`` worker threads
    (bodies must write disjoint rows or their own accumulator); on CUDA one loop suffices.
    """
    chunks = _Chunks(features, nbr)
    workers = 1
    if features.device.type == "cpu":
        workers = max(1, min(torch.get_num_threads(), chunks.count))

    # Grad and inference modes are per thread: the workers run the raw kernels without autograd,
    # and in the caller's inference mode, so they may write into its inference tensors.
    inference = torch.is_inference_mode_enabled()

    def work(worker: int) -> torch.Tensor | None:
        with torch.inference_mode() if inference else torch.no_grad():
            buffer = chunks.new_buffer()
            accumulator = None if make_accumulator is None else make_accumulator()
            for chunk in range(worker, chunks.count, workers):
                rows, block = chunks.gather(chunk, buffer)
                body(rows, block, accumulator)
        return accumulator

    if workers == 1:
        return [work(0)]
    return list(_pool(workers).map(work, range(workers)))


# -- submanifold convolution: forward kernels (no autograd) ------------------------------------
def _depthwise(
    features: torch.Tensor, nbr: NeighbourMap, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """out[i, c] = bias[c] + sum_k weight[k, c] * features[nbr[i, k], c]; weight is [K, C]."""
    out = features.new_empty(len(nbr.rows), features.shape[1])

    def body(rows: slice, block: torch.Tensor, _) -> None:
        torch.sum(block.mul_(weight), dim=1, out=out[rows])
        if bias is not None:
            out[rows] += bias

    _map_chunks(features, nbr, body)
    return out


def _grouped(
    features: torch.Tensor,
    nbr: NeighbourMap,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    groups: int,
) -> torch.Tensor:
    """Gather-GEMM: weight is [G, K * Cin_g, Cout_g]; returns [N, G * Cout_g]."""
    k, cin_g = nbr.kernel_volume, features.shape[1] // groups
    out = features.new_empty(len(nbr.rows), groups * weight.shape[2])

    def body(rows: slice, block: torch.Tensor, _) -> None:
        m = len(block)
        if groups == 1:
            cols = block.view(m, k * cin_g)
            if bias is None:
                torch.mm(cols, weight[0], out=out[rows])
            else:
                torch.addmm(bias, cols, weight[0], out=out[rows])
            return
        cols = block.view(m, k, groups, cin_g).permute(2, 0, 1, 3).reshape(groups, m, k * cin_g)
        out[rows] = torch.bmm(cols, weight).transpose(0, 1).reshape(m, -1)
        if bias is not None:
            out[rows] += bias

    _map_chunks(features, nbr, body)
    return out


def _depthwise_weight_grad(
    features: torch.Tensor, nbr: NeighbourMap, grad_out: torch.Tensor
) -> torch.Tensor:
    def body(rows: slice, block: torch.Tensor, grad: torch.Tensor) -> None:
        grad += block.mul_(grad_out[rows, None, :]).sum(0)

    def zeros() -> torch.Tensor:
        return features.new_zeros(nbr.kernel_volume, features.shape[1])

    return torch.stack(_map_chunks(features, nbr, body, zeros)).sum(0)


def _grouped_weight_grad(
    features: torch.Tensor, nbr: NeighbourMap, grad_out: torch.Tensor, groups: int
) -> torch.Tensor:
    k, cin_g = nbr.kernel_volume, features.shape[1] // groups
    cout_g = grad_out.shape[1] // groups

    def body(rows: slice, block: torch.Tensor, grad: torch.Tensor) -> None:
        m = len(block)
        if groups == 1:
            grad[0].addmm_(block.view(m, k * cin_g).t(), grad_out[rows])
            return
        cols = block.view(m, k, groups, cin_g).permute(2, 1, 3, 0).reshape(groups, k * cin_g, m)
        grad.baddbmm_(cols, grad_out[rows].view(m, groups, cout_g).transpose(0, 1))

    def zeros() -> torch.Tensor:
        return features.new_zeros(groups, k * cin_g, cout_g)

    return torch.stack(_map_chunks(features, nbr, body, zeros)).sum(0)


class _DepthwiseSubMConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, features, weight, bias, nbr):  # weight [K, C]
        ctx.save_for_backward(features, weight)
        ctx.nbr, ctx.has_bias = nbr, bias is not None
        return _depthwise(features, nbr, weight, bias)

    @staticmethod
    def backward(ctx, grad_out):
        (features, weight), nbr = ctx.saved_tensors, ctx.nbr
        grad_out = grad_out.contiguous()
        grad_in = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_in = _depthwise(grad_out, nbr, weight.flip(0), None)
        if ctx.needs_input_grad[1]:
            grad_w = _depthwise_weight_grad(features, nbr, grad_out)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_out.sum(0)
        return grad_in, grad_w, grad_b, None


class _GroupedSubMConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, features, weight, bias, nbr, groups):  # weight [G, K * Cin_g, Cout_g]
        ctx.save_for_backward(features, weight)
        ctx.nbr, ctx.groups, ctx.has_bias = nbr, groups, bias is not None
        return _grouped(features, nbr, weight, bias, groups)

    @staticmethod
    def backward(ctx, grad_out):
        (features, weight), nbr = ctx.saved_tensors, ctx.nbr
        groups, k = ctx.groups, nbr.kernel_volume
        grad_out = grad_out.contiguous()
        grad_in = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            cout_g = weight.shape[2]
            flipped = weight.view(groups, k, -1, cout_g).flip(1).transpose(2, 3)
            flipped = flipped.reshape(groups, k * cout_g, -1)
            grad_in = _grouped(grad_out, nbr, flipped, None, groups)
        if ctx.needs_input_grad[1]:
            grad_w = _grouped_weight_grad(features, nbr, grad_out, groups)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_out.sum(0)
        return grad_in, grad_w, grad_b, None, None


def subm_conv3d(
    features: torch.Tensor,
    nbr: NeighbourMap,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    groups: int,
) -> torch.Tensor:
    """Submanifold conv with an nn.Conv3d weight [Cout, Cin/groups, k, k, k] over ``nbr``."""
    dtype = compute_dtype(features)
    features = features.to(dtype).contiguous()
    weight = weight.to(dtype)
    bias = None if bias is None else bias.to(dtype)
    cout, cin_g = weight.shape[:2]
    k = nbr.kernel_volume
    with torch.autocast(features.device.type, enabled=False):
        if groups == features.shape[1] == cout:
            depthwise = weight.reshape(cout, k).t().contiguous()  # [K, C], contiguous for fast mul
            return _DepthwiseSubMConv.apply(features, depthwise, bias, nbr)
        w = weight.reshape(groups, cout // groups, cin_g, k).permute(0, 3, 2, 1)
        w = w.reshape(groups, k * cin_g, cout // groups)
        return _GroupedSubMConv.apply(features, w, bias, nbr, groups)


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
