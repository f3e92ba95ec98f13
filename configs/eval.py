"""Evaluation as DeepSeek-R1 reports it: pass@1 averaged over k samples (T=0.6, top-p 0.95),
unbiased pass@k and cons@k (majority vote), graded with math-verify.

  python -m r1jax.main --config=configs/eval.py --workdir=DIR \\
      --config.checkpoint=CKPT --config.dataset=NAME

Regrade completions made elsewhere (no sampling): --config.completions_file=F.jsonl with lines
{"problem" (or "question"), "gold", "completions": [...]}.
Writes DIR/eval/NAME/summary.json and samples.jsonl. NAME: gsm8k, aime24, amc23, math_jsonl, toy
(or any benchmark registered in r1jax/data/benchmarks.py).

Fields left at -1 or '' take the benchmark's defaults (r1jax.data.benchmarks.EVAL_DEFAULTS):
  gsm8k       k=4   max_new_tokens=8192   extract=answer_tag,boxed,hash,last_number  math
  aime24      k=64  max_new_tokens=32768  extract=answer_tag,boxed                   math
  amc23       k=16  max_new_tokens=32768  extract=answer_tag,boxed                   math
  math_jsonl  k=4   max_new_tokens=32768  extract=answer_tag,boxed                   math
  toy         k=4   max_new_tokens=64     extract=answer_tag                         exact
Variants after ':' (comma separated):
  runlocal    a quick CPU run: the toy world, 16 problems, k=2
"""
import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, runlocal=False)
  c = ml_collections.ConfigDict()
  c.stage = "eval"

  # What to evaluate: exactly one of the two.
  c.checkpoint = ""  # r1jax run dir, HF checkpoint dir or .gguf file: sample, then grade
  c.completions_file = ""  # JSONL of completions already made: grade only

  # Which problems.
  c.dataset = ""  # benchmark name (see above); also picks the defaults below and the output folder
  c.name = ""  # output folder DIR/eval/NAME ('' -> dataset, or the completions file's stem)
  c.data_dir = ""  # where TFDS keeps prepared files ('' -> $R1JAX_DATA_DIR or ~/r1jax_data)
  c.manual_dir = ""  # folder holding the benchmark's source JSONL ('' -> the copy shipped in
  #   r1jax/data/files for gsm8k, aime24, amc23; else download if it can)
  c.options = ml_collections.ConfigDict()  # math_jsonl builder fields: config_name,
  #   problem_field, answer_field, id_field, file_name (see MathJsonlConfig)
  c.toy = ml_collections.ConfigDict()  # ToyWorldConfig overrides for dataset=toy
  c.limit = 0  # evaluate only the first N problems; 0 = all

  # Sampling (the paper's protocol: temperature 0.6, top-p 0.95, k samples per problem).
  c.k = -1  # samples per problem; -1 -> benchmark default
  c.max_new_tokens = -1  # completion budget in tokens; -1 -> benchmark default
  c.temperature = 0.6
  c.top_p = 0.95
  c.top_k = 0  # 0 = off
  c.seed = 0  # same seed, checkpoint and config -> identical summary.json
  c.batch_size = 8  # prompts per sampler call (each sampled k times); does not change samples
  c.sampler = "continuous"  # 'static' or 'continuous' (r1jax/samplers.py): the same samples
  #   at another speed. Continuous decodes num_slots rows at once, refilling finished rows'
  #   slots from 4 batches per call: 1.13x static on SmolLM2, 16 GSM8K problems, k 4, 256
  #   tokens (experiments/continuous_defaults.py); the benchmarks' longer budgets spread
  #   lengths more
  c.num_slots = 0  # continuous: decode slots; 0 = batch_size x k
  c.mesh = common.mesh()  # data-parallel over every device by default
  c.template = ""  # 'r1_zero', 'toy', 'plain' or a string holding {prompt}; '' -> default

  # Grading.
  c.extract = ""  # comma-separated modes tried in order: answer_tag, boxed, hash, last_number
  c.grade_mode = ""  # 'math' (math-verify equivalence) or 'exact'; '' -> benchmark default
  c.pass_ks = ""  # comma-separated k's for pass@k; '' -> powers of two up to n, and n
  c.grading_timeout_s = 30.0  # hard limit per graded answer (child process); 0 = in-process only

  if arg.runlocal:
    c.dataset = "toy"
    c.limit = 16
    c.k = 2
    c.batch_size = 4
  return c
