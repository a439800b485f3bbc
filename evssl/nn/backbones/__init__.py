"""evssl.nn.backbones."""
