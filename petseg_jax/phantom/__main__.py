"""``python -m petseg_jax.phantom``: write a synthetic raw dataset (see :mod:`.generate`)."""

import sys

from petseg_jax.phantom.generate import main

sys.exit(main())
