"""Loads a HF directory onto a 4-device (fsdp=2, tensor=2) mesh; saves logits and shard shapes.

Run by test_convert_hf in a subprocess with --xla_force_host_platform_device_count=4.
"""

import os
import sys

import numpy as np

from restem_jax import load_model
from restem_jax.engine import partitioning


def main(tmp: str) -> None:
  mesh = partitioning.make_mesh(partitioning.MeshConfig(data=1, fsdp=2, tensor=2))
  model = load_model(os.path.join(tmp, "hf"), mesh=mesh, tokenizer=False)
  q = model.params["layers"]["attn"]["q"]
  tokens = np.load(os.path.join(tmp, "tokens.npy"))
  np.savez(os.path.join(tmp, "result.npz"), logits=model.logits(tokens),
           q_shard_shape=np.asarray(q.addressable_shards[0].data.shape),
           q_num_shards=len({str(s.index) for s in q.addressable_shards}))


if __name__ == "__main__":
  main(sys.argv[1])
