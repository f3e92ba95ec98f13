"""Test set-up: 8 fake CPU devices, set before JAX starts its backends."""
import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def smoke_base(tmp_path_factory):
  """The smoke toy base model (configs/toy_base.py:smoke) and its TFDS data dir, built once per
  session through run_stage. Tests read it; they write into their own directories."""
  from configs import toy_base
  from r1jax import runner
  root = tmp_path_factory.mktemp("smoke_base")
  cfg = toy_base.get_config("smoke")
  cfg.data.data_dir = str(root / "data")
  cfg.progress = False
  result = runner.run_stage(cfg, str(root / "base"))
  return {"data": str(root / "data"), "base": str(root / "base"), "result": result}
