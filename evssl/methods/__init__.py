"""evssl.methods."""
