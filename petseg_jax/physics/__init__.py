"""The PET system model (JAX): projection, attenuation, scatter, randoms, OSEM, count thinning.

- :mod:`projector`: rebinned (2-D per slice) parallel-beam projector, exact adjoint, subsets;
- :mod:`scanners`: scanner classes (total body, long axial, conventional multi-bed), axial
  sensitivity profiles, scatter/randoms fractions and OSEM protocols;
- :mod:`acquisition`: expected data (attenuation, normalisation, scatter, randoms), Poisson
  counts and binomial thinning;
- :mod:`reconstruction`: OSEM (PSF modelled) with or without attenuation and scatter
  correction, post-filter;
- :mod:`simulation`: a scan from start to finish (acquire, draw, thin, reconstruct) and the
  count level of an image from its own noise;
- :mod:`attenuation`: 511 keV mu-maps from CT (HU) or from a body outline and organ labels.
"""
