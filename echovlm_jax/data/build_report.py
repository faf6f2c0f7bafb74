"""The build report (`build_report.json` beside the dataset): what came through and what did not.

`coverage(examples)` summarises the examples written: per canonical measurement and per grade
how many studies have it, views by source, the share of unknown views, image kinds, labels
and how often a grade and a number of the same finding disagreed (the number wins).
`group_counts` sorts a reader's prefixed counters ("skip:...", "value:...") into sections;
`format_report` prints the summary a build ends with.
"""

from __future__ import annotations

import collections
from typing import Any, Iterable, Mapping, NamedTuple

import numpy as np

from echovlm_jax.echo import guidelines
from echovlm_jax.echo import schema


class ExampleSummary(NamedTuple):
  """What the report needs of one example (no frames, no text)."""
  study_id: int
  sex: str
  view: str
  view_source: str
  image_kind: str
  measurements: np.ndarray   # float32 [M], NaN = absent
  grades: np.ndarray         # int8 [G], -1 = absent
  labels: np.ndarray         # int8 [K]


def _grade_label(g: int, severity: int) -> int:
  return int(severity >= schema.GRADE_INFO[schema.GRADES[g]].threshold)


def coverage(examples: Iterable[ExampleSummary]) -> dict[str, Any]:
  examples = list(examples)
  studies: dict[int, ExampleSummary] = {}
  for e in examples:
    studies.setdefault(e.study_id, e)
  meas = {m: 0 for m in schema.MEASUREMENTS}
  grades = {g: collections.Counter() for g in schema.GRADES}
  agree = collections.Counter()
  labels = {l: collections.Counter() for l in schema.LABELS}
  for s in studies.values():
    present = {m: float(v) for m, v in zip(schema.MEASUREMENTS, s.measurements) if np.isfinite(v)}
    for m in present:
      meas[m] += 1
    numeric = guidelines.derive_labels(present, s.sex or None)
    for g, sev in enumerate(s.grades):
      if sev < 0:
        continue
      name = schema.GRADES[g]
      grades[name][schema.SEVERITIES[sev]] += 1
      label = schema.GRADE_INFO[name].label
      if numeric.get(label, -1) != -1:
        key = "agree" if numeric[label] == _grade_label(g, sev) else "disagree"
        agree[f"{label}:{key}"] += 1
    for k, l in enumerate(schema.LABELS):
      labels[l][{1: "present", 0: "absent", -1: "unknown"}[int(s.labels[k])]] += 1
  n = len(examples)
  unknown = sum(e.view == schema.UNKNOWN_VIEW for e in examples)
  return {
      "studies": len(studies),
      "studies_with_measurement": meas,
      "studies_with_grade": {g: dict(c, total=sum(c.values())) for g, c in grades.items()},
      "grade_vs_number": {
          "rule": "where a study has both, the guideline cut-off on the number decides the label",
          "studies": dict(sorted(agree.items()))},
      "study_labels": {l: dict(c) for l, c in labels.items()},
      "views_by_source": dict(collections.Counter(e.view_source for e in examples)),
      "views": dict(collections.Counter(e.view for e in examples)),
      "unknown_view_share": round(unknown / n, 4) if n else None,
      "image_kinds": dict(collections.Counter(e.image_kind for e in examples)),
  }


def group_counts(counts: Mapping[str, int]) -> dict[str, dict[str, int]]:
  """{"skip:missing_file": 2, "rows:numeric": 9, "other": 1} -> {"skip": {"missing_file": 2},
  "rows": {"numeric": 9}, "other": {"other": 1}}."""
  out: dict[str, dict[str, int]] = collections.defaultdict(dict)
  for k, v in sorted(counts.items()):
    section, _, rest = k.partition(":")
    if rest:
      out[section][rest] = v
    else:
      out["other"][k] = v
  return dict(out)


def format_report(report: Mapping[str, Any]) -> str:
  """A short human summary of a build report, printed at the end of a build."""
  lines = [f"echoground/{report['config']}: read {report['records_read']} source records, "
           f"wrote {sum(report['examples'].values())} examples "
           f"({', '.join(f'{k} {v}' for k, v in report['examples'].items())}; patients "
           f"{', '.join(f'{k} {v}' for k, v in report['patients'].items())})."]
  cov = report.get("coverage") or {}
  if cov:
    lines.append(f"Views by source: {cov['views_by_source']}; unknown view share "
                 f"{cov['unknown_view_share']}; image kinds {cov['image_kinds']}.")
    lines.append(f"Studies {cov['studies']}; with each measurement: " + ", ".join(
        f"{k}={v}" for k, v in cov["studies_with_measurement"].items() if v))
    graded = {g: c["total"] for g, c in cov["studies_with_grade"].items() if c["total"]}
    if graded:
      lines.append("With each grade: " + ", ".join(f"{k}={v}" for k, v in graded.items()))
    if cov["grade_vs_number"]["studies"]:
      lines.append(f"Grade vs number (studies): {cov['grade_vs_number']['studies']}")
  sections = dict(report.get("source_counts") or {})
  for title, key in (("Records skipped", "records_skipped"), ("Values recorded as absent", "values_dropped")):
    if report.get(key):
      sections[title] = report[key]
  for title, counts in sections.items():
    if isinstance(counts, Mapping) and counts:
      lines.append(f"{title}: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
  return "\n".join(lines)
