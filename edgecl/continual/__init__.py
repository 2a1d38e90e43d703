"""Continual-learning algorithms: replay memory, strategies, fine-tuning, rounds, metrics."""
