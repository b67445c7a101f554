"""sparsekits: two-stage submanifold sparse ConvNeXt V2 U-Nets for kidney, tumour and cyst
segmentation in 3D CT.

Packages, one per concern:
    sparse    the sparse-tensor engine (knows nothing of CT)
    models    the networks (sparse ConvNeXt V2 U-Net and its dense twin)
    data      I/O, geometry, sparsification, datasets, phantoms, preprocessing cache
    train     losses, cross-validation training
    predict   two-stage inference, reports, overlays
    evaluate  KiTS23 metrics
    bench     measurement helpers and benchmark drivers
"""

__version__ = "0.1.0"
