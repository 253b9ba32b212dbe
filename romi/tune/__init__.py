"""The Ray layer: parallel imagination actors, the Tune trainable, sweeps of the paper's tables."""
