"""Config overrides for tests that run whole trials: paper-shaped but tiny, so a trial takes seconds."""

TINY_TRIAL_OVERRIDES = {
    "gradient_steps": 100,
    "eval": {"every": 50, "episodes": 1, "last_k": 1},
    "dynamics": {"max_epochs": 1, "batches_per_epoch": 5, "hidden_dim": 32},
    "rollout_policy": {"iterations": 50},
    "imagination": {"buffer_size": 2000, "shard_size": 1000},
    "bcq": {"actor_hidden": [32, 32], "critic_hidden": [32, 32], "vae": {"hidden_dim": 32}},
}
