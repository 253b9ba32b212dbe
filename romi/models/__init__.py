"""Learned models: the dynamics ensemble (one class, two directions) and the rollout policies."""
