"""r1jax: the DeepSeek-R1 training pipeline in JAX/Flax."""

__version__ = "0.1.0"
