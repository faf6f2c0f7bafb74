"""benchmarks/ablations.py: the table's mean ± std and the results.md block it rewrites."""

import importlib.util
import math
import os

import pytest

_PATH = os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks", "ablations.py")
_spec = importlib.util.spec_from_file_location("ablations", _PATH)
ablations = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ablations)

VIEW = "test/zero_shot_views/accuracy"


def _run(objective, seed, view, steps=10):
  return dict(objective=objective, seed=seed, steps=steps, wall_s=30.0, metrics={VIEW: view})


def test_mean_std_is_sample_std_and_skips_nan():
  assert ablations._mean_std([0.5, 0.7]) == pytest.approx((0.6, math.sqrt(0.02)))
  assert ablations._mean_std([0.5, math.nan]) == (0.5, 0.0)
  m, sd = ablations._mean_std([math.nan])
  assert m != m and sd != sd


def test_table_one_row_per_objective_in_run_order():
  runs = [_run("clip", 0, 0.5), _run("echovlm", 0, 0.9), _run("clip", 1, 0.7)]
  lines = ablations.table(runs).splitlines()
  assert len(lines) == 4 and lines[0].startswith("| objective | seeds | view acc |")
  assert lines[2].startswith("| clip | 2 | 0.600 ± 0.141 |")
  assert lines[3].startswith("| echovlm | 1 | 0.900 ± 0.000 |")
  assert "n/a" in lines[2]  # metrics a run did not log


def test_write_results_replaces_only_the_generated_block(tmp_path):
  path = tmp_path / "results.md"
  path.write_text(f"# R\n\nintro\n\n{ablations.BEGIN}\nold\n{ablations.END}\n\nafter\n")
  ablations.write_results(str(path), [_run("clip", 0, 0.5)], "python benchmarks/ablations.py", 90.0)
  text = path.read_text()
  assert text.startswith("# R\n\nintro\n\n") and text.endswith("\n\nafter\n")
  assert "old" not in text and "| clip | 1 | 0.500 ± 0.000 |" in text and "1.5 min" in text
  fresh = tmp_path / "new.md"
  ablations.write_results(str(fresh), [_run("clip", 0, 0.5)], "cmd", 60.0)
  assert fresh.read_text().count(ablations.BEGIN) == 1
