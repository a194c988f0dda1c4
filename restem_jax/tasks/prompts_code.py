"""Prompts for APPS (few-shot with programs: stdin and call-based variants) and HumanEval.

APPS, in the APPS paper's QUESTION / ANSWER layout; each exemplar is

  QUESTION:
  <problem statement>
  <starter code, if any>
  Use Standard Input format            (or: Use Call-Based format)
  ANSWER:
  ```python
  <program>
  ```

A problem's prompt uses exemplars of its own kind (stdin or call-based: a
problem with `fn_name` is call-based) and ends with "ANSWER:\\n```python\\n", so
the completion is the program itself; it is cut at the closing fence
("\\n```") or at a new "QUESTION:".

HumanEval: 0-shot; the prompt is the dataset's own (signature + docstring) and
the completion is the function body, cut at the stop sequences of the Codex
paper (a new top-level def/class/if/print/comment).

The exemplars are this project's own; tests run each exemplar program on its
listed tests through the APPS reward.
"""

from __future__ import annotations

import json

# Each: (question, starter_code, program, input_output) -- the tests prove the program right.
APPS_STDIN_EXEMPLARS = (
    ("You are given an integer $n$ and then $n$ integers. Print the sum of the even ones.\n\n"
     "-----Input-----\n\nThe first line contains $n$ ($1 \\le n \\le 100$). The second line "
     "contains $n$ integers $a_i$ ($-1000 \\le a_i \\le 1000$).\n\n-----Output-----\n\nPrint "
     "one integer: the sum of the even $a_i$.\n\n-----Examples-----\nInput\n4\n1 2 3 4\n\n"
     "Output\n6\n",
     "",
     "n = int(input())\nnums = list(map(int, input().split()))\n"
     "print(sum(x for x in nums if x % 2 == 0))",
     {"inputs": ["4\n1 2 3 4\n", "3\n-2 5 7\n"], "outputs": ["6\n", "-2\n"]}),
    ("Vasya wrote a word $s$. Tell him whether it reads the same from left to right and from "
     "right to left.\n\n-----Input-----\n\nOne line with the word $s$ (1 to 100 lowercase "
     "Latin letters).\n\n-----Output-----\n\nPrint \"YES\" if $s$ is a palindrome and \"NO\" "
     "otherwise.\n\n-----Examples-----\nInput\nlevel\n\nOutput\nYES\n\nInput\ncode\n\n"
     "Output\nNO\n",
     "",
     "s = input().strip()\nprint(\"YES\" if s == s[::-1] else \"NO\")",
     {"inputs": ["level\n", "code\n"], "outputs": ["YES\n", "NO\n"]}),
)

APPS_CALL_EXEMPLARS = (
    ("You are given the prices of a stock on consecutive days. You may buy once and later sell "
     "once. Return the largest profit you can make, or 0 if no profit is possible.\n\n"
     "Example 1:\nInput: prices = [7,1,5,3,6,4]\nOutput: 5\n\nExample 2:\nInput: prices = "
     "[7,6,4,3,1]\nOutput: 0\n",
     "class Solution:\n    def maxProfit(self, prices):\n        ",
     "class Solution:\n    def maxProfit(self, prices):\n        best, low = 0, float(\"inf\")\n"
     "        for p in prices:\n            low = min(low, p)\n"
     "            best = max(best, p - low)\n        return best",
     {"fn_name": "maxProfit", "inputs": [[[7, 1, 5, 3, 6, 4]], [[7, 6, 4, 3, 1]]],
      "outputs": [5, 0]}),
    ("Write a function that counts the vowels (a, e, i, o, u, in either case) in a string.\n\n"
     "count_vowels(\"Hello World\") => 3\ncount_vowels(\"xyz\") => 0\n",
     "def count_vowels(s):\n\t",
     "def count_vowels(s):\n    return sum(1 for c in s.lower() if c in \"aeiou\")",
     {"fn_name": "count_vowels", "inputs": [["Hello World"], ["xyz"]], "outputs": [3, 0]}),
)

APPS_STOP_STRINGS = ("\n```", "\nQUESTION:")
FORMAT_STDIN = "Use Standard Input format"
FORMAT_CALL = "Use Call-Based format"


def apps_question(question: str, starter_code: str, call_based: bool) -> str:
  starter = starter_code.rstrip()
  return ("QUESTION:\n" + question.strip() + "\n" + (starter + "\n" if starter else "") +
          (FORMAT_CALL if call_based else FORMAT_STDIN) + "\nANSWER:\n```python\n")


def apps_prompt(question: str, starter_code: str, call_based: bool, num_shots: int = 2) -> str:
  """Few-shot prompt with programs of the problem's own kind; ends where the code starts."""
  exemplars = APPS_CALL_EXEMPLARS if call_based else APPS_STDIN_EXEMPLARS
  if not 0 <= num_shots <= len(exemplars):
    raise ValueError(f"num_shots={num_shots} must be in [0, {len(exemplars)}] for APPS")
  shots = "".join(apps_question(q, s, call_based) + code + "\n```\n\n"
                  for q, s, code, _ in exemplars[:num_shots])
  return shots + apps_question(question, starter_code, call_based)


def is_call_based(record) -> bool:
  if record.get("fn_name"):
    return True
  io = record.get("input_output")
  io = json.loads(io) if isinstance(io, str) and io else (io or {})
  return bool(io.get("fn_name"))


# The Codex paper's stop sequences: a new top-level statement ends the function.
HUMANEVAL_STOP_STRINGS = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#")


def humaneval_prompt(prompt: str) -> str:
  """0-shot: the dataset's prompt as is (signature and docstring; the body comes next)."""
  return prompt
