"""experiments/scale_plan.py on a small instance: it compiles, its figures are sane, and the
compiler's FLOPs agree with the analytic count the docs' step times rest on."""
import importlib.util
import pathlib

import pytest

from r1jax import sharding
from r1jax.models.config import get_model_config

_PATH = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "scale_plan.py"
_SPEC = importlib.util.spec_from_file_location("scale_plan", _PATH)
scale_plan = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(scale_plan)


@pytest.mark.parametrize("preset", ["qwen2.5-1.5b", "qwen2.5-7b", "qwen2.5-32b"])
@pytest.mark.parametrize("devices", [64, 256])
def test_chosen_meshes_split_every_sharded_dim(preset, devices):
  c = get_model_config(preset)
  m = scale_plan.choose_mesh(c, devices)
  assert m["data"] * m["fsdp"] * m["tensor"] == devices
  assert c.d_model % m["fsdp"] == 0
  for n in (c.num_kv_heads, c.num_heads, c.mlp_dim, c.vocab_size):
    assert n % m["tensor"] == 0


def test_collective_bytes_parses_both_replica_group_spellings():
  hlo = (
      "  %all-gather.1 = f32[128,64]{1,0} all-gather(%x), channel_id=1, "
      "replica_groups=[2,4]<=[8], dimensions={0}\n"
      "  %all-reduce.2 = bf16[10]{0} all-reduce(%y), channel_id=2, "
      "replica_groups=mesh['axis_0'=4,'axis_1'=2] {'axis_1'}, to_apply=%add\n"
      "  %reduce-scatter.3 = f32[8]{0} reduce-scatter(%z), replica_groups={{0,1,2,3}}\n")
  got = scale_plan.collective_bytes(hlo)
  assert got["all-gather"] == pytest.approx(128 * 64 * 4 * 3 / 4)
  assert got["all-reduce"] == pytest.approx(2 * 10 * 2 * 1 / 2)
  assert got["reduce-scatter"] == pytest.approx(8 * 4 * 3)


def test_small_instance_compiles_with_positive_figures_and_analytic_flops():
  """The toy preset at one layer on the 8 fake devices of tests/conftest.py.

  Float32 without remat, so the compiled SFT step is exactly forward + backward:
  compiled / (3 x rows x T x flops_per_token(T)) must lie in [1.0, 1.15]. It is >= 1 because
  flops_per_token counts causal attention at its average context T/2 while the model computes
  the full masked T x T scores (here +2%), and because norms, RoPE, softmax, the loss and
  AdamW add elementwise work the matmul count leaves out (+3% at this width; 1.055 in all); 1.15
  leaves room for that without admitting a recomputed forward pass (x 4/3, what remat "full"
  adds) or a lost one (x 2/3).
  """
  config = get_model_config("toy", num_layers=1)
  mesh = sharding.make_mesh({"data": 1, "fsdp": 4, "tensor": 2})
  rows, length = 8, 64
  out = scale_plan.compile_programs(
      config, mesh, programs=("sft_update", "decode"), sft_rows=rows, sft_len=length,
      rollout_rows=8, prompt_len=16, completion_len=16, floor=False, log=lambda s: None)
  for name, f in out.items():
    for key in ("argument_bytes", "temp_bytes", "total_bytes", "flops", "bytes_accessed"):
      assert f[key] > 0, (name, key)
  sft = out["sft_update"]
  analytic = scale_plan.model_flops(config, rows, length - 1, passes=3)
  ratio = sft["flops"] * mesh.devices.size / analytic
  assert 1.0 <= ratio <= 1.15, ratio
  # FSDP x tensor shards the train state: a device holds about 1/8 of params + Adam moments.
  state = 3 * config.num_params() * 4
  batch = 4 * rows * length * 4 // 4  # four int32 [rows, length] arrays over 4 data shards
  assert sft["argument_bytes"] <= 1.1 * state / 8 + batch
  # Donation: the new state reuses the old state's buffers.
  assert sft["alias_bytes"] >= 0.9 * state / 8
  assert sum(sft["ici_bytes"].values()) > 0  # FSDP gathers weights and scatters gradients
