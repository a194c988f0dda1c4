"""The ReST^EM algorithm: the loop, its E-step, filter, M-step, evaluation and reports.

Importing this package imports no jax: `metrics` is shared with the reward CLI.
"""
