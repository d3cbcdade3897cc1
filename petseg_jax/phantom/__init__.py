"""The synthetic total-body PET world: anatomy, tracer uptake, and the scan of a subject.

``python -m petseg_jax.phantom --out DIR --cases N`` writes an nnU-Net-style raw dataset.
"""
