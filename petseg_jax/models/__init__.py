"""Networks: nnU-Net-like 3-D U-Nets in Flax NNX and their convolutions."""

from petseg_jax.models.unet import MODEL_DEFAULTS, UNet, build_model, total_stride

__all__ = ["MODEL_DEFAULTS", "UNet", "build_model", "total_stride"]
