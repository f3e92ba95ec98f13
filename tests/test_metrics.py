"""metrics.jsonl on resume: the lines written after the resumed checkpoint are cut, never doubled."""
import json

from r1jax.metrics import MetricsWriter, read_metrics


def _steps(workdir):
  with open(workdir / "metrics.jsonl") as f:
    return [json.loads(line)["step"] for line in f]


def test_resume_cuts_at_the_checkpoints_offset(tmp_path):
  w = MetricsWriter(str(tmp_path), tensorboard=False)
  w.write(1, {"loss": 1.0})
  w.write(2, {"loss": 0.5})
  offset = w.offset()  # saved with the step-2 checkpoint
  w.write(2, {"eval/pass@1": 0.1})  # written after the checkpoint (say, an eval), then killed
  w.write(3, {"loss": 0.25})
  w = MetricsWriter(str(tmp_path), tensorboard=False, resume_step=2, resume_offset=offset)
  assert _steps(tmp_path) == [1, 2]
  w.write(2, {"eval/pass@1": 0.1})
  w.write(3, {"loss": 0.25})
  assert _steps(tmp_path) == [1, 2, 2, 3]
  assert [r["step"] for r in read_metrics(str(tmp_path))] == [1, 2, 2, 3]


def test_resume_without_offset_drops_later_steps_and_a_fresh_start_clears(tmp_path):
  w = MetricsWriter(str(tmp_path), tensorboard=False)
  for step in (1, 2, 3):
    w.write(step, {"loss": 1.0 / step})
  MetricsWriter(str(tmp_path), tensorboard=False, resume_step=2)  # an older checkpoint
  assert _steps(tmp_path) == [1, 2]
  MetricsWriter(str(tmp_path), tensorboard=False, resume_step=0)  # no checkpoint: start over
  assert _steps(tmp_path) == []
  MetricsWriter(str(tmp_path), tensorboard=False, resume_step=0, resume_offset=0)
  assert _steps(tmp_path) == []
