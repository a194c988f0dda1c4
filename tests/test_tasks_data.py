"""Dataset readers, the prepare command and difficulty bins, on the project's fixture files."""

import gzip
import json
import os
import shutil
import tarfile
import tempfile

from absl.testing import absltest

from restem_jax.tasks import prepare
from restem_jax.tasks import difficulty, readers

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
FOLDERS, JSONL = os.path.join(FIXTURES, "folders"), os.path.join(FIXTURES, "jsonl")


class ReadersTest(absltest.TestCase):

  def test_math_folders_and_jsonl_agree(self):
    folders = readers.read_math(FOLDERS, "train")
    jsonl = readers.read_math(JSONL, "train")
    self.assertEqual([i for i, _ in folders],
                     ["algebra/1", "algebra/2", "algebra/10", "number_theory/5"])  # natural order
    self.assertEqual(sorted(r["problem"] for _, r in folders),
                     sorted(r["problem"] for _, r in jsonl))
    for _, record in folders:
      self.assertEqual(set(readers.MATH_FIELDS), set(record))

  def test_gsm8k(self):
    records = readers.read_gsm8k(FOLDERS, "test")
    self.assertEqual([i for i, _ in records], ["test-0", "test-1"])
    self.assertTrue(records[0][1]["answer"].rstrip().endswith("#### 54"))

  def test_apps_folders_and_jsonl_agree(self):
    folders = dict(readers.read_apps(FOLDERS, "train"))
    jsonl = dict(readers.read_apps(JSONL, "train"))
    self.assertEqual(list(folders), ["0000", "0001", "0002"])
    self.assertEqual(list(jsonl), ["0", "1", "2"])
    for a, b in zip(folders.values(), jsonl.values()):
      for key in ("question", "starter_code", "solutions", "difficulty", "input_output"):
        self.assertEqual(json.loads(a[key]) if key == "input_output" else a[key],
                         json.loads(b[key]) if key == "input_output" else b[key])
    self.assertEqual(folders["0001"]["fn_name"], "largest")
    self.assertNotIn("fn_name", folders["0000"])
    self.assertEqual(folders["0002"]["difficulty"], "interview")

  def test_humaneval_prefers_data_dir_then_package(self):
    self.assertEqual([i for i, _ in readers.read_humaneval(FOLDERS)], ["Fixture/0", "Fixture/1"])
    real = readers.read_humaneval(None)
    self.assertLen(real, 164)
    self.assertEqual(real[0][0], "HumanEval/0")

  def test_missing_dataset_says_what_to_place_where(self):
    with tempfile.TemporaryDirectory() as tmp:
      for read, expect in ((readers.read_math, "MATH/train/<type>/<id>.json"),
                           (readers.read_gsm8k, "gsm8k/train.jsonl"),
                           (readers.read_apps, "APPS/train/<id>/")):
        with self.assertRaisesRegex(readers.DatasetMissingError, expect) as cm:
          read(tmp, "train")
        self.assertIn("restem_jax.tasks.prepare", str(cm.exception))

  def test_malformed_records_name_file_and_line(self):
    with tempfile.TemporaryDirectory() as tmp:
      os.makedirs(os.path.join(tmp, "gsm8k"))
      path = os.path.join(tmp, "gsm8k", "train.jsonl")
      with open(path, "w") as f:
        f.write(json.dumps({"question": "q", "answer": "a\n#### 1"}) + "\n")
        f.write(json.dumps({"question": "q", "answer": "no marker"}) + "\n")
      with self.assertRaisesRegex(readers.MalformedRecordError, f"{path}:2: .*####"):
        readers.read_gsm8k(tmp, "train")
      with open(path, "w") as f:
        f.write("\n{not json\n")
      with self.assertRaisesRegex(readers.MalformedRecordError, f"{path}:2: invalid JSON"):
        readers.read_gsm8k(tmp, "train")
      os.makedirs(os.path.join(tmp, "MATH", "test", "algebra"))
      bad = os.path.join(tmp, "MATH", "test", "algebra", "3.json")
      with open(bad, "w") as f:
        json.dump({"problem": "p", "level": "Level 1", "type": "Algebra"}, f)
      with self.assertRaisesRegex(readers.MalformedRecordError, f"{bad}: missing .*solution"):
        readers.read_math(tmp, "test")
      os.makedirs(os.path.join(tmp, "APPS"))
      apps = os.path.join(tmp, "APPS", "test.jsonl")
      with open(apps, "w") as f:
        f.write(json.dumps({"question": "q", "input_output": "{oops"}) + "\n")
      with self.assertRaisesRegex(readers.MalformedRecordError, f"{apps}:1: input_output"):
        readers.read_apps(tmp, "test")


class PrepareTest(absltest.TestCase):

  def test_tarball_and_jsonl_sources_convert_to_the_layout(self):
    with tempfile.TemporaryDirectory() as tmp:
      # A MATH-style tarball (top folder inside another, as MATH.tar unpacks).
      tar_path = os.path.join(tmp, "MATH.tar")
      with tarfile.open(tar_path, "w") as tar:
        tar.add(os.path.join(FOLDERS, "MATH"), arcname="release/MATH")
      out = os.path.join(tmp, "out")
      self.assertEqual(prepare.prepare("math", out, source=tar_path), {"train": 4, "test": 2})
      self.assertTrue(os.path.isfile(os.path.join(out, "MATH", "train", "algebra", "1.json")))
      # JSONL per split, given as a "{split}" template (as the GitHub / HF sources are).
      template = os.path.join(JSONL, "APPS", "{split}.jsonl")
      self.assertEqual(prepare.prepare("apps", out, source=template), {"train": 3, "test": 2})
      self.assertEqual(prepare.prepare("humaneval", out)["test"], 164)  # From the package.
      with gzip.open(os.path.join(out, "HumanEval.jsonl.gz"), "rt") as f:
        self.assertLen(f.readlines(), 164)

  def test_offline_failure_says_where_to_place_files(self):
    with tempfile.TemporaryDirectory() as tmp:
      old, prepare.SOURCES = prepare.SOURCES, {**prepare.SOURCES,
                                               "gsm8k": ["http://127.0.0.1:9/{split}.jsonl"]}
      try:
        with self.assertRaisesRegex(prepare.PrepareError,
                                    r"could not fetch(.|\n)*gsm8k/\{train,test\}\.jsonl"):
          prepare.prepare("gsm8k", tmp)
      finally:
        prepare.SOURCES = old

  def test_bad_download_fails_with_file_and_line(self):
    with tempfile.TemporaryDirectory() as tmp:
      src = os.path.join(tmp, "src")
      os.makedirs(src)
      shutil.copy(os.path.join(JSONL, "gsm8k", "train.jsonl"), src)
      with open(os.path.join(src, "test.jsonl"), "w") as f:
        f.write("<html>rate limited</html>\n")
      with self.assertRaisesRegex(readers.MalformedRecordError, r"test\.jsonl:1: invalid JSON"):
        prepare.prepare("gsm8k", os.path.join(tmp, "out"),
                        source=os.path.join(src, "{split}.jsonl"))


class DifficultyTest(absltest.TestCase):

  def test_bins_by_solve_rate(self):
    with tempfile.TemporaryDirectory() as tmp:
      shard = os.path.join(tmp, "shard_00000.jsonl")
      rows = [("a", 0), ("a", 0), ("b", 1), ("b", 0), ("c", 1), ("c", 1), ("d", 0), ("d", 1)]
      with open(shard, "w") as f:
        f.writelines(json.dumps({"problem_id": p, "reward": r}) + "\n" for p, r in rows)
      bins = difficulty.write_bins(tmp, os.path.join(tmp, "bins"), [0, 0.5, 1])
      self.assertEqual(bins, [["a"], ["b", "c", "d"]])
      self.assertEqual(readers_ids(os.path.join(tmp, "bins", "bin_1.txt")), ["b", "c", "d"])


def readers_ids(path):
  from restem_jax.tasks import common  # pylint: disable=import-outside-toplevel
  return common.read_ids(path)


if __name__ == "__main__":
  absltest.main()
