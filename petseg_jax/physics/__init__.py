"""The PET system model (JAX): projection, attenuation, scatter, randoms, OSEM, count thinning.

- :mod:`projector`: rebinned (2-D per slice) parallel-beam projector, exact adjoint, subsets;
- :mod:`scanners`: scanner classes (total body, long axial, conventional multi-bed), axial
  sensitivity profiles, scatter/randoms fractions and OSEM protocols;
- :mod:`acquisition`: expected data (attenuation, normalisation, scatter, randoms), Poisson
  counts and binomial thinning;
- :mod:`reconstruction`: OSEM with or without attenuation and scatter correction, post-filter.
"""
