"""netgeom."""
