"""evssl.losses."""
