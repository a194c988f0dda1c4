"""restem_jax: ReST^EM self-training (arXiv 2312.06585) in JAX."""


def __getattr__(name):
  # Lazy: importing the package must not import jax/tensorflow (reward
  # workers import it); `restem_jax.load_model` pulls them in on first use.
  if name == "load_model":
    from restem_jax.checkpoint_io.loading import load_model  # pylint: disable=import-outside-toplevel
    return load_model
  raise AttributeError(f"module 'restem_jax' has no attribute {name!r}")
