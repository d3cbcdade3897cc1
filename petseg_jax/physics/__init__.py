"""The PET system model (JAX): projection, attenuation, scatter, randoms, OSEM, count thinning."""
