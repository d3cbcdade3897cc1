"""Every default organ has a SNOMED CT code that pydicom's SNOMED dictionary knows, and a colour."""

import pytest
from pydicom.sr.codedict import codes

from petseg_jax.data import organ_codes
from petseg_jax.data.schema import DEFAULT_SCHEMA


def test_default_organs_have_known_snomed_codes_and_distinct_colours():
    known = {getattr(codes.SCT, name).value for name in dir(codes.SCT)
             if not name.startswith("_") and hasattr(getattr(codes.SCT, name), "value")}
    for name in DEFAULT_SCHEMA.names:
        code, _, laterality = organ_codes.snomed(name)
        assert code in known, name
        assert laterality is None or laterality[0] in known
        assert (laterality is not None) == name.endswith(("_left", "_right")), name
    colours = {organ_codes.organ_color_255(i) for i in DEFAULT_SCHEMA.foreground_ids}
    assert len(colours) == len(DEFAULT_SCHEMA.names)
    with pytest.raises(KeyError, match="no SNOMED CT code"):
        organ_codes.snomed("tumour")
