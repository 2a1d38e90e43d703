"""Inference backends, export, the versioned model registry and the class registry."""
