"""Prompt templates: the R1-Zero instruction, the toy world's compact one, and none.

A template is a string with one `{prompt}` field. The toy world uses 'toy' everywhere (corpus,
RL, evaluation) so that its tiny base model has seen the exact prompt shape it is asked in.
"""
from __future__ import annotations

# Verbatim from the DeepSeek-R1 paper (Table 1); the completion starts right after "Assistant:".
R1_ZERO = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant "
    "solves it. The assistant first thinks about the reasoning process in the mind and then "
    "provides the user with the answer. The reasoning process and answer are enclosed within "
    "<think> </think> and <answer> </answer> tags, respectively, i.e., <think> reasoning process "
    "here </think> <answer> answer here </answer>. User: {prompt}. Assistant:")

# Same shape as R1_ZERO without the instruction: the toy base model learns the tags from its corpus.
TOY = "User: {prompt}\nAssistant:"

PLAIN = "{prompt}"

TEMPLATES: dict[str, str] = {"r1_zero": R1_ZERO, "toy": TOY, "plain": PLAIN}


def get_template(name_or_template: str) -> str:
  """A registered name ('r1_zero', 'toy', 'plain') or a literal template holding `{prompt}`."""
  if name_or_template in TEMPLATES:
    return TEMPLATES[name_or_template]
  if "{prompt}" not in name_or_template:
    raise ValueError(
        f"unknown template {name_or_template!r}: use one of {sorted(TEMPLATES)} or a string "
        "containing '{prompt}'")
  return name_or_template


def format_prompt(name_or_template: str, prompt: str) -> str:
  """Fills the template; uses str.replace so braces in the prompt or template stay literal."""
  return get_template(name_or_template).replace("{prompt}", prompt)

