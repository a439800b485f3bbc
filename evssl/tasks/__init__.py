"""evssl.tasks."""
