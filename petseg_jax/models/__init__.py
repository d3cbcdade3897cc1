"""Networks: 3-D U-Nets (``unet``) on convolutions with a fast CPU path (``conv``).

``build_model(model_cfg, in_channels, num_classes, rngs)`` and ``total_stride(model_cfg)``
are the entry points; ``python -m petseg_jax.bench.conv`` times the conv paths.
"""

from petseg_jax.models.unet import build_model, model_config, total_stride

__all__ = ["build_model", "model_config", "total_stride"]
