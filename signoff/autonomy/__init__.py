"""Earned autonomy: the live governance state, its evidence, drift checks and the model lifecycle.

`models` and `evidence` are pure (safe inside workflow code); `drift` and `retrain` do numeric
work and run in activities only.
"""
