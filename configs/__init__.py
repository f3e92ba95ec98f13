"""ml_collections config files, one per stage: `python -m r1jax.main --config=configs/<stage>.py`."""
