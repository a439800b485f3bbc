"""Method-specific view samplers (multi-modal or multi-view samples built from one store), one module per method."""
