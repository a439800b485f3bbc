"""evssl.events.io."""
