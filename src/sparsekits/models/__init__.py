"""Networks: the sparse ConvNeXt V2 U-Net and its dense twin."""
