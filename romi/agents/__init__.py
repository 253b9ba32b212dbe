"""Offline learners: BCQ and CQL, each readable top to bottom, sharing the small nets of `nets.py`."""
