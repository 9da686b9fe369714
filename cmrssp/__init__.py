"""cmrssp: self-supervised pretraining for CMR cine segmentation, in plain PyTorch.

A re-implementation and extension of de Mooij, Pluim & Scannell (2024), "Self-supervised
pretraining for cardiovascular magnetic resonance cine segmentation" (arXiv 2409.18100).
"""

__version__ = "0.1.0"
