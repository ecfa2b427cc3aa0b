"""Every study's params group, one light module each (pydantic only, no torch): validating
params.yaml imports these and nothing heavy. The study registry points to them."""
