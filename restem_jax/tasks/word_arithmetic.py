"""Word arithmetic: one-step add / subtract word problems for small real models.

The real-model example (gin_configs/smollm2_135m_restem.gin) needs a task that
SmolLM2-135M-Instruct solves *sometimes*: on two-digit GSM8K-style problems
it is near 0%, on these (a in [2, 20], b in [2, 9]) greedy decoding solves
about a quarter and four samples at T=0.7 solve about half. ReST^EM lives in
that gap: sampling finds right operations and sums the greedy answer misses,
and training on them teaches the model its own best procedure.

  question:  "Mia has 14 marbles. Mia gives away 8 marbles. How many marbles does Mia have now?"
  reference: "14 - 8 = 6. The answer is 6."    (labelled split only)

Records follow GSM8K's layout ("answer" ends in "#### N"), so the GSM8K reward
(last "The answer is N", else the last number) and its sandboxed batch scorer
apply unchanged. Prompts use the model's chat template when its vocabulary has
one (a short system message asks for one line), else "Question: ...\nAnswer:".

Splits: "labelled" (small, with references), "train" (the answer-only pool) and
"test". The test split shares no (operation, a, b) with the others, so a gain
on test is a gain in procedure, not memorised sums.
"""

from __future__ import annotations

import functools
import random
from typing import Sequence

import seqio

from restem_jax.tasks import base, common
from restem_jax.tasks.gsm8k import extract_answer

SYSTEM = "Solve the math word problem in one line, ending with: The answer is N."
NAMES = ("Tom", "Anna", "Sam", "Lily", "Ben", "Mia", "Leo", "Emma")
ITEMS = ("apples", "books", "coins", "stickers", "marbles", "pencils", "cookies", "cards")
TEMPLATES = {
    "+": ("{n} has {a} {item}. {n} gets {b} more {item}. How many {item} does {n} have now?",
          "{n} had {a} {item} and found {b} more. How many {item} does {n} have?"),
    "-": ("{n} has {a} {item}. {n} gives away {b} {item}. How many {item} does {n} have now?",
          "{n} had {a} {item} and lost {b} of them. How many {item} are left?"),
}


def triples(low_a: int, high_a: int, low_b: int, high_b: int) -> list[tuple[str, int, int]]:
  """Every (op, a, b) in range; subtraction needs a > b (answers stay positive)."""
  return [(op, a, b) for op in ("+", "-") for a in range(low_a, high_a + 1)
          for b in range(low_b, high_b + 1) if op == "+" or a > b]


def answer_of(op: str, a: int, b: int) -> int:
  return a + b if op == "+" else a - b


def format_question(rng: random.Random, op: str, a: int, b: int) -> str:
  template = rng.choice(TEMPLATES[op])
  return template.format(n=rng.choice(NAMES), item=rng.choice(ITEMS), a=a, b=b)


def format_reference(op: str, a: int, b: int) -> str:
  n = answer_of(op, a, b)
  return f"{a} {op} {b} = {n}. The answer is {n}."


def format_prompt(vocabulary: seqio.Vocabulary, question: str, system: str = SYSTEM) -> str:
  """The model's chat turn when it has a template, else a plain Q/A prompt."""
  if getattr(vocabulary, "chat_template", None):
    return vocabulary.apply_chat_template([{"role": "system", "content": system},
                                           {"role": "user", "content": question}])
  return f"Question: {question}\nAnswer:"


@functools.lru_cache(maxsize=8)
def generate(seed: int, num_labelled: int, num_train: int, num_test: int,
             test_fraction: float, ranges: tuple[int, int, int, int]
             ) -> dict[str, tuple[tuple[str, str, int, int], ...]]:
  """(question, op, a, b) per split: test triples are held out of labelled and train."""
  rng = random.Random(f"word_arithmetic/{seed}/{ranges}")
  pool = triples(*ranges)
  rng.shuffle(pool)
  cut = max(1, int(len(pool) * test_fraction))
  by_split = {"test": pool[:cut], "labelled": pool[cut:], "train": pool[cut:]}
  sizes = {"test": num_test, "labelled": num_labelled, "train": num_train}
  seen: set[str] = set()
  out = {}
  for split in ("test", "labelled", "train"):
    rows = []
    capacity = sum(len(TEMPLATES[op]) for op, _, _ in by_split[split]) * len(NAMES) * len(ITEMS)
    if sizes[split] > capacity // 2:
      raise ValueError(f"word_arithmetic: {sizes[split]} {split} problems is too many for "
                       f"{len(by_split[split])} (op, a, b) triples; widen the number ranges.")
    while len(rows) < sizes[split]:
      op, a, b = rng.choice(by_split[split])
      question = format_question(rng, op, a, b)
      if question not in seen:  # Labelled and train never share a question.
        seen.add(question)
        rows.append((question, op, a, b))
    out[split] = tuple(rows)
  return out


def _problems(rows: Sequence[tuple[str, str, int, int]], split: str,
              vocabulary: seqio.Vocabulary) -> list[base.Problem]:
  return [base.Problem(
      id=f"{split}-{i}", prompt=format_prompt(vocabulary, question),
      record={"question": question, "answer": f"#### {answer_of(op, a, b)}"},
      reference=format_reference(op, a, b) if split == "labelled" else None)
      for i, (question, op, a, b) in enumerate(rows)]


def make_word_arithmetic_task(vocabulary: seqio.Vocabulary | None = None,
                              num_labelled: int = 64, num_train: int = 512,
                              num_test: int = 256, low_a: int = 2, high_a: int = 20,
                              low_b: int = 2, high_b: int = 9, test_fraction: float = 0.3,
                              seed: int = 0, name: str = "word_arithmetic") -> base.TaskSpec:
  """Registers the task as `name` for `vocabulary`'s prompt format; returns its TaskSpec."""
  if not (0 < low_a <= high_a and 0 < low_b <= high_b):
    raise ValueError(f"word_arithmetic: ranges a=[{low_a}, {high_a}], b=[{low_b}, {high_b}] "
                     "must be positive and non-empty.")
  if not 0 < test_fraction < 1:
    raise ValueError(f"word_arithmetic: test_fraction={test_fraction} must be in (0, 1).")
  vocabulary = vocabulary if vocabulary is not None else seqio.ByteVocabulary()
  args = (seed, num_labelled, num_train, num_test, test_fraction, (low_a, high_a, low_b, high_b))
  loaders = {split: (lambda s=split: _problems(generate(*args)[s], s, vocabulary))
             for split in ("labelled", "train", "test")}
  # "\n" ends the one-line answer the system message asks for; EOS ends a chat turn.
  return common.register_benchmark(name, "gsm8k", loaders, ("\n",), vocabulary, extract_answer)
