"""The Ray Tune layer: the trainable, sweeps of the paper's tables, their plan, preflight and cluster checks
(the rollout actors live with the imagination they run: `romi.imagination.workers`)."""
