"""Chat templates rendered exactly as Hugging Face transformers renders them.

A model was trained on prompts transformers rendered, so ours must match it
byte for byte. transformers does not use Jinja's defaults: blocks are trimmed,
the `loopcontrols` extension allows `{% break %}` and `{% continue %}`, a
`{% generation %}` tag marks assistant text, `tojson` writes `<`, `&`, `'` and
non-ASCII characters as they are (Jinja's escapes them for HTML) and takes
`indent`, `separators` and `sort_keys`, and templates may call
`raise_exception`, `strftime_now`, `dict` and `namespace`. Its inputs are first
rebuilt from plain JSON types, message keys whose value is None are dropped, a
message's reasoning is offered as `reasoning_content` and `thinking` too, and
`continue_final_message` ends the prompt inside the last message.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
from typing import Any, Mapping, Sequence

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.parser
import jinja2.sandbox
import jinja2.utils
import numpy as np

__all__ = ["render"]

# The names a message's reasoning may come under; templates read the first.
_REASONING_KEYS = ("reasoning_content", "thinking", "reasoning")
# Appended to the message to continue, so that the render can be cut right after it.
_CONTINUE_TAG = "CONTINUE_FINAL_MESSAGE_TAG "


class _GenerationTag(jinja2.ext.Extension):
  """`{% generation %}...{% endgeneration %}`: renders its body unchanged.

  transformers records where the body lands to build assistant-token masks;
  the text is the same, and nothing here needs the mask.
  """

  tags = {"generation"}

  def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.CallBlock:
    lineno = next(parser.stream).lineno
    body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
    return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

  def _body(self, caller) -> str:
    return caller()


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False) -> str:
  # transformers' argument order: `x|tojson(4)` sets ensure_ascii, not indent. A plain str,
  # not Jinja's Markup, which would HTML-escape strings concatenated to it.
  return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                    sort_keys=sort_keys)


def _raise_exception(message: str):
  raise jinja2.exceptions.TemplateError(message)


def _strftime_now(fmt: str) -> str:
  return datetime.datetime.now().strftime(fmt)


class _Dict:
  """`dict` for templates: calling it and `dict.fromkeys`, no access to the type itself."""

  def __call__(self, *args, **kwargs) -> dict:
    return dict(*args, **kwargs)

  def fromkeys(self, *args, **kwargs) -> dict:
    return dict.fromkeys(*args, **kwargs)


class _Namespace(jinja2.utils.Namespace):
  """Jinja's `namespace`, refusing names that start with "_" (a way into Python internals)."""

  def __init__(*args, **kwargs):  # pylint: disable=no-method-argument
    self, attrs = args[0], dict(*args[1:], **kwargs)
    for name in attrs:
      _Namespace._check(name)
    jinja2.utils.Namespace.__init__(self, attrs)

  def __setitem__(self, name, value):
    _Namespace._check(name)
    jinja2.utils.Namespace.__setitem__(self, name, value)

  @staticmethod
  def _check(name):
    if isinstance(name, str) and name.startswith("_"):
      raise jinja2.exceptions.SecurityError(
          f"chat templates cannot set underscore-prefixed namespace attributes: {name!r}")


@functools.lru_cache(maxsize=16)
def _compile(template: str) -> jinja2.Template:
  env = jinja2.sandbox.ImmutableSandboxedEnvironment(
      trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, jinja2.ext.loopcontrols])
  env.filters["tojson"] = _tojson
  env.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now, dict=_Dict(),
                     namespace=_Namespace)
  return env.from_string(template)


def _plain(value: Any) -> Any:
  """`value` rebuilt from JSON types; anything else becomes "<TypeName>".

  The sandbox cannot vet the methods of arbitrary objects (arrays, images,
  str subclasses), so templates see none; they only test such keys' presence.
  """
  if value is None or type(value) in (str, int, float, bool):
    return value
  # Subclasses (enums, ...) lose their extra methods; str(enum) would give its name.
  for base, to_base in ((str, str.__str__), (int, int.__int__), (float, float.__float__)):
    if isinstance(value, base):
      return to_base(value)
  if isinstance(value, Mapping):
    return {_plain(k): _plain(v) for k, v in value.items()}
  if isinstance(value, list):
    return [_plain(v) for v in value]
  if isinstance(value, tuple):
    return tuple(_plain(v) for v in value)
  if isinstance(value, np.generic):
    return _plain(value.item())
  if dataclasses.is_dataclass(value) and not isinstance(value, type):
    return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
  if callable(getattr(value, "model_dump", None)):  # pydantic
    return _plain(value.model_dump())
  return f"<{type(value).__name__}>"


def _message(message: Any) -> dict:
  message = _plain(message)
  if not isinstance(message, dict):
    raise TypeError(f"chat messages must be dicts, got {message!r}")
  # APIs send content=None or tool_calls=None; templates handle a missing key, not None.
  message = {k: v for k, v in message.items() if v is not None}
  reasoning = next((message[k] for k in _REASONING_KEYS if message.get(k) is not None), None)
  if reasoning is not None:
    message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
  return message


def _tag_final_message(template: str, last: dict, field: str) -> str:
  """Appends the continue tag to the last message's `field`; returns the text tagged."""
  final = last.get(field)
  if final is None:
    raise ValueError(f"continue_final_message: the final message has no {field!r} to continue")
  fields = [field]
  if field in _REASONING_KEYS:  # Reasoning sits under several names; tag each copy.
    fields = [k for k in _REASONING_KEYS if last.get(k) == final]
  if not any(k in template for k in fields):
    raise ValueError(f"continue_final_message: the chat template never reads {field!r}")
  if isinstance(final, (list, tuple)):  # Content blocks: continue the last text block.
    block = next((b for b in reversed(final) if "text" in b), None)
    if block is None:
      raise ValueError("continue_final_message: the final message has no text to continue")
    final, block["text"] = block["text"], block["text"] + _CONTINUE_TAG
    return final
  for k in fields:
    last[k] = last[k] + _CONTINUE_TAG
  return final


def render(template: str, messages: Sequence[Any], *,
           tools: Sequence[Mapping[str, Any]] | None = None,
           documents: Sequence[Mapping[str, Any]] | None = None,
           add_generation_prompt: bool = False, continue_final_message: bool | str = False,
           **kwargs: Any) -> str:
  """Renders one conversation as transformers' `apply_chat_template(tokenize=False)`.

  Args:
    template: the model's Jinja chat template.
    messages: dicts (or dataclasses, pydantic models) with "role", "content", etc.
    tools: JSON schemas of the tools the model may call.
    documents: dicts (e.g. "title", "text") for retrieval-augmented templates.
    add_generation_prompt: end with the header of a new assistant turn.
    continue_final_message: end inside the last message (True: its "content",
      a string: that field) so that the model continues it.
    **kwargs: further template variables: the special tokens (`bos_token`, ...)
      and template options such as `date_string` or `enable_thinking`.
  """
  if not messages:
    raise ValueError("cannot apply a chat template to an empty conversation")
  if continue_final_message and add_generation_prompt:
    raise ValueError("continue_final_message and add_generation_prompt exclude each other")
  if tools is not None and not all(isinstance(t, Mapping) for t in tools):
    raise TypeError("tools must be JSON-schema dicts")
  if documents is not None and not all(isinstance(d, Mapping) for d in documents):
    raise TypeError("documents must be dicts with 'title' and 'text' keys")
  chat = [_message(m) for m in messages]
  if continue_final_message:
    field = continue_final_message if isinstance(continue_final_message, str) else "content"
    final = _tag_final_message(template, chat[-1], field)
  text = _compile(template).render(
      messages=chat, tools=_plain(None if tools is None else list(tools)),
      documents=_plain(None if documents is None else list(documents)),
      add_generation_prompt=add_generation_prompt, **_plain(kwargs))
  if not continue_final_message:
    return text
  tag = _CONTINUE_TAG.strip()
  if final.strip() not in text or tag not in text:
    raise ValueError("continue_final_message: the chat template dropped part of the final message")
  cut = text.rindex(tag)
  # A template that trims the message also trims its trailing spaces: trim the same.
  return text[:cut] if text[cut:cut + len(_CONTINUE_TAG)] == _CONTINUE_TAG else text[:cut].rstrip()
