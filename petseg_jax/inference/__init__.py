"""Inference: jitted sliding-window prediction and label post-processing (jax, numpy, scipy only)."""

from petseg_jax.inference.sliding_window import sliding_window

__all__ = ["sliding_window"]
