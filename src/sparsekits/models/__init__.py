"""Networks: the sparse ConvNeXt V2 U-Net, its dense twin, presets and the model folder."""

from sparsekits.models.build import build_model
from sparsekits.models.config import PRESETS, ModelConfig, resolve_config
from sparsekits.models.dense import DenseConvNeXtUNet
from sparsekits.models.io import load_model_folder, save_model_folder
from sparsekits.models.sparse import SparseConvNeXtUNet
from sparsekits.models.unet import ConvNeXtUNet

__all__ = [
    "PRESETS",
    "ConvNeXtUNet",
    "DenseConvNeXtUNet",
    "ModelConfig",
    "SparseConvNeXtUNet",
    "build_model",
    "load_model_folder",
    "resolve_config",
    "save_model_folder",
]
