"""Engine benchmark: sampling and training throughput on CPU, against HF transformers.

Run by hand (not part of the test suite), e.g.

  python benchmarks/bench_engine.py --prompts=4 --samples=8,16

It builds one Llama-architecture decoder (sequential block, RMSNorm, SwiGLU,
RoPE, tied embeddings) of about 38M parameters in restem_jax and in Hugging
Face `LlamaForCausalLM` with the *same* weights, checks that both give the
same greedy tokens, then times in one process:

  (a) our `Sampler` (EOS disabled, so every row generates all new tokens),
  (b) HF `generate(do_sample=True, top_k=40, temperature=0.7,
      num_return_sequences=N, min_new_tokens=G, max_new_tokens=G)`,
  (c) our reward-weighted-NLL train step (Adafactor),
  (d) the machine's fp32 matmul peak (2048^2 jnp.dot, best of several),
      measured before and after the runs because host load moves it.

Throughputs are also given as achieved model FLOP/s / peak. Extra packages:
`pip install torch==2.13.0 transformers` (the `bench` extra).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import sys
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp
import numpy as np

from restem_jax.engine import params as P
from restem_jax.engine import partitioning
from restem_jax.engine.config import ModelConfig
from restem_jax.engine.model import forward
from restem_jax.engine.sampler import Sampler, SamplingConfig
from restem_jax.engine.trainer import OptimizerConfig, Trainer


def parse_args():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--prompts", type=int, default=4, help="prompts per batch")
  p.add_argument("--samples", default="8,16", help="comma-separated samples per prompt")
  p.add_argument("--kv_heads", default="1", help="comma-separated kv-head counts (1=MQA, 8=MHA)")
  p.add_argument("--prompt_len", type=int, default=500, help="mean prompt length (tokens)")
  p.add_argument("--new_tokens", type=int, default=128)
  p.add_argument("--vocab", type=int, default=32000)
  p.add_argument("--embed", type=int, default=512)
  p.add_argument("--layers", type=int, default=8)
  p.add_argument("--heads", type=int, default=8)
  p.add_argument("--head_dim", type=int, default=64)
  p.add_argument("--mlp", type=int, default=1408)
  p.add_argument("--train_batch", type=int, default=8)
  p.add_argument("--train_len", type=int, default=640)
  p.add_argument("--repeats", type=int, default=2, help="timed repeats (best is reported)")
  p.add_argument("--skip_hf", action="store_true")
  p.add_argument("--skip_train", action="store_true")
  p.add_argument("--json", default="", help="also write results to this JSON file")
  return p.parse_args()


def matmul_peak(n: int = 2048, repeats: int = 7) -> float:
  """Best fp32 GFLOP/s of an n x n jnp.dot."""
  a = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.PRNGKey(2), (n, n), jnp.float32)
  dot = jax.jit(jnp.dot)
  dot(a, b).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    t = time.perf_counter()
    dot(a, b).block_until_ready()
    best = min(best, time.perf_counter() - t)
  return 2 * n ** 3 / best / 1e9


def torch_matmul_peak(n: int = 2048, repeats: int = 7) -> float:
  import torch
  a, b = torch.randn(n, n), torch.randn(n, n)
  torch.mm(a, b)
  best = float("inf")
  for _ in range(repeats):
    t = time.perf_counter()
    torch.mm(a, b)
    best = min(best, time.perf_counter() - t)
  return 2 * n ** 3 / best / 1e9


def make_prompts(rng: np.random.Generator, count: int, mean_len: int, vocab: int) -> list[list[int]]:
  """Few-shot-sized prompts of slightly different lengths (so padding is exercised)."""
  lens = [mean_len + int(d) for d in rng.integers(-12, 12, size=count)]
  return [rng.integers(3, vocab, size=n).tolist() for n in lens]


def attention_flops(cfg: ModelConfig, context: float) -> float:
  """QK^T and PV multiply-adds of one query token over `context` keys, all layers."""
  return 4.0 * cfg.num_layers * cfg.num_heads * cfg.head_dim * context


# --------------------------------------------------------------------------- HF


def hf_model(cfg: ModelConfig, params):
  """LlamaForCausalLM with exactly our weights."""
  import torch
  from transformers import LlamaConfig, LlamaForCausalLM
  hc = LlamaConfig(
      vocab_size=cfg.vocab_size, hidden_size=cfg.embed_dim, intermediate_size=cfg.mlp_dim,
      num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
      num_key_value_heads=cfg.num_kv_heads, head_dim=cfg.head_dim, rms_norm_eps=cfg.norm_eps,
      rope_theta=cfg.rope_theta, tie_word_embeddings=True, max_position_embeddings=2048,
      attention_bias=False, mlp_bias=False, hidden_act="silu", pad_token_id=0,
      bos_token_id=1, eos_token_id=None, torch_dtype="float32")
  model = LlamaForCausalLM(hc).eval()
  p = jax.tree.map(lambda x: np.asarray(x, np.float32), params)
  e, h, k, d = cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
  t = lambda x: torch.from_numpy(np.array(x, np.float32, copy=True))
  with torch.no_grad():
    model.model.embed_tokens.weight.copy_(t(p["embedding"]))
    model.model.norm.weight.copy_(t(p["final_norm"]["scale"]))
    lp = p["layers"]
    for i, layer in enumerate(model.model.layers):
      layer.self_attn.q_proj.weight.copy_(t(lp["attn"]["q"][i].reshape(e, h * d).T))
      layer.self_attn.k_proj.weight.copy_(t(lp["attn"]["k"][i].reshape(e, k * d).T))
      layer.self_attn.v_proj.weight.copy_(t(lp["attn"]["v"][i].reshape(e, k * d).T))
      layer.self_attn.o_proj.weight.copy_(t(lp["attn"]["o"][i].reshape(h * d, e).T))
      layer.mlp.gate_proj.weight.copy_(t(lp["mlp"]["gate"][i].T))
      layer.mlp.up_proj.weight.copy_(t(lp["mlp"]["up"][i].T))
      layer.mlp.down_proj.weight.copy_(t(lp["mlp"]["down"][i].T))
      layer.input_layernorm.weight.copy_(t(lp["pre_attn_norm"]["scale"][i]))
      layer.post_attention_layernorm.weight.copy_(t(lp["pre_mlp_norm"]["scale"][i]))
  model.tie_weights()
  assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
  return model


def hf_batch(prompts: list[list[int]]):
  """Left-padded input_ids and attention_mask, as a tokenizer with padding_side='left' gives."""
  import torch
  length = max(len(p) for p in prompts)
  ids = np.zeros((len(prompts), length), np.int64)
  mask = np.zeros((len(prompts), length), np.int64)
  for r, p in enumerate(prompts):
    ids[r, length - len(p):] = p
    mask[r, length - len(p):] = 1
  return torch.from_numpy(ids), torch.from_numpy(mask)


def hf_generate(model, prompts, n, g, sample=True, seed=0):
  import torch
  ids, mask = hf_batch(prompts)
  torch.manual_seed(seed)
  kw = dict(do_sample=True, top_k=40, temperature=0.7, top_p=1.0) if sample else dict(do_sample=False)
  with torch.inference_mode():
    out = model.generate(input_ids=ids, attention_mask=mask, num_return_sequences=n,
                         max_new_tokens=g, min_new_tokens=g, eos_token_id=None, pad_token_id=0,
                         use_cache=True, **kw)
  return out[:, ids.shape[1]:]


# --------------------------------------------------------------------------- main


def timed(fn, repeats):
  """(best wall seconds, process CPU seconds of that run) over `repeats` runs."""
  best, cpu = float("inf"), 0.0
  for _ in range(repeats):
    t, c = time.perf_counter(), time.process_time()
    fn()
    wall = time.perf_counter() - t
    if wall < best:
      best, cpu = wall, time.process_time() - c
  return best, cpu


def main():
  args = parse_args()
  samples_list = [int(s) for s in args.samples.split(",")]
  kv_list = [int(s) for s in args.kv_heads.split(",")]
  results = dict(machine=dict(platform=platform.platform(), cpus=os.cpu_count(),
                              jax=jax.__version__, backend=jax.default_backend()),
                 args=vars(args), runs=[])
  if not args.skip_hf:
    import torch
    import transformers
    torch.set_num_threads(os.cpu_count())
    results["machine"].update(torch=torch.__version__, transformers=transformers.__version__,
                              torch_threads=torch.get_num_threads())
  peak0 = matmul_peak()
  results["peak_start_gflops"] = peak0
  print(f"fp32 matmul peak (jnp.dot 2048^2, best of 7): {peak0:.1f} GFLOP/s", flush=True)
  if not args.skip_hf:
    results["torch_peak_gflops"] = torch_matmul_peak()
    print(f"torch.mm 2048^2 peak: {results['torch_peak_gflops']:.1f} GFLOP/s", flush=True)

  mesh = partitioning.make_mesh()
  rng = np.random.default_rng(0)
  prompts = make_prompts(rng, args.prompts, args.prompt_len, args.vocab)
  prompt_tokens = sum(len(p) for p in prompts)
  g = args.new_tokens
  for kv in kv_list:
    cfg = ModelConfig(vocab_size=args.vocab, embed_dim=args.embed, num_layers=args.layers,
                      num_heads=args.heads, num_kv_heads=kv, head_dim=args.head_dim,
                      mlp_dim=args.mlp, parallel_block=False, tie_embeddings=True)
    n_params = cfg.num_params
    print(f"\n== kv_heads={kv}: {n_params / 1e6:.1f}M params "
          f"(L={cfg.num_layers} E={cfg.embed_dim} H={cfg.num_heads} D={cfg.head_dim} "
          f"M={cfg.mlp_dim} V={cfg.vocab_size})", flush=True)
    sampler = Sampler(cfg, mesh, max_prompt_len=max(512, max(map(len, prompts))),
                      max_batch=max(16, args.prompts))
    params = P.init_params(sampler.model, jax.random.PRNGKey(0), mesh, partitioning.DEFAULT_RULES)
    assert P.count(params) == n_params

    hf = None
    if not args.skip_hf:
      hf = hf_model(cfg, params)
      # Sanity: same logits on a prompt and same greedy continuation.
      import torch
      probe = prompts[0][:64]
      ours = np.asarray(forward(sampler.model, params, jnp.asarray([probe], jnp.int32)))[0]
      with torch.no_grad():
        theirs = hf(torch.tensor([probe])).logits[0].numpy()
      max_diff = float(np.abs(ours - theirs).max())
      greedy = sampler.sample(params, prompts[:2], SamplingConfig(
          num_samples=1, temperature=0.0, max_new_tokens=8)).tokens[:, 0]
      hf_greedy = hf_generate(hf, prompts[:2], 1, 8, sample=False).numpy()
      agree = bool((greedy == hf_greedy).all())
      print(f"sanity: max |logit diff| = {max_diff:.2e}; greedy 8 tokens agree: {agree}", flush=True)
      if not agree:
        print("  ours:", greedy.tolist(), "\n  hf:  ", hf_greedy.tolist())
      results["runs"].append(dict(kind="sanity", kv_heads=kv, max_logit_diff=max_diff,
                                  greedy_agree=agree))

    for n in samples_list:
      config = SamplingConfig(num_samples=n, temperature=0.7, top_k=40, max_new_tokens=g)
      t0 = time.perf_counter()
      out = sampler.sample(params, prompts, config, seed=0)
      first_call = time.perf_counter() - t0
      assert out.tokens.shape == (args.prompts, n, g) and (out.lengths == g).all()
      peak = matmul_peak()  # right before the timed run: host load moves it
      ours_s, ours_cpu = timed(lambda: sampler.sample(params, prompts, config, seed=1), args.repeats)
      gen = args.prompts * n * g
      # Useful model FLOPs: prompt prefilled once, plus every generated token
      # (linear layers 2*params per token, attention over its context).
      avg_ctx = prompt_tokens / args.prompts + g / 2
      flops = (2 * n_params * (prompt_tokens + gen) + attention_flops(cfg, avg_ctx) * gen
               + attention_flops(cfg, avg_ctx / 2) * prompt_tokens)
      row = dict(kind="sample", kv_heads=kv, prompts=args.prompts, samples=n, new_tokens=g,
                 prompt_tokens=prompt_tokens, peak_gflops=peak, ours_s=ours_s, ours_cpu_s=ours_cpu,
                 ours_compile_s=first_call - ours_s, ours_tok_s=gen / ours_s,
                 ours_mfu=flops / ours_s / (peak * 1e9))
      print(f"ours  N={n:3d}: {ours_s:7.2f} s (cpu {ours_cpu:6.1f} s)  {gen / ours_s:8.1f} tok/s  "
            f"MFU {row['ours_mfu']:.1%} of {peak:.0f} GFLOP/s  "
            f"(compile+first call {first_call:.1f} s)", flush=True)
      if hf is not None:
        hf_generate(hf, prompts[:1], 1, 4)  # warm up
        hf_s, hf_cpu = timed(lambda: hf_generate(hf, prompts, n, g), 1)
        hf_peak = matmul_peak()
        # HF prefills each prompt once per sample (num_return_sequences expands
        # the input), so its executed FLOPs are higher; MFU uses the same useful FLOPs.
        row.update(hf_s=hf_s, hf_cpu_s=hf_cpu, hf_peak_after_gflops=hf_peak, hf_tok_s=gen / hf_s,
                   hf_mfu=flops / hf_s / (peak * 1e9), ratio=hf_s / ours_s,
                   cpu_ratio=hf_cpu / ours_cpu)
        print(f"HF    N={n:3d}: {hf_s:7.2f} s (cpu {hf_cpu:6.1f} s)  {gen / hf_s:8.1f} tok/s  "
              f"MFU {row['hf_mfu']:.1%}  -> ours/HF = {row['ratio']:.2f}x wall, "
              f"{row['cpu_ratio']:.2f}x cpu time (peak after: {hf_peak:.0f} GFLOP/s)", flush=True)
      results["runs"].append(row)

    if not args.skip_train and kv == kv_list[0]:
      trainer = Trainer(cfg, OptimizerConfig(name="adafactor"), mesh)
      state = trainer.init_state(params)
      b, t = args.train_batch, args.train_len
      batch = dict(tokens=rng.integers(3, args.vocab, size=(b, t)).astype(np.int32),
                   target_mask=np.ones((b, t), np.float32), valid=np.ones((b, t), bool),
                   reward=np.ones((b,), np.float32))
      t0 = time.perf_counter()
      state, _ = trainer.step(state, batch)
      first_call = time.perf_counter() - t0

      def one():
        nonlocal state
        state, metrics = trainer.step(state, batch)  # float() in step syncs
      peak = matmul_peak()
      train_s, train_cpu = timed(one, max(args.repeats, 3))
      tokens = b * t
      flops = 6 * n_params * tokens + 3 * attention_flops(cfg, t / 2) * tokens
      row = dict(kind="train", kv_heads=kv, batch=b, length=t, step_s=train_s, cpu_s=train_cpu,
                 compile_s=first_call - train_s, tok_s=tokens / train_s, peak_gflops=peak,
                 mfu=flops / train_s / (peak * 1e9))
      print(f"train {b}x{t}: {train_s:.2f} s/step (cpu {train_cpu:.1f} s)  {tokens / train_s:.0f} tok/s  "
            f"MFU {row['mfu']:.1%} of {peak:.0f} GFLOP/s"
            f"  (compile+first step {first_call:.1f} s)", flush=True)
      results["runs"].append(row)
    del hf

  peak1 = matmul_peak()
  results["peak_end_gflops"] = peak1
  print(f"\nfp32 matmul peak at end: {peak1:.1f} GFLOP/s (start {peak0:.1f}; each MFU uses the "
        "peak measured just before its timed run)")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(results, f, indent=1)


if __name__ == "__main__":
  main()
