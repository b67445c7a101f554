"""The compute device a command runs on: refused in one line when this machine has none such,
before any model is loaded (torch's own error would be a traceback from deep in the loading)."""

from __future__ import annotations

from sparsekits.errors import InputError

# --device auto: CUDA (its current device) when this machine has it, else the CPU.
AUTO = "auto"
DEVICE_CHOICES = "cpu, cuda, cuda:N or auto (CUDA when present, else the CPU)"


def resolve_device(name: str) -> str:
    """``name`` with ``auto`` replaced by the device it picks (``cuda`` or ``cpu``)."""
    if name != AUTO:
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(name: str) -> str:
    """The device to run on for ``--device name``: ``cpu``, ``cuda``, ``cuda:N``, or ``auto``
    resolved (``resolve_device``). Refuse (InputError) another name, or a CUDA device this
    machine does not have."""
    if name == "cpu":  # without importing torch: a refusal of other input stays fast
        return name
    import torch

    option = f"--device {name}"
    resolved = resolve_device(name)
    try:
        device = torch.device(resolved)
    except (RuntimeError, ValueError) as error:
        raise InputError(option, f"not a device ({DEVICE_CHOICES})") from error
    if device.type == "cpu":
        return resolved
    if device.type != "cuda":
        raise InputError(option, f"unsupported device type ({DEVICE_CHOICES})")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise InputError(option, "no CUDA device on this machine; use --device cpu or auto")
    if device.index is not None and device.index >= count:
        raise InputError(
            option, f"no such CUDA device: this machine has cuda:0 to cuda:{count - 1}"
        )
    return resolved
