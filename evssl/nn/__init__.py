"""evssl.nn."""
