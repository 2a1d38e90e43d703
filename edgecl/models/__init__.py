"""Inference backends, export and the versioned model registry."""
