"""evssl.data."""
