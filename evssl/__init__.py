"""evssl: self-supervised pre-training, distillation and adaptation on event-camera data (PyTorch Lightning)."""

__version__ = "0.1.0"
