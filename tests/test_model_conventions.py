"""A real model's conventions through the loop's own path: tiny random Llama and Gemma.

Each checkpoint is written in the Hugging Face layout with its own tokenizer
(Llama's adds BOS through its post-processor; Gemma's through
`add_bos_token`) and two EOS ids. The whole loop runs on it (base conversion,
evaluation, E-step, M-step), and every call into the engine is watched:
every prompt starts with exactly one BOS, also when the prompt text already
carries one (as a chat template writes it); generation ends at each EOS id;
M-step rows are BOS + prompt + completion + EOS; and each E-step sample's
log-prob is what transformers gives the same tokens.
"""

import collections
import functools
import glob
import os
import tempfile

import numpy as np
from absl.testing import absltest

from restem_jax import convert
from restem_jax.checkpoint_io import hf_config, vocabularies
from restem_jax.checkpoint_io.loading import load_model
from restem_jax.engine import partitioning
from restem_jax.engine.engine import Engine
from restem_jax.engine.sampler import Samples, Stopping
from restem_jax.engine.trainer import OptimizerConfig
from restem_jax.restem import e_step, loop
from restem_jax.restem.evaluation import EvalConfig
from restem_jax.restem.finetune import FinetuneConfig
from restem_jax.tasks import base
from tests.hf_checkpoints import make_checkpoint, write_tokenizer

NEW_TOKENS = 8
RESTEM = loop.RestemConfig(iterations=1, num_samples=4, temperature=0.7, top_k=40,
                           max_new_tokens=NEW_TOKENS, val_size=4, shard_size=8,
                           max_prompt_len=32, sample_batch=8)
EVAL = EvalConfig(pass_k_samples=2, pass_ks=(1, 2), maj_ks=(2,), train_eval_size=4,
                  train_eval_samples=2, max_new_tokens=NEW_TOKENS)


def _problems(split, count, bos_text):
  # Half the prompts carry the BOS text already, as a chat template renders it.
  return [base.Problem(id=f"{split}-{i}", prompt=(bos_text if i % 2 else "") + f"{i}+{i % 7}=",
                       record={}) for i in range(count)]


def _task(name, vocabulary, bos_text):
  splits = {"train": _problems("train", 16, bos_text), "test": _problems("test", 6, bos_text)}
  return base.register(base.TaskSpec(
      name=name, load_split=splits.__getitem__, splits=tuple(splits),
      reward=lambda record, completion: float(len(completion) % 2 == 0),
      extract_answer=lambda completion: completion, stop_strings=(), vocabulary=vocabulary))


def _two_eos_ids(hf_dir, bos):
  """The two ids the model samples most often: they will end its turns, so both get hit."""
  model = load_model(hf_dir)
  prompts = [model.engine.encode_prompt(p.prompt) for p in _problems("probe", 8, "")]
  rows = model.generate(prompts, max_new_tokens=NEW_TOKENS, temperature=1.0, num_samples=4,
                        stop_at_eos=False)
  counts = collections.Counter(t for row in rows for sample in row for t in sample if t != bos)
  (first, _), (second, _) = counts.most_common(2)
  return second, first


class ModelConventionsTest(absltest.TestCase):

  def _run(self, family, bos_text):
    tmp = tempfile.mkdtemp()
    hf_dir = os.path.join(tmp, "hf")
    torch_model = make_checkpoint(family, hf_dir)
    bos = write_tokenizer(family, hf_dir)["bos"]
    eos_ids = _two_eos_ids(hf_dir, bos)
    write_tokenizer(family, hf_dir, eos_ids=eos_ids)
    cfg = hf_config.model_config_from_hf(hf_config.read_config_json(hf_dir))
    vocab = vocabularies.vocabulary_for(hf_dir, cfg.vocab_size)
    self.assertEqual((vocab.bos_id, vocab.add_bos, tuple(vocab.eos_ids)), (bos, True, eos_ids))
    engine = Engine(cfg, vocab, partitioning.make_mesh(), max_prompt_len=32, sample_batch=8)
    task = _task(f"conventions_{family}", vocab, bos_text)

    sampled, generated, batches = [], [], []
    stream, engine_stream = engine.sampler.stream, engine.stream

    def collect(rows, n):
      rows = dict(rows)
      return Samples(*(np.stack([rows[i][k] for i in range(n)]) for k in range(3)))

    def watch_stream(params, prompts, config, seed=0, prompt_ids=None, stopping=Stopping(),
                     layout=None):
      rows = list(stream(params, prompts, config, seed, prompt_ids, stopping, layout))
      sampled.append((params, prompts, config, seed, prompt_ids, stopping,
                      collect(rows, len(prompts))))
      yield from rows

    def watch_engine_stream(params, prompts, config, *args, **kwargs):
      rows = list(engine_stream(params, prompts, config, *args, **kwargs))
      generated.append((prompts, config, [row for _, row in sorted(rows, key=lambda r: r[0])]))
      yield from rows

    engine.sampler.stream, engine.stream = watch_stream, watch_engine_stream
    optimizer = OptimizerConfig(name="adamw", learning_rate=1e-3)
    trainer = engine.trainer(optimizer)
    step = trainer.step
    trainer.step = lambda state, batch: (batches.append(batch), step(state, batch))[1]

    workdir = os.path.join(tmp, "run")
    loop.run(workdir, engine, task, RESTEM,
             FinetuneConfig(batch_size=4, max_steps=2, eval_every=2, seq_len=48), optimizer,
             EVAL, make_base=functools.partial(convert.base_from_pretrained, source=hf_dir))
    engine.sampler.stream = stream

    # Every prompt of every sampler call (evaluation and E-step): exactly one BOS, first.
    self.assertNotEmpty(sampled)
    for _, prompts, *_ in sampled:
      for prompt in prompts:
        self.assertEqual((prompt[0], prompt.count(bos)), (bos, 1), prompt)

    # Every M-step row: BOS + prompt + completion + the first EOS id.
    self.assertLen(batches, 2)
    for batch in batches:
      for tokens, valid, target in zip(batch["tokens"], batch["valid"], batch["target_mask"]):
        row = tokens[valid].tolist()
        self.assertEqual((row[0], row.count(bos), row[-1]), (bos, 1, eos_ids[0]))
        self.assertEqual(target[len(row) - 1], 1)

    # Generation ends at each EOS id: rerun without EOS and find it where the row stopped.
    stopped_on = set()
    for params, prompts, config, seed, ids, stopping, out in sampled:
      self.assertEqual(stopping.eos_ids, eos_ids)
      free = collect(stream(params, prompts, config, seed, ids, Stopping()), len(prompts))
      for row_free, row_tokens, row_lengths in zip(free.tokens, out.tokens, out.lengths):
        for f, t, n in zip(row_free, row_tokens, row_lengths):
          self.assertEqual(t[:n].tolist(), f[:n].tolist())
          self.assertFalse(set(f[:n].tolist()) & set(eos_ids))
          if n < config.max_new_tokens:
            self.assertIn(int(f[n]), eos_ids)
            stopped_on.add(int(f[n]))
    self.assertEqual(stopped_on, set(eos_ids))

    # The E-step's summed log-prob of a sample is transformers' log-prob of its tokens.
    e_calls = [(p, out) for p, config, out in generated if config.num_samples == 4]
    completions = [(engine.encode_prompt(prompt), c) for prompts, out in e_calls
                   for prompt, row in zip(prompts, out) for c in row]
    samples = [s for path in sorted(glob.glob(f"{workdir}/iter_1/samples/*.jsonl"))
               for s in e_step.read_samples(path)]
    self.assertLen(samples, len(completions))
    self.assertLen(samples, 12 * RESTEM.num_samples)  # 16 train problems minus 4 for D_val.
    import torch  # pylint: disable=import-outside-toplevel
    for sample_record, (prompt, completion) in zip(samples, completions):
      self.assertEqual(sample_record.completion, completion.text)
      ids = prompt + list(completion.tokens)
      with torch.no_grad():
        logits = torch_model(torch.as_tensor([ids])).logits[0].double()
      logp = torch.log_softmax(logits, -1).numpy()
      expected = sum(logp[len(prompt) - 1 + i, t] for i, t in enumerate(completion.tokens))
      self.assertAlmostEqual(sample_record.logprob, expected, delta=1e-4)

  def test_llama(self):
    self._run("llama3", "<s>")

  def test_gemma(self):
    self._run("gemma", "<bos>")


if __name__ == "__main__":
  absltest.main()
