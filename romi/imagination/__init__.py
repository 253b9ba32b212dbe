"""Imagination: pure batched rollouts, the model buffer, and the mixed sampler."""
