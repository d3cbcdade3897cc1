"""Inference: jitted sliding-window prediction and label post-processing (jax, numpy, scipy only)."""

from petseg_jax.inference.sliding_window import Windows, sliding_window, sliding_window_labels

__all__ = ["Windows", "sliding_window", "sliding_window_labels"]
