"""Patch-based baseline: nnU-Net v2's own sliding-window predictor in the KiTS23 3d_fullres plan.

nnunetv2 cannot share the project's environment (its dependency chain timm -> torchvision
replaces our torch), so it lives in a separate virtual environment (benchmarks/install_nnunet.sh)
and this module's ``measure_sliding_window`` runs there, in a fresh process per measurement.
Only the standard library, numpy and torch are imported at module level for that reason.

A full-volume sliding window on 2 CPU cores takes hours (180 patches of about 40 s each on the
sample CT), so by default the predictor runs on a volume of exactly one patch cut from the
resampled CT and the full-volume time is that measured patch time times nnU-Net's own patch count
for the full volume (``nnunetv2.inference.sliding_window_prediction.
compute_steps_for_sliding_window``). Aggregation of a patch (a Gaussian-weighted add of 128^3 x 3
half floats) is milliseconds against a forward pass of seconds, so the extrapolation is linear.
``full_volume=True`` runs the predictor on the whole volume instead (a GPU or a long quiet run).
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np

# KiTS23 labels as nnU-Net's dataset.json gives them: three overlapping regions, sigmoid outputs.
KITS_DATASET_JSON = {
    "channel_names": {"0": "CT"},
    "labels": {"background": 0, "kidney": [1, 2, 3], "masses": [2, 3], "tumor": 2},
    "regions_class_order": [1, 3, 2],
    "file_ending": ".nii.gz",
}

# Environment variable naming the Python of the nnunetv2 venv, when it is not ./.venv-bench.
PYTHON_ENV_VAR = "SPARSEKITS_NNUNET_PYTHON"


@dataclass(frozen=True)
class NnunetPlan:
    """The KiTS23 3d_fullres plan: axes (slice, row, column), spacing (z, y, x) in mm."""

    patch_size: tuple[int, int, int] = (128, 128, 128)
    spacing_mm: tuple[float, float, float] = (1.0, 0.78125, 0.78125)
    features_per_stage: tuple[int, ...] = (32, 64, 128, 256, 320, 320)
    convs_per_stage: int = 2
    tile_step_size: float = 0.5

    @property
    def n_stages(self) -> int:
        return len(self.features_per_stage)

    def plans_dict(self) -> dict:
        """nnU-Net v2 plans (the parts its predictor reads) holding this 3d_fullres config."""
        n = self.n_stages
        return {
            "dataset_name": "Dataset220_KiTS2023",
            "plans_name": "nnUNetPlans",
            "image_reader_writer": "SimpleITKIO",
            "transpose_forward": [0, 1, 2],
            "transpose_backward": [0, 1, 2],
            "configurations": {
                "3d_fullres": {
                    "data_identifier": "nnUNetPlans_3d_fullres",
                    "preprocessor_name": "DefaultPreprocessor",
                    "batch_size": 2,
                    "patch_size": list(self.patch_size),
                    "spacing": list(self.spacing_mm),
                    "normalization_schemes": ["CTNormalization"],
                    "use_mask_for_norm": [False],
                    "architecture": {
                        "network_class_name": (
                            "dynamic_network_architectures.architectures.unet.PlainConvUNet"
                        ),
                        "arch_kwargs": {
                            "n_stages": n,
                            "features_per_stage": list(self.features_per_stage),
                            "conv_op": "torch.nn.modules.conv.Conv3d",
                            "kernel_sizes": [[3, 3, 3]] * n,
                            "strides": [[1, 1, 1]] + [[2, 2, 2]] * (n - 1),
                            "n_conv_per_stage": [self.convs_per_stage] * n,
                            "n_conv_per_stage_decoder": [self.convs_per_stage] * (n - 1),
                            "conv_bias": True,
                            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                            "norm_op_kwargs": {"eps": 1e-05, "affine": True},
                            "dropout_op": None,
                            "dropout_op_kwargs": None,
                            "nonlin": "torch.nn.LeakyReLU",
                            "nonlin_kwargs": {"inplace": True},
                        },
                        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
                    },
                }
            },
        }


KITS_3D_FULLRES = NnunetPlan()


def find_nnunet_python(folder: Path | None = None) -> str | None:
    """A Python that imports nnunetv2: $SPARSEKITS_NNUNET_PYTHON, .venv-bench in ``folder``
    (default: the working directory, the checkout's root when benchmarks/claims.py runs as
    documented), or this one."""
    explicit = os.environ.get(PYTHON_ENV_VAR)
    if explicit:
        return explicit
    venv_python = (folder or Path.cwd()) / ".venv-bench" / "bin" / "python"
    if venv_python.is_file():
        return str(venv_python)
    try:
        import nnunetv2  # noqa: F401
    except ImportError:
        return None
    return sys.executable


def measure_sliding_window(
    volume_path: str,
    full_shape: list[int],
    tta: bool,
    repeats: int,
    warmup: int,
    device: str = "cpu",
    plan: dict | None = None,
) -> dict:
    """Fresh-process target: nnUNetPredictor.predict_sliding_window_return_logits on the volume
    in ``volume_path`` (a .npy [Z, Y, X], already normalised), random weights, 1 fold.

    Returns the time per run, the patches each run predicted, and nnU-Net's patch count for a
    volume of ``full_shape`` (the whole resampled CT).
    """
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from sparsekits.bench.measure import time_median

    settings = NnunetPlan(**{**asdict(KITS_3D_FULLRES), **(plan or {})})
    plans = PlansManager(settings.plans_dict())
    configuration = plans.get_configuration("3d_fullres")
    label_manager = plans.get_label_manager(KITS_DATASET_JSON)
    torch.manual_seed(0)
    network = get_network_from_plans(
        configuration.network_arch_class_name,
        configuration.network_arch_init_kwargs,
        configuration.network_arch_init_kwargs_req_import,
        input_channels=1,
        output_channels=label_manager.num_segmentation_heads,
        deep_supervision=False,
    )
    predictor = nnUNetPredictor(
        tile_step_size=settings.tile_step_size,
        use_gaussian=True,
        use_mirroring=tta,
        device=torch.device(device),
        allow_tqdm=False,
    )
    predictor.manual_initialization(
        network,
        plans,
        configuration,
        [network.state_dict()],
        KITS_DATASET_JSON,
        "nnUNetTrainer",
        inference_allowed_mirroring_axes=(0, 1, 2),
    )
    volume = torch.from_numpy(np.load(volume_path))[None]

    def predict():
        return predictor.predict_sliding_window_return_logits(volume)

    timing = time_median(predict, repeats=repeats, warmup=warmup)

    def patches(shape) -> int:
        steps = compute_steps_for_sliding_window(
            tuple(max(s, p) for s, p in zip(shape, settings.patch_size, strict=True)),
            settings.patch_size,
            settings.tile_step_size,
        )
        return int(np.prod([len(axis) for axis in steps]))

    result = {
        **timing,
        "patches_per_run": patches(volume.shape[1:]),
        "patches_full_volume": patches(full_shape),
        "parameters": sum(p.numel() for p in network.parameters()),
        "nnunetv2": version("nnunetv2"),
        "torch": torch.__version__,
    }
    if device == "cuda":
        result["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result
