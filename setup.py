"""r1jax: a JAX/TPU-native research codebase for the DeepSeek-R1 training pipeline."""
from setuptools import find_packages, setup

setup(
    name="r1jax",
    version="0.1.0",
    description="DeepSeek-R1 (R1-Zero GRPO, cold-start SFT, RL, distillation, evaluation) in JAX/Flax.",
    packages=find_packages(include=["r1jax", "r1jax.*"]),
    # The bundled benchmark files (r1jax.data.benchmarks.bundled_dir), so installs work offline.
    package_data={"r1jax": ["data/files/*/*", "data/files/*.md"]},
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.7.2,<0.11",
        "flax>=0.11,<0.13",
        "optax>=0.2.5,<0.3",
        "orbax-checkpoint>=0.11.20,<0.13",
        "tensorflow-datasets>=4.9.9,<4.10",
        "array-record>=0.8,<0.9",
        "grain>=0.2.12,<0.3",
        "sentencepiece>=0.2,<0.3",
        "ml-collections>=1.0,<2",
        "absl-py>=2.1,<3",
        "tqdm>=4.66,<5",
        "tensorboardX>=2.6,<3",
        "math-verify>=0.8,<0.10",
        "numpy>=1.26,<3",
        "safetensors>=0.4,<1",
        "tokenizers>=0.20,<1",
        "gguf>=0.16,<0.20",
        "matplotlib>=3.8,<4",
        "jinja2>=3.1,<4",  # chat templates of instruct models
    ],
    extras_require={
        # ipython: the notebooks display their report with IPython.display, as Jupyter does.
        "test": ["pytest>=8,<10", "pytest-xdist>=3.5,<4", "ipython>=8.20,<10",
                 "hypothesis>=6.100,<7"],
        # Reference implementation for the weight-parity tests (CPU build of torch).
        "parity": ["torch==2.13.0", "transformers>=4.50,<6"],
    },
)
