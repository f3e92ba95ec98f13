"""Models: the decoder (`transformer`), shapes (`config`), and `from_pretrained` for r1jax run
directories, Hugging Face checkpoints and GGUF files."""


def __getattr__(name):
  # Lazy: importing r1jax.models.config must not pull in the weight importers.
  if name in ("from_pretrained", "Pretrained"):
    from r1jax.models import loading  # registers r1jax run directories
    return getattr(loading.pretrained, name)
  raise AttributeError(f"module 'r1jax.models' has no attribute {name!r}")
