"""How well could an image show each size-based label? AUCs from exact drawn quantities.

  .venv/bin/python benchmarks/label_ceiling.py --patients 3000

The synthetic renderer draws the LA from LAVI x BSA and the walls from IVSd / LVPWd; the
image shows neither BSA nor sex (whose wall cut-offs differ). This samples patients and
their first study exactly as the dataset does and prints, per label, the AUC of the quantity
an ideal reader of the image would measure. Values near 1 mean the label is visible in
principle; what a model reaches is then a question of resolution, depth scale and training.
"""

from __future__ import annotations

import argparse

import numpy as np
from sklearn.metrics import roc_auc_score

from echovlm_jax.data import synthetic
from echovlm_jax.echo import guidelines


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--patients", type=int, default=3000)
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args()
  rows = []
  for i in range(args.patients):
    rng = np.random.default_rng(np.random.SeedSequence([args.seed, i]))  # as patient_records
    patient = synthetic.sample_patient(rng)
    rows.append((patient, synthetic._study_measurements(patient["true"], rng, first=True)))

  def label(name, m, sex):
    return bool(guidelines.is_abnormal(name, m[name], sex))

  checks = {
      "la_enlargement: LA volume drawn (LAVI x BSA, BSA unseen)": (
          [label("lavi", m, p["sex"]) for p, m in rows], [m["lavi"] * p["bsa"] for p, m in rows]),
      "lv_hypertrophy: thicker wall (sex unseen)": (
          [label("ivsd", m, p["sex"]) or label("lvpwd", m, p["sex"]) for p, m in rows],
          [max(m["ivsd"], m["lvpwd"]) for p, m in rows]),
      "rv_dilation: RV basal diameter": (
          [label("rvd_basal", m, p["sex"]) for p, m in rows], [m["rvd_basal"] for p, m in rows]),
  }
  print(f"{args.patients} patients, seed {args.seed}")
  for name, (y, score) in checks.items():
    print(f"{name:60s} positives {np.mean(y):.2f}  AUC {roc_auc_score(y, score):.3f}")


if __name__ == "__main__":
  main()
