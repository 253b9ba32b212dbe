"""The dataset layer: the paper's task registry, Minari loading, and home-made D4RL-equivalent datasets."""
