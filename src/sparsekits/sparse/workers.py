"""Work split over the engine's worker threads, for loops over row chunks outside the convs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

from sparsekits.sparse.functional import _pool

Item = TypeVar("Item")


def on_workers(
    items: Sequence[Item],
    body: Callable[[Item, torch.Tensor | None], None],
    make_accumulator: Callable[[], torch.Tensor] | None = None,
) -> list[torch.Tensor | None]:
    """Calls ``body(item, accumulator)`` for every item, spread over ``torch.get_num_threads()``
    worker threads whose torch ops run single-threaded (no thread barrier per op); returns each
    worker's accumulator. Bodies must write disjoint outputs or their own accumulator. Runs in
    the caller's grad or inference mode (both are per thread)."""
    workers = max(1, min(torch.get_num_threads(), len(items)))
    inference = torch.is_inference_mode_enabled()
    grad = torch.is_grad_enabled()

    def work(worker: int) -> torch.Tensor | None:
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            accumulator = None if make_accumulator is None else make_accumulator()
            for item in items[worker::workers]:
                body(item, accumulator)
        return accumulator

    if workers == 1:
        return [work(0)]
    return list(_pool(workers).map(work, range(workers)))
