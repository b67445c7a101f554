"""The compute device a command runs on: refused in one line when this machine has none such,
before any model is loaded (torch's own error would be a traceback from deep in the loading)."""

from __future__ import annotations

from sparsekits.errors import InputError


def check_device(name: str) -> None:
    """Refuse (InputError) a device name that is not ``cpu``, ``cuda`` or ``cuda:N``, or a CUDA
    device this machine does not have."""
    if name == "cpu":  # without importing torch: a refusal of other input stays fast
        return
    import torch

    option = f"--device {name}"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as error:
        raise InputError(option, "not a device (cpu, cuda or cuda:N)") from error
    if device.type == "cpu":
        return
    if device.type != "cuda":
        raise InputError(option, "unsupported device type (cpu, cuda or cuda:N)")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise InputError(option, "no CUDA device on this machine; use --device cpu")
    if device.index is not None and device.index >= count:
        raise InputError(
            option, f"no such CUDA device: this machine has cuda:0 to cuda:{count - 1}"
        )
