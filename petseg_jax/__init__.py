"""petseg_jax: multi-organ segmentation of total-body PET in JAX/Flax NNX.

Stages, each with its own CLI (``python -m petseg_jax.<stage> --help``):
``phantom`` -> ``data.ingest`` -> ``plan`` -> ``train`` -> ``evaluate`` -> ``export`` ->
``predict``. Importing this package imports nothing heavy.
"""

__version__ = "0.1.0"
