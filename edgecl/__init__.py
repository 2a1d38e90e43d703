"""edgecl: on-device continual learning for YOLO detectors."""
__version__ = "0.1.0"
