"""The synthetic echo renderer: determinism, record contract, label balance, and that the
pixels carry what the captions will say (sizes, EF, velocities), overlays outside the data."""

import collections

import numpy as np
import pytest

from echovlm_jax.data import synthetic
from echovlm_jax.echo import schema

try:
  from echovlm_jax.echo.guidelines import derive_labels
except ImportError:  # pragma: no cover - guidelines.py is written by another helper
  derive_labels = None

NORMAL = dict(lvef=60.0, lvidd=4.8, ivsd=0.9, lvpwd=0.9, lavi=28.0, tapse=2.2, rvd_basal=3.6,
              aortic_root=3.2, av_vmax=1.3, tr_vmax=2.4, pericardial_effusion=0.0)


def _spearman(a, b):
  ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
  return float(np.corrcoef(ra, rb)[0, 1])


def test_deterministic_and_independent_of_patient_count():
  a = list(synthetic.generate_records(3, seed=7, image_size=64))
  b = list(synthetic.generate_records(3, seed=7, image_size=64))
  assert [k for k, _ in a] == [k for k, _ in b]
  for (_, ra), (_, rb) in zip(a, b):
    assert ra["frames"].tobytes() == rb["frames"].tobytes()
    assert ra["measurements"] == rb["measurements"] and ra["view"] == rb["view"]
  alone = list(synthetic.patient_records(7, 2, image_size=64))
  last = [(k, r) for k, r in a if r["patient_key"] == synthetic.patient_key(7, 2)]
  assert [k for k, _ in alone] == [k for k, _ in last]
  assert all(x["frames"].tobytes() == y["frames"].tobytes() for (_, x), (_, y) in zip(alone, last))
  other = list(synthetic.generate_records(1, seed=8, image_size=64))
  assert other[0][1]["frames"].tobytes() != a[0][1]["frames"].tobytes()


@pytest.mark.parametrize("size,frames", [(64, 1), (96, 3)])
def test_record_contract(size, frames):
  recs = list(synthetic.generate_records(4, seed=1, image_size=size, num_frames=frames))
  keys = [k for k, _ in recs]
  assert len(keys) == len(set(keys)) and len(recs) >= 4 * 4
  for _, r in recs:
    assert set(r) == {"frames", "view", "drawn_view", "view_source", "view_confidence",
                      "image_kind", "measurements", "sex", "patient_key", "study_key", "source",
                      "dense_truth", "masks", "landmarks", "phases", "pixel_spacing_mm"}
    assert r["dense_truth"] == (r["image_kind"] == "2d")
    assert r["masks"].shape == (frames, size, size) and r["masks"].dtype == np.uint8
    known = r["view"] != schema.UNKNOWN_VIEW
    assert r["drawn_view"] in schema.KNOWN_VIEWS and r["view"] in (r["drawn_view"], "unknown")
    assert (r["view_source"], r["view_confidence"]) == (("synthetic", 1.0) if known else ("none", 0.0))
    assert r["image_kind"] in ("2d", "spectral")
    if known:
      assert (r["image_kind"] == "spectral") == (schema.VIEW_INFO[r["view"]].kind == "doppler")
    assert r["frames"].dtype == np.uint8 and r["frames"].shape == (frames, size, size)
    assert r["view"] in schema.VIEWS and r["sex"] in ("M", "F") and r["source"] == "synthetic"
    assert r["study_key"].startswith(r["patient_key"])
    schema.check_measurement_names(r["measurements"])
    assert r["frames"].std() > 10   # an image, not a blank
  by_study = collections.defaultdict(set)
  for _, r in recs:
    by_study[r["study_key"]].add(r["view"])
  assert all(4 <= len(v) <= 7 for v in by_study.values())


def test_view_coverage_missingness_and_plausible_values():
  views, present, total = collections.Counter(), 0, 0
  for _, r in synthetic.generate_records(40, seed=3, image_size=32):
    views[r["view"]] += 1
    for k, v in r["measurements"].items():
      assert schema.is_plausible(k, v), (k, v)
    present += len(r["measurements"])
    total += len(schema.MEASUREMENTS)
  assert set(views) == set(schema.VIEWS), views
  n = sum(views.values())
  assert 0.005 < views["unknown"] / n < 0.08
  assert 0.8 < present / total < 0.97         # ~10 % of measurements missing


def _labels(m, sex):
  if derive_labels is not None:
    return derive_labels(m, sex)
  male = sex == "M"
  cut = lambda k, f: int(f(m[k])) if k in m else -1
  return {"lv_systolic_dysfunction": cut("lvef", lambda v: v < (52 if male else 54)),
          "lv_dilation": cut("lvidd", lambda v: v > (5.8 if male else 5.2)),
          "pericardial_effusion": cut("pericardial_effusion", lambda v: v >= 0.1)}


def test_every_label_has_both_classes_in_80_patients():
  counts = collections.defaultdict(collections.Counter)
  for i in range(80):
    rng = np.random.default_rng(np.random.SeedSequence([11, i]))
    p = synthetic.sample_patient(rng)
    m = synthetic._study_measurements(p["true"], rng, first=True)
    for k, v in m.items():
      assert schema.is_plausible(k, v), (k, v)
    for label, v in _labels(m, p["sex"]).items():
      counts[label][v] += 1
  for label, c in counts.items():
    assert 0.15 <= c[1] / 80 <= 0.6, (label, c)


def test_cavity_area_tracks_lvidd_at_fixed_depth():
  sizes = np.linspace(3.8, 7.2, 10)
  areas = []
  lay = synthetic.synthetic_render.lay_mod.layout_for("psax_mid", 128, 1)
  fan = synthetic.synthetic_render.lay_mod.polar_grid(lay)[2]
  for i, d in enumerate(sizes):
    m = dict(NORMAL, lvidd=float(d))
    img = synthetic.render_view("psax_mid", m, "M", np.random.default_rng(i), 128, 1, depth_cm=18.0)
    areas.append(int(((img[0] < 0.4 * np.median(img[0][fan])) & fan).sum()))
  assert _spearman(sizes, areas) > 0.85, areas


def test_mmode_wall_excursion_tracks_ef():
  efs = np.linspace(15, 75, 10)
  swings = []
  for i, ef in enumerate(efs):
    m = dict(NORMAL, lvef=float(ef))
    img = synthetic.render_view("psax_mid", m, "M", np.random.default_rng(i), 128, 1)[0]
    r0, r1, c0, c1 = synthetic.synthetic_render.lay_mod.layout_for("psax_mid", 128, 1).strip
    dark = (img[r0:r1, c0 + 2:c1] < 45).sum(axis=0)      # cavity width per time column
    swings.append((np.percentile(dark, 95) - np.percentile(dark, 5)) / np.percentile(dark, 95))
  assert _spearman(efs, swings) > 0.85, swings


@pytest.mark.parametrize("view,key", [("cw_av", "av_vmax"), ("cw_tr", "tr_vmax")])
def test_doppler_envelope_depth_tracks_velocity(view, key):
  vs = np.linspace(1.0, 5.0, 9)
  depths = []
  r0, r1, c0, c1 = synthetic.synthetic_render.lay_mod.layout_for(view, 128).strip
  for i, v in enumerate(vs):
    img = synthetic.render_view(view, {key: float(v)}, None, np.random.default_rng(i), 128,
                                velocity_scale=6)[0, r0:r1, c0:c1]
    rows = np.nonzero((img > 90).mean(axis=1) > 0.02)[0]
    depths.append(rows.max())
  assert _spearman(vs, depths) > 0.95, depths
  # Scale: the envelope's bottom sits at vmax on the drawn 0..6 m/s axis.
  h = r1 - r0
  base = int(0.14 * h)
  expected = base + vs * (h - base - 2) / 6
  assert np.abs(np.array(depths) - expected).max() < 0.06 * h


def test_mean_gradient_consistent_with_vmax():
  for v in (1.0, 2.5, 4.0):
    mg = synthetic.synthetic_render.mean_gradient("cw_av", v)
    assert 1.8 * v ** 2 < mg < 3.0 * v ** 2


@pytest.mark.parametrize("size", [96, 128])
@pytest.mark.parametrize("view", schema.KNOWN_VIEWS)
def test_overlays_lie_outside_the_ultrasound_region(view, size):
  mask = synthetic.sector_mask(view, size)
  with_ov = synthetic.render_view(view, NORMAL, "F", np.random.default_rng(5), size)
  without = synthetic.render_view(view, NORMAL, "F", np.random.default_rng(5), size, overlays=False)
  diff = with_ov[0] != without[0]
  assert not diff[mask].any()
  assert diff[~mask].sum() > 0.01 * size * size    # text, scales and the ECG are there
  assert (without[0][~mask] == 0).all()            # nothing else outside the data region


def test_clip_lv_area_change_tracks_ef():
  efs = np.linspace(15, 75, 8)
  changes = []
  fan = synthetic.synthetic_render.lay_mod.polar_grid(
      synthetic.synthetic_render.lay_mod.layout_for("psax_mid", 96, 8))[2]
  for i, ef in enumerate(efs):
    clip = synthetic.render_view("psax_mid", dict(NORMAL, lvef=float(ef)), "M",
                                 np.random.default_rng(i), 96, 8, depth_cm=16.0)
    area = ((clip < 40) & fan).sum(axis=(1, 2))
    changes.append((area.max() - area.min()) / area.max())
  assert _spearman(efs, changes) > 0.85, changes
