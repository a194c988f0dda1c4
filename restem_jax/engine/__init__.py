"""The engine layer: model, parameters, partitioning, sampler, trainer, and the Engine over them.

Nothing here imports gin: configuration objects are built at the entry points
(`restem_jax.configurables`) and passed down.
"""
