"""A pod plan the compiler has checked: per-chip memory and FLOPs of r1jax's programs on a mesh.

  python experiments/scale_plan.py [--presets=qwen2.5-1.5b,qwen2.5-7b,qwen2.5-32b]
      [--devices=64,256] [--prompt_len=1024] [--completion_len=4096] [--update_rows=256]
      [--rollout_rows=512] [--sft_rows=256] [--sft_len=4096] [--out=docs/results/scale_plan.json]

For each preset and mesh size it lowers and compiles, without running, the programs a GRPO or
SFT stage runs: the GRPO update (`training.jit_update` of `grpo.make_grpo_loss`), the old/ref
log-prob forward (`grpo.make_logprob_fn`), the SFT update (`sft.next_token_loss`), and the
sampler's prefill and one decode step. Every argument is abstract (`jax.ShapeDtypeStruct` with its
sharding), so nothing is allocated. Each mesh size compiles in its own subprocess on a fake CPU
mesh (`--xla_force_host_platform_device_count`), which is why the figures are compiler estimates
from XLA:CPU, not TPU measurements: the CPU backend upcasts bfloat16 arithmetic to float32, plans
buffers differently from XLA:TPU and has no TPU kernels (no flash attention).

Prints markdown tables and writes the figures (and the per-chip time estimates that
docs/scaling.md quotes) as JSON.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from typing import Any

# Public spec figures per chip (Cloud TPU documentation, the v5e and v5p pages).
CHIPS = {
    "v5e": {"hbm_gib": 16.0, "peak_flops": 197e12, "hbm_bytes_s": 819e9,
            "ici_bytes_s": 1600e9 / 8},  # ICI 1,600 Gbps per chip
    "v5p": {"hbm_gib": 95.0, "peak_flops": 459e12, "hbm_bytes_s": 2765e9,
            "ici_bytes_s": 4800e9 / 8},  # ICI 4,800 Gbps per chip
}
# The slice a mesh of N chips is (v5p slice names count TensorCores: two per chip).
SLICES = {64: {"v5e": "v5litepod-64", "v5p": "v5p-128"},
          256: {"v5e": "v5litepod-256", "v5p": "v5p-512"}}
PROGRAMS = ("grpo_update", "logprobs", "sft_update", "prefill", "decode", "decode_tp")
UPDATES = ("grpo_update", "sft_update")
GIB = 1024 ** 3
# XLA:CPU's default scheduler orders for concurrency and runs remat'd recomputation early, so
# that every layer's recomputed attention is alive at once; the memory-optimized one is closer
# to a memory-aware TPU schedule (it still hoists some: see `_floor` and docs/scaling.md).
CPU_SCHEDULER = "--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"


# ------------------------------------------------------------------ analytic counts (no JAX)
def model_flops(config, rows: int, seq_len: int, passes: float) -> float:
  """`passes` x forward FLOPs of `rows` x `seq_len` tokens by `ModelConfig.flops_per_token`:
  3 passes = forward + backward (the 6N-style count), 1 = a forward pass. Causal attention is
  counted at its average context, seq_len / 2."""
  return passes * rows * seq_len * config.flops_per_token(seq_len)


def block_params(config) -> int:
  """Parameters of one transformer block."""
  return (config.num_params() - config.replace(num_layers=0).num_params()) // config.num_layers


def kv_cache_bytes(config, rows: int, length: int, bytes_per: int = 2) -> int:
  """The whole KV cache of `rows` x `length` tokens (all chips together)."""
  return 2 * config.num_layers * config.num_kv_heads * config.head_dim * rows * length * bytes_per


def choose_mesh(config, num_devices: int, tensor: int = 0, data: int = 1) -> dict[str, int]:
  """data x fsdp x tensor: tensor the largest of 8, 4, 2, 1 that splits the KV heads (and heads,
  MLP, vocab) evenly; fsdp the rest, halved onto `data` until it splits d_model."""
  if not tensor:
    tensor = next(t for t in (8, 4, 2, 1) if num_devices % t == 0 and not any(
        n % t for n in (config.num_kv_heads, config.num_heads, config.mlp_dim, config.vocab_size)))
  fsdp = num_devices // (tensor * data)
  if fsdp * tensor * data != num_devices:
    raise ValueError(f"{num_devices} devices do not split into data={data} x tensor={tensor}")
  while config.d_model % fsdp:
    fsdp, data = fsdp // 2, data * 2
  return {"data": data, "fsdp": fsdp, "tensor": tensor}


def decode_read_bytes(config, mesh_shape: dict, rows: int, cache_len: int, name: str) -> float:
  """Bytes one chip must read from HBM per decode step: the weights it multiplies with (the
  whole tensor shard: under FSDP gathered in float32, for 'decode_tp' held in bfloat16) and its
  share of the KV cache."""
  devices = math.prod(mesh_shape.values())
  weight_bytes = 4 if name == "decode" else 2
  weights = config.num_params() * weight_bytes / mesh_shape["tensor"]
  return weights + kv_cache_bytes(config, rows, cache_len) / devices


# ------------------------------------------------------------------ what the compiler reports
_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "s16": 2, "u16": 2, "f32": 4,
                "s32": 4, "u32": 4, "f64": 8, "s64": 8, "u64": 8, "c64": 8}
_SHAPE = re.compile(r"\b(pred|[suf]\d+|bf16|c64)\[([\d,]*)\]")
_COLLECTIVE = re.compile(
    r"^\s*(?:ROOT )?%\S+ = (.+?) (all-gather|all-reduce|reduce-scatter|all-to-all|"
    r"collective-permute)(-start)?\(")
_IOTA_GROUPS = re.compile(r"replica_groups=\[[\d,]*?(\d+)\]<=")
_MESH_GROUPS = re.compile(r"replica_groups=mesh\[([^\]]*)\] \{([^}]*)\}")
_LIST_GROUPS = re.compile(r"replica_groups=\{\{([\d,]*)\}")


def _shape_bytes(type_text: str) -> list[int]:
  return [_DTYPE_BYTES[dt] * math.prod(int(d) for d in dims.split(",") if d)
          for dt, dims in _SHAPE.findall(type_text)]


def _group_size(line: str) -> int:
  if m := _IOTA_GROUPS.search(line):
    return int(m.group(1))
  if m := _MESH_GROUPS.search(line):
    sizes = dict(re.findall(r"'(\w+)'=(\d+)", m.group(1)))
    return math.prod(int(sizes[a]) for a in re.findall(r"'(\w+)'", m.group(2)))
  if m := _LIST_GROUPS.search(line):
    return len(m.group(1).split(","))
  return 1


def collective_bytes(hlo_text: str) -> dict[str, float]:
  """Bytes each device sends over the interconnect, by collective, from compiled HLO text.

  Ring algorithms over a group of g: all-gather sends (g-1)/g of its output, reduce-scatter
  (g-1) x its output, all-reduce 2 (g-1)/g of its operand, all-to-all (g-1)/g, a permute all.
  """
  out: dict[str, float] = {}
  for line in hlo_text.splitlines():
    m = _COLLECTIVE.match(line)
    if not m:
      continue
    type_text, op, start = m.groups()
    sizes = _shape_bytes(type_text)
    if start and op in ("all-gather", "collective-permute") and len(sizes) > 1:
      sizes = sizes[len(sizes) // 2:]  # (operands, outputs) tuples: the outputs
    size, g = sum(sizes), _group_size(line)
    factor = {"all-gather": (g - 1) / g, "reduce-scatter": g - 1, "all-reduce": 2 * (g - 1) / g,
              "all-to-all": (g - 1) / g, "collective-permute": 1.0}[op]
    out[op] = out.get(op, 0.0) + size * factor
  return out


def compiled_figures(compiled) -> dict[str, Any]:
  """Per-device memory (memory_analysis), FLOPs and bytes (cost_analysis), ICI bytes (HLO)."""
  mem = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  figures = {
      "argument_bytes": int(mem.argument_size_in_bytes),
      "output_bytes": int(mem.output_size_in_bytes),
      "alias_bytes": int(mem.alias_size_in_bytes),
      "temp_bytes": int(mem.temp_size_in_bytes),
      "flops": float(cost.get("flops", 0.0)),
      "transcendentals": float(cost.get("transcendentals", 0.0)),
      "bytes_accessed": float(cost.get("bytes accessed", 0.0)),
      "ici_bytes": collective_bytes(compiled.as_text()),
  }
  # Donated arguments that come back as outputs share their buffers (alias): counted once.
  figures["total_bytes"] = (figures["argument_bytes"] + figures["output_bytes"]
                            - figures["alias_bytes"] + figures["temp_bytes"])
  return figures


def _floor(full: dict, config, mesh, one_layer: dict, rows: int, seq_len: int) -> float:
  """Per-device bytes of an update if only one block's recomputation is live at a time.

  XLA:CPU schedules the remat'd recomputation of several blocks early (their attention scores
  then overlap); a one-layer compile cannot, so its temporaries are one block's working set
  plus the embedding, logits and loss. Each further block adds what remat 'full' keeps: its
  input in the compute dtype (XLA:CPU holds bfloat16 as float32; a TPU does not) and its
  float32 gradient shard.
  """
  rows_local = rows // math.prod(mesh.shape[a] for a in ("data", "fsdp"))
  act_bytes = 2 if config.dtype in ("bfloat16", "float16") else 4
  per_block = (rows_local * seq_len * config.d_model * act_bytes
               + block_params(config) * 4 / mesh.devices.size)
  fixed = full["argument_bytes"] + full["output_bytes"] - full["alias_bytes"]
  return fixed + one_layer["temp_bytes"] + (config.num_layers - 1) * per_block


# ------------------------------------------------------------------ lowering r1jax's programs
def _closure_var(fn, name: str):
  """The jitted function an r1jax wrapper closes over (the wrappers enter the mesh context and
  call it), so the plan lowers the very program the trainer runs."""
  cells = dict(zip(fn.__code__.co_freevars, fn.__closure__ or ()))
  if name not in cells:
    raise RuntimeError(f"{fn.__qualname__} no longer closes over {name!r}; update scale_plan.py")
  return cells[name].cell_contents


def compile_programs(config, mesh, *, programs=PROGRAMS, prompt_len: int = 1024,
                     completion_len: int = 4096, update_rows: int = 256, rollout_rows: int = 512,
                     sft_rows: int = 256, sft_len: int = 4096, beta: float = 0.001,
                     floor: bool = True, log=print) -> dict[str, dict[str, Any]]:
  """Lowers and compiles each program on `mesh` with abstract arguments; returns its figures.

  `config` is the ModelConfig as the stage runs it (its precision applied). The rollout's KV
  cache holds prompt_len + completion_len - 1 slots: the decode step is compiled at its last,
  longest step. 'decode' takes the float32 master weights on the training shardings, as the
  GRPO stage's sampler does; 'decode_tp' the same step with bfloat16 weights sharded over the
  tensor axis only (replicated over data and fsdp), the layout of an inference engine.
  With `floor`, each update program is compiled once more at one layer for `floor_bytes`.
  """
  import functools

  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  import ml_collections

  from r1jax import optim, sft, sharding, training
  from r1jax.models.transformer import CACHE_LOGICAL_AXES, Transformer, init_cache
  from r1jax.rl import grpo, losses
  from r1jax.sampling import positions_from_mask, sample_tokens, token_logprobs

  rules = sharding.DEFAULT_RULES
  tp_rules = tuple((n, None if n == "embed" else a) for n, a in rules)
  model = Transformer(config)
  tx = optim.make_optimizer(ml_collections.ConfigDict({
      "learning_rate": 1e-6, "schedule": "constant", "warmup_steps": 0, "weight_decay": 0.1,
      "b1": 0.9, "b2": 0.95, "grad_clip": 1.0}))
  state_shards = training.state_shardings(model, tx, mesh, rules)

  def init(rng):
    params = model.init(rng, jnp.zeros((1, 8), jnp.int32))["params"]
    return {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32)}
  state = sharding.abstract_with_shardings(nn.unbox(jax.eval_shape(init, jax.random.key(0))),
                                           state_shards)
  params = state["params"]
  tp_params = sharding.abstract_with_shardings(
      jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, jnp.bfloat16), params),
      sharding.param_shardings(model, mesh, tp_rules))
  rep = sharding.replicated(mesh)

  def rows_of(shape, dtype):
    return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding.batch_sharding(mesh, len(shape)))

  def scalar(dtype=jnp.float32):
    return jax.ShapeDtypeStruct((), dtype, sharding=rep)

  length = prompt_len + completion_len
  cache_len = prompt_len + completion_len - 1
  cache_sharding = jax.sharding.NamedSharding(mesh, sharding.logical_spec(CACHE_LOGICAL_AXES,
                                                                          rules))
  cache = [{k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=cache_sharding)
            for k, v in layer.items()}
           for layer in jax.eval_shape(lambda: init_cache(config, rollout_rows, cache_len))]
  cache_shardings = [{"k": cache_sharding, "v": cache_sharding} for _ in cache]

  def prefill(params, tokens, mask, cache):
    """The sampler's prefill: all but the last prompt token into the KV cache (sampling.py)."""
    p = tokens.shape[1]
    slots = jnp.arange(cache[0]["k"].shape[2])
    key_valid = jnp.pad(mask, ((0, 0), (0, slots.shape[0] - p)))
    attn = (slots[None, None, :] <= jnp.arange(p - 1)[None, :, None]) & key_valid[:, None, :]
    _, cache = model.apply({"params": params}, tokens[:, :-1],
                           positions=positions_from_mask(mask)[:, :-1], attention_mask=attn,
                           cache=cache, cache_index=0, return_hidden=True)
    return cache

  def decode(params, cache, last, position, attn, slot, seed, temperature):
    """One decode step: one token per row through the cache, then sampled (sampling.py)."""
    logits, cache = model.apply({"params": params}, last[:, None], positions=position[:, None],
                                attention_mask=attn, cache=cache, cache_index=slot)
    keys = jax.random.split(jax.random.key(seed), last.shape[0])
    tokens, slp = sample_tokens(logits[:, 0], keys, temperature, greedy=False)
    return tokens, token_logprobs(logits[:, 0], tokens), slp, cache

  def grpo_batch(rows):
    return {"tokens": rows_of((rows, length), jnp.int32),
            "seq_mask": rows_of((rows, length), jnp.int32),
            "completion_mask": rows_of((rows, completion_len), jnp.int32),
            "old_logp": rows_of((rows, completion_len), jnp.float32),
            "ref_logp": rows_of((rows, completion_len), jnp.float32),
            "advantages": rows_of((rows,), jnp.float32),
            "num_sequences": scalar(), "num_tokens": scalar()}

  def lowered(name):
    if name == "grpo_update":
      loss = losses.LossConfig(beta=beta, kl="k3")
      run = training.jit_update(grpo.make_grpo_loss(model, loss, prompt_len), tx, mesh, rules,
                                state_shards)
      return _closure_var(run, "jitted").lower(state, grpo_batch(update_rows))
    if name == "logprobs":
      run = grpo.make_logprob_fn(model, mesh, rules, prompt_len)
      b = grpo_batch(update_rows)
      return _closure_var(run, "fn").lower(params, b["tokens"], b["seq_mask"])
    if name == "sft_update":
      run = training.jit_update(functools.partial(sft.next_token_loss, model), tx, mesh, rules,
                                state_shards)
      batch = {k: rows_of((sft_rows, sft_len), jnp.int32)
               for k in ("tokens", "loss_mask", "segment_ids", "positions")}
      return _closure_var(run, "jitted").lower(state, batch)
    if name == "prefill":
      fn = jax.jit(prefill, out_shardings=cache_shardings, donate_argnums=(3,))
      return fn.lower(params, rows_of((rollout_rows, prompt_len), jnp.int32),
                      rows_of((rollout_rows, prompt_len), jnp.bool_), cache)
    if name in ("decode", "decode_tp"):
      fn = jax.jit(decode, out_shardings=(None, None, None, cache_shardings),
                   donate_argnums=(1,))
      return fn.lower(params if name == "decode" else tp_params, cache,
                      rows_of((rollout_rows,), jnp.int32), rows_of((rollout_rows,), jnp.int32),
                      rows_of((rollout_rows, 1, cache_len), jnp.bool_), scalar(jnp.int32),
                      scalar(jnp.int32), scalar())
    raise ValueError(f"unknown program {name!r}; known: {PROGRAMS}")

  results = {}
  for name in programs:
    t0 = time.perf_counter()
    with sharding.mesh_rules(mesh, tp_rules if name == "decode_tp" else rules):
      low = lowered(name)
      t1 = time.perf_counter()
      compiled = low.compile()
    t2 = time.perf_counter()
    f = results[name] = {**compiled_figures(compiled), "lower_s": t1 - t0, "compile_s": t2 - t1}
    del compiled, low
    log(f"  {name}: lower {t1 - t0:.1f} s, compile {t2 - t1:.1f} s, "
        f"{f['total_bytes'] / GIB:.2f} GiB/device, {f['flops'] / 1e12:.2f} TFLOP/device")
    if name in ("decode", "decode_tp"):
      f["read_bytes"] = decode_read_bytes(config, dict(mesh.shape), rollout_rows, cache_len, name)
    if name in UPDATES and floor and config.num_layers > 1:
      one = compile_programs(
          config.replace(num_layers=1), mesh, programs=(name,), prompt_len=prompt_len,
          completion_len=completion_len, update_rows=update_rows, sft_rows=sft_rows,
          sft_len=sft_len, beta=beta, floor=False, log=lambda s: None)[name]
      grpo_like = name == "grpo_update"
      f["floor_bytes"] = _floor(f, config, mesh, one, update_rows if grpo_like else sft_rows,
                                (length if grpo_like else sft_len) - 1)
      f["one_layer_temp_bytes"] = one["temp_bytes"]
      log(f"  {name}: one-layer compile {one['compile_s']:.1f} s, "
          f"floor {f['floor_bytes'] / GIB:.2f} GiB/device")
  return results


# ------------------------------------------------------------------ one subprocess per mesh
def _worker(args) -> None:
  """Runs in a process whose XLA_FLAGS fake `--num_devices` CPU devices."""
  import jax

  from r1jax import sharding
  from r1jax.models import loading
  from r1jax.models.config import get_model_config

  n = args.num_devices
  if jax.device_count() != n:
    raise RuntimeError(f"expected {n} fake devices, got {jax.device_count()}")
  config = loading.with_precision(get_model_config(args.preset), {
      "compute": args.compute, "kv_cache": "", "remat": args.remat})
  shape = choose_mesh(config, n, tensor=args.tensor, data=args.data)
  mesh = sharding.make_mesh(shape)
  print(f"{args.preset} on {n} devices, mesh {shape}", flush=True)
  results = compile_programs(
      config, mesh, programs=args.programs.split(","), prompt_len=args.prompt_len,
      completion_len=args.completion_len, update_rows=args.update_rows,
      rollout_rows=args.rollout_rows, sft_rows=args.sft_rows, sft_len=args.sft_len,
      log=lambda s: print(s, flush=True))
  with open(args.result, "w") as f:
    json.dump({"preset": args.preset, "num_devices": n, "mesh": shape,
               "num_params": config.num_params(), "programs": results}, f)


def _spawn(args, preset: str, n: int) -> dict:
  """One (preset, mesh size) compile in a fresh process with N fake CPU devices."""
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env["XLA_FLAGS"] = (re.sub(r"--xla_force_host_platform_device_count=\d+", "",
                             env.get("XLA_FLAGS", "")) +
                      f" --xla_force_host_platform_device_count={n} {CPU_SCHEDULER}").strip()
  with tempfile.TemporaryDirectory() as tmp:
    result = os.path.join(tmp, "result.json")
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", f"--preset={preset}",
           f"--num_devices={n}", f"--result={result}",
           *[f"--{k}={v}" for k, v in _shapes(args).items()]]
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True)
    with open(result) as f:
      out = json.load(f)
  out["wall_s"] = time.perf_counter() - t0
  return out


# ------------------------------------------------------------------ estimates and the tables
def estimates(figures: dict, chip: str) -> dict[str, float]:
  """Seconds per call on `chip` from the per-device counts: FLOPs at the bf16 peak, collective
  bytes at the ICI bandwidth, and for decode the bytes it must read at the HBM bandwidth.
  `step_s` assumes the three overlap perfectly (the largest), `serial_s` that they do not."""
  spec = CHIPS[chip]
  compute = figures["flops"] / spec["peak_flops"]
  ici = sum(figures["ici_bytes"].values()) / spec["ici_bytes_s"]
  hbm = figures.get("read_bytes", 0.0) / spec["hbm_bytes_s"]
  return {"compute_s": compute, "ici_s": ici, "hbm_s": hbm, "step_s": max(compute, ici, hbm),
          "serial_s": compute + ici + hbm}


def grpo_step(entry: dict, chip: str, decode: str = "decode") -> dict[str, float]:
  """One GRPO step of rollout_rows rows: prefill + completion_len decode steps (each at the
  longest cache: an upper bound), then per minibatch the old and reference log-prob passes
  and the update."""
  p = entry["programs"]
  need = ("prefill", decode, "logprobs", "grpo_update")
  if not all(k in p for k in need):
    return {}
  e = {k: estimates(p[k], chip)["step_s"] for k in need}
  shapes = entry["shapes"]
  minibatches = shapes["rollout_rows"] / shapes["update_rows"]
  rollout = e["prefill"] + shapes["completion_len"] * e[decode]
  train = minibatches * (2 * e["logprobs"] + e["grpo_update"])
  return {"rollout_s": rollout, "train_s": train, "step_s": rollout + train,
          "rollout_share": rollout / (rollout + train)}


def _fits(f: dict, chip: str) -> str:
  """'yes' / 'no' against the chip's HBM; for an update 'floor only' when the one-block-live
  estimate fits but XLA:CPU's own schedule does not."""
  hbm = CHIPS[chip]["hbm_gib"] * GIB
  if f["total_bytes"] <= hbm:
    return "yes"
  return "floor only" if f.get("floor_bytes", math.inf) <= hbm else "no"


def rows_that_fit(entry: dict, name: str, chip: str) -> int:
  """Rows per optimizer step whose `floor_bytes` fit the chip, taking the floor's temporaries as
  proportional to the rows each chip holds (a multiple of the data x fsdp shards; 0: none)."""
  f = entry["programs"][name]
  shards = entry["mesh"]["data"] * entry["mesh"]["fsdp"]
  rows = entry["shapes"]["update_rows" if name == "grpo_update" else "sft_rows"] // shards
  fixed = f["argument_bytes"] + f["output_bytes"] - f["alias_bytes"]
  per_row = (f["floor_bytes"] - fixed) / rows
  return max(int((CHIPS[chip]["hbm_gib"] * GIB - fixed) // per_row), 0) * shards


def memory_table(results: list[dict]) -> str:
  """Per-chip memory (GiB) and work per program; 'floor' and the rows per step that fit only
  for the updates (see `_floor`, `rows_that_fit`)."""
  lines = [("| model | chips | mesh (data, fsdp, tensor) | program | args | outputs (aliased) | "
            "temps | total (XLA:CPU) | floor | fits v5e | fits v5p | rows that fit v5e / v5p | "
            "TFLOP/chip | compile s |"),
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in results:
    mesh = "{data}, {fsdp}, {tensor}".format(**r["mesh"])
    for name, f in r["programs"].items():
      floor, fit = "", ""
      if "floor_bytes" in f:
        floor = f"{f['floor_bytes'] / GIB:.1f}"
        fit = f"{rows_that_fit(r, name, 'v5e')} / {rows_that_fit(r, name, 'v5p')}"
      lines.append(
          f"| {r['preset']} | {r['num_devices']} | {mesh} | {name} | "
          f"{f['argument_bytes'] / GIB:.2f} | {f['output_bytes'] / GIB:.2f} "
          f"({f['alias_bytes'] / GIB:.2f}) | {f['temp_bytes'] / GIB:.2f} | "
          f"{f['total_bytes'] / GIB:.1f} | {floor} | {_fits(f, 'v5e')} | {_fits(f, 'v5p')} | "
          f"{fit} | {f['flops'] / 1e12:.3g} | {f['compile_s']:.0f} |")
  return "\n".join(lines)


def time_table(results: list[dict]) -> str:
  """Per-call seconds on each chip: compute at peak, collectives over ICI, decode's HBM reads;
  the estimate assumes they overlap (the largest of the three)."""
  lines = [("| model | slice | program | compute s | ICI GB | ICI s | HBM read GB | HBM s | "
            "estimate s |"), "|---|---|---|---|---|---|---|---|---|"]
  for r in results:
    for chip in CHIPS:
      slice_name = SLICES.get(r["num_devices"], {}).get(chip, f"{r['num_devices']} x {chip}")
      for name, f in r["programs"].items():
        e = estimates(f, chip)
        read = f"{f['read_bytes'] / 1e9:.3g}" if "read_bytes" in f else ""
        hbm = f"{e['hbm_s']:.3g}" if "read_bytes" in f else ""
        lines.append(f"| {r['preset']} | {slice_name} | {name} | {e['compute_s']:.3g} | "
                     f"{sum(f['ici_bytes'].values()) / 1e9:.3g} | {e['ici_s']:.3g} | {read} | "
                     f"{hbm} | {e['step_s']:.3g} |")
  return "\n".join(lines)


def step_table(results: list[dict]) -> str:
  """One GRPO step per slice: rollout (prefill + decode) and train (log-probs + updates), with
  the sampler's own decode (FSDP float32 weights) and with a tensor-parallel bfloat16 decode."""
  lines = [("| model | slice | rollout s (r1jax decode) | rollout s (TP decode) | train s | "
            "step s (r1jax) | rollout share | step s (TP) | rollout share |"),
           "|---|---|---|---|---|---|---|---|---|"]
  for r in results:
    for chip in CHIPS:
      a, b = grpo_step(r, chip), grpo_step(r, chip, "decode_tp")
      if not (a and b):
        continue
      slice_name = SLICES.get(r["num_devices"], {}).get(chip, f"{r['num_devices']} x {chip}")
      lines.append(f"| {r['preset']} | {slice_name} | {a['rollout_s']:.0f} | "
                   f"{b['rollout_s']:.0f} | {a['train_s']:.1f} | {a['step_s']:.0f} | "
                   f"{a['rollout_share']:.0%} | {b['step_s']:.0f} | {b['rollout_share']:.0%} |")
  return "\n".join(lines)


def _shapes(args) -> dict:
  return {k: getattr(args, k) for k in ("programs", "prompt_len", "completion_len",
                                        "update_rows", "rollout_rows", "sft_rows", "sft_len",
                                        "compute", "remat", "tensor", "data")}


def _parse(argv=None) -> argparse.Namespace:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--presets", default="qwen2.5-1.5b,qwen2.5-7b,qwen2.5-32b")
  ap.add_argument("--devices", default="64,256", help="mesh sizes, comma separated")
  ap.add_argument("--programs", default=",".join(PROGRAMS))
  ap.add_argument("--prompt_len", type=int, default=1024)
  ap.add_argument("--completion_len", type=int, default=4096)
  ap.add_argument("--update_rows", type=int, default=256, help="GRPO rows per optimizer step")
  ap.add_argument("--rollout_rows", type=int, default=512, help="prompts x G per rollout")
  ap.add_argument("--sft_rows", type=int, default=256)
  ap.add_argument("--sft_len", type=int, default=4096)
  ap.add_argument("--tensor", type=int, default=0, help="tensor axis size (0: choose_mesh)")
  ap.add_argument("--data", type=int, default=1, help="data axis size")
  ap.add_argument("--compute", default="bfloat16", help="compute dtype (weights stay float32)")
  ap.add_argument("--remat", default="full")
  ap.add_argument("--out", default="docs/results/scale_plan.json")
  ap.add_argument("--reuse", action="store_true",
                  help="keep entries already in --out that were compiled with the same flags")
  ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  ap.add_argument("--preset", help=argparse.SUPPRESS)
  ap.add_argument("--num_devices", type=int, help=argparse.SUPPRESS)
  ap.add_argument("--result", help=argparse.SUPPRESS)
  return ap.parse_args(argv)


def main(argv=None) -> None:
  args = _parse(argv)
  if args.worker:
    _worker(args)
    return
  done = []
  if args.reuse and os.path.exists(args.out):
    with open(args.out) as f:
      done = [r for r in json.load(f)["results"] if r.get("shapes") == _shapes(args)]
  results = []
  for n in [int(x) for x in args.devices.split(",")]:
    for preset in args.presets.split(","):
      old = [r for r in done if r["preset"] == preset and r["num_devices"] == n]
      entry = old[0] if old else {**_spawn(args, preset, n), "shapes": _shapes(args)}
      for chip in CHIPS:
        entry[f"grpo_step_{chip}"] = grpo_step(entry, chip)
        entry[f"grpo_step_tp_{chip}"] = grpo_step(entry, chip, "decode_tp")
      results.append(entry)
      os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
      with open(args.out, "w") as f:  # after every entry: a long run keeps what it compiled
        json.dump({"chips": CHIPS, "slices": SLICES, "results": results}, f, indent=1)
  print(memory_table(results), time_table(results), step_table(results), sep="\n\n")


if __name__ == "__main__":
  main()
