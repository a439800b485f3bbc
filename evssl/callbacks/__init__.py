"""evssl.callbacks."""
