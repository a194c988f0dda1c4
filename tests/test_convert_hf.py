"""Hugging Face checkpoints: convert, logit parity with transformers, export back, errors."""

import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from contextlib import redirect_stdout

import jax
import numpy as np
from absl.testing import absltest, parameterized

from restem_jax import convert, load_model
from restem_jax.engine import partitioning
from restem_jax.checkpoint_io import hf_config, checkpoints
from restem_jax.engine.config import ModelConfig
from tests.hf_checkpoints import FAMILIES, make_checkpoint, torch_logits

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKENS = np.random.default_rng(0).integers(0, 96, (2, 24)).astype(np.int32)


def _one_device():
  return partitioning.make_mesh(devices=jax.devices()[:1])


class ConvertParityTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp, ignore_errors=True)
    super().tearDownClass()

  @parameterized.named_parameters(*((f, f) for f in FAMILIES))
  def test_converted_logits_match_transformers(self, family):
    hf_dir, out = os.path.join(self.tmp, f"hf_{family}"), os.path.join(self.tmp, f"rj_{family}")
    reference = make_checkpoint(family, hf_dir)
    summary = convert.convert(hf_dir, out)
    self.assertEqual(summary["model_type"], FAMILIES[family]["model_type"])
    for name in ("model.gin", "hf_config.json", "params"):
      self.assertTrue(os.path.exists(os.path.join(out, name)), name)
    model = load_model(out, mesh=_one_device(), tokenizer=False)
    diff = np.abs(model.logits(TOKENS) - torch_logits(reference, TOKENS)).max()
    print(f"PARITY {family}: max abs logit diff {diff:.3g}")
    self.assertLess(diff, 1e-4)
    # The same model straight from the HF directory (no Orbax step).
    direct = load_model(hf_dir, mesh=_one_device(), tokenizer=False)
    np.testing.assert_allclose(direct.logits(TOKENS), model.logits(TOKENS), atol=1e-6)

  def test_sharded_bf16_checkpoint_with_index(self):
    hf_dir = os.path.join(self.tmp, "hf_sharded")
    reference = make_checkpoint("llama3", hf_dir, seed=3, dtype="bfloat16", max_shard_size="40KB")
    self.assertTrue(os.path.exists(os.path.join(hf_dir, "model.safetensors.index.json")))
    self.assertGreater(len([n for n in os.listdir(hf_dir) if n.endswith(".safetensors")]), 2)
    model = load_model(hf_dir, mesh=_one_device(), tokenizer=False)
    self.assertLess(np.abs(model.logits(TOKENS) - torch_logits(reference, TOKENS)).max(), 1e-4)

  def test_base_from_pretrained_writes_the_loops_base_checkpoint(self):
    from restem_jax.checkpoint_io import checkpoints  # pylint: disable=import-outside-toplevel
    hf_dir, base = os.path.join(self.tmp, "hf_for_base"), os.path.join(self.tmp, "run", "base")
    make_checkpoint("qwen2", hf_dir, seed=7)
    self.assertFalse(checkpoints.exists(base))
    # The loop calls run.make_base with its trainer and data; a conversion ignores them.
    convert.base_from_pretrained(base, source=hf_dir, trainer=None, labelled=[], workdir=None)
    self.assertTrue(checkpoints.exists(base))
    np.testing.assert_allclose(load_model(base, mesh=_one_device(), tokenizer=False).logits(TOKENS),
                               load_model(hf_dir, mesh=_one_device(), tokenizer=False).logits(TOKENS),
                               atol=1e-6)

  def test_export_back_to_huggingface_layout(self):
    import transformers  # pylint: disable=import-outside-toplevel
    for family in ("qwen2", "gemma", "llama3"):
      with self.subTest(family=family):
        hf_dir = os.path.join(self.tmp, f"hf_exp_{family}")
        out, back = hf_dir + "_rj", hf_dir + "_back"
        make_checkpoint(family, hf_dir, seed=5)
        convert.convert(hf_dir, out)
        with redirect_stdout(io.StringIO()):
          self.assertEqual(convert.main([f"--input={out}", f"--output={back}", "--to=hf"]), 0)
        reloaded = transformers.AutoModelForCausalLM.from_pretrained(back).eval()
        ours = load_model(out, mesh=_one_device(), tokenizer=False)
        self.assertLess(np.abs(ours.logits(TOKENS) - torch_logits(reloaded, TOKENS)).max(), 1e-4)
        with open(os.path.join(back, "config.json")) as f:
          self.assertEqual(json.load(f)["model_type"], FAMILIES[family]["model_type"])

  def test_model_gin_is_valid_gin_and_round_trips(self):
    import gin  # pylint: disable=import-outside-toplevel
    from restem_jax.configurables import build  # pylint: disable=import-outside-toplevel
    hf_dir, out = os.path.join(self.tmp, "hf_gin"), os.path.join(self.tmp, "rj_gin")
    make_checkpoint("llama3", hf_dir)
    convert.convert(hf_dir, out)
    cfg = checkpoints.read_model_gin(os.path.join(out, "model.gin"))
    self.assertEqual(cfg, hf_config.model_config_from_hf(
        hf_config.read_config_json(hf_dir)))
    self.assertEqual(dict(cfg.rope_scaling)["rope_type"], "llama3")
    try:
      gin.parse_config_file(os.path.join(out, "model.gin"))
      self.assertEqual(build(ModelConfig), cfg)
    finally:
      gin.clear_config()

  def test_cli_verify_prints_difference_and_passes(self):
    hf_dir, out = os.path.join(self.tmp, "hf_cli"), os.path.join(self.tmp, "rj_cli")
    make_checkpoint("qwen2", hf_dir, seed=7)
    buffer = io.StringIO()
    with redirect_stdout(buffer):
      code = convert.main([f"--input={hf_dir}", f"--output={out}", "--verify",
                           "--tolerance=1e-4"])
    self.assertEqual(code, 0)
    self.assertRegex(buffer.getvalue(), r"max abs logit difference vs transformers = [0-9.e-]+")

  def test_verify_detects_wrong_weights(self):
    a, b = os.path.join(self.tmp, "hf_a"), os.path.join(self.tmp, "hf_b")
    make_checkpoint("gemma", a, seed=1)
    make_checkpoint("gemma", b, seed=2)
    out = os.path.join(self.tmp, "rj_b")
    convert.convert(b, out)
    self.assertGreater(convert.verify_against_transformers(a, out), 1e-2)


class ShardedLoadTest(absltest.TestCase):

  def test_loads_directly_into_a_sharded_mesh(self):
    """4 CPU devices, fsdp=2 x tensor=2: every leaf is split, logits unchanged."""
    tmp = tempfile.mkdtemp()
    try:
      reference = make_checkpoint("llama3", os.path.join(tmp, "hf"))
      np.save(os.path.join(tmp, "tokens.npy"), TOKENS)
      env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
                 JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
      subprocess.run([sys.executable, "-m", "tests.convert_sharded_worker", tmp], check=True,
                     env=env, cwd=ROOT)
      result = np.load(os.path.join(tmp, "result.npz"))
      self.assertLess(np.abs(result["logits"] - torch_logits(reference, TOKENS)).max(), 1e-4)
      # q [L, E, H, D] is split over embed (fsdp) and heads (tensor): a quarter per device.
      self.assertEqual(tuple(result["q_shard_shape"]), (2, 32, 2, 16))
      self.assertEqual(int(result["q_num_shards"]), 4)
    finally:
      shutil.rmtree(tmp, ignore_errors=True)


class ErrorTest(absltest.TestCase):

  def test_missing_config_json(self):
    with tempfile.TemporaryDirectory() as tmp:
      with self.assertRaisesRegex(FileNotFoundError, "config.json"):
        load_model(tmp)

  def test_missing_safetensors(self):
    with tempfile.TemporaryDirectory() as tmp:
      spec = dict(FAMILIES["qwen2"])
      with open(os.path.join(tmp, "config.json"), "w") as f:
        json.dump(spec, f)
      with self.assertRaisesRegex(ValueError, r"no \*\.safetensors"):
        load_model(tmp)

  def test_unsupported_model_type_names_supported_ones(self):
    with self.assertRaisesRegex(hf_config.UnsupportedModelError, "llama, qwen2, gemma"):
      hf_config.model_config_from_hf({"model_type": "gpt2"})

  def test_gemma2_is_refused_with_reason(self):
    with self.assertRaisesRegex(hf_config.UnsupportedModelError, "soft-capping"):
      hf_config.model_config_from_hf({"model_type": "gemma2"})

  def test_unsupported_rope_scaling(self):
    spec = dict(FAMILIES["qwen2"], rope_scaling={"rope_type": "yarn", "factor": 4.0})
    with self.assertRaisesRegex(hf_config.UnsupportedModelError, "yarn"):
      hf_config.model_config_from_hf(spec)

  def test_transformers5_rope_parameters_layout(self):
    spec = dict(FAMILIES["llama3"])
    scaling = spec.pop("rope_scaling")
    spec["rope_parameters"] = dict(scaling, rope_theta=spec.pop("rope_theta"))
    cfg = hf_config.model_config_from_hf(spec)
    self.assertEqual(cfg.rope_theta, 5e5)
    self.assertEqual(dict(cfg.rope_scaling)["factor"], 8.0)

  def test_package_import_stays_light_and_load_model_is_lazy(self):
    code = ("import sys, restem_jax; heavy = [m for m in ('jax', 'tensorflow', 'torch') "
            "if m in sys.modules]; assert not heavy, heavy; "
            "assert callable(restem_jax.load_model); assert 'jax' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT,
                   env=dict(os.environ, PYTHONPATH=ROOT))

  def test_cli_reports_unsupported_model(self):
    with tempfile.TemporaryDirectory() as tmp:
      with open(os.path.join(tmp, "config.json"), "w") as f:
        json.dump({"model_type": "mamba"}, f)
      self.assertEqual(convert.main([f"--input={tmp}", f"--output={tmp}/out"]), 2)


if __name__ == "__main__":
  absltest.main()
