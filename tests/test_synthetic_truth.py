"""The synthetic renderer's dense ground truth: masks, landmarks, phases and pixel spacing
agree with the image they come with and with the patient's measurements."""

import numpy as np
import pytest
from scipy import ndimage

from echovlm_jax.data import synthetic_render
from echovlm_jax.echo import schema

NORMAL = {"lvef": 60.0, "lvidd": 5.0, "ivsd": 1.0, "lvpwd": 0.9, "lavi": 30.0}
ED_ES = np.array([schema.ED_PHASE, schema.ES_PHASE])
CAVITY, MYO, LA = (schema.STRUCTURES.index(s) for s in ("lv_cavity", "lv_myocardium", "left_atrium"))


def _render(view, seed=0, measurements=NORMAL, size=128, **kw):
  return synthetic_render.render(view, measurements, None, np.random.default_rng(seed), size,
                                 2, phases=ED_ES, overlays=False, **kw)


# psax_mid is left out: its cavity label includes the papillary muscles (as ASE's tracing
# rule includes them in the LV volume), which are bright.
@pytest.mark.parametrize("view", ["a4c", "a2c", "a3c", "plax"])
def test_the_cavity_mask_is_the_rendered_echo_free_cavity_within_a_pixel(view):
  # The image's dark region that holds the cavity mask's centre, found from pixels alone,
  # matches the mask up to its one-pixel rim (speckle and blur soften the edge), and the
  # mask is darker inside than the myocardium around it.
  for seed in range(3):
    r = _render(view, seed)
    for t in range(2):
      img, cav = r.frames[t].astype(np.float32), r.labels[t] == CAVITY
      smooth = ndimage.uniform_filter(img, 3)
      dark = smooth < 0.5 * (np.median(img[cav]) + np.median(img[r.labels[t] == MYO]))
      # only the connected dark region the cavity sits in (the LA / RV are dark too)
      comps, _ = ndimage.label(dark & ndimage.binary_dilation(cav, iterations=1))
      core = ndimage.binary_erosion(cav, iterations=1)
      region = np.isin(comps, np.unique(comps[core & dark])) & (comps > 0)
      assert (region & ~ndimage.binary_dilation(cav, iterations=1)).sum() == 0, (view, seed, t)
      missed = core & ~region
      assert missed.sum() <= 0.03 * core.sum(), (view, seed, t, missed.sum(), core.sum())
      assert np.median(img[cav]) < 0.5 * np.median(img[r.labels[t] == MYO])


def test_plax_calipers_measure_the_patients_walls_at_end_diastole():
  for seed, (lvidd, ivsd, lvpwd) in enumerate([(5.0, 1.0, 0.9), (6.2, 1.4, 1.3), (4.2, 0.8, 0.8)]):
    m = dict(NORMAL, lvidd=lvidd, ivsd=ivsd, lvpwd=lvpwd)
    r = _render("plax", seed, m, size=160)
    p = {n: r.landmarks[0, i] for i, n in enumerate(schema.LANDMARKS)}
    mm = lambda a, b: float(np.hypot(*(p[a] - p[b]))) * r.pixel_spacing_mm  # noqa: E731
    assert mm("ivs_anterior", "lv_septal_endocardium") == pytest.approx(10 * ivsd, abs=0.05)
    assert mm("lv_septal_endocardium", "lv_posterior_endocardium") == pytest.approx(10 * lvidd, abs=0.05)
    assert mm("lv_posterior_endocardium", "lvpw_epicardium") == pytest.approx(10 * lvpwd, abs=0.05)
    # ... and each point sits on its boundary in the mask: cavity between the middle two.
    for a, b, label in (("ivs_anterior", "lv_septal_endocardium", MYO),
                        ("lv_septal_endocardium", "lv_posterior_endocardium", CAVITY)):
      mid = np.rint((p[a] + p[b]) / 2).astype(int)
      assert r.labels[0][mid[0], mid[1]] == label
    # At end-systole the cavity is smaller: the LVIDs of the patient's EF (Teichholz).
    es = {n: r.landmarks[1, i] for i, n in enumerate(schema.LANDMARKS)}
    lvids = float(np.hypot(*(es["lv_septal_endocardium"] - es["lv_posterior_endocardium"]))) * r.pixel_spacing_mm
    assert lvids < 10 * lvidd - 5


# a3c / a5c draw the outflow tract over one hinge point (the aorto-mitral continuity); the
# point is still given, where the annulus is.
@pytest.mark.parametrize("view", ["a4c", "a2c"])
def test_apical_landmarks_sit_on_the_lv_outline(view):
  r = _render(view, 1)
  for t in range(2):
    lv = np.isin(r.labels[t], (CAVITY, MYO))
    cav = r.labels[t] == CAVITY
    for name in ("mitral_annulus_1", "mitral_annulus_2", "lv_apex"):
      row, col = r.landmarks[t, schema.LANDMARKS.index(name)]
      i, j = int(round(row)), int(round(col))
      near = cav[max(i - 2, 0):i + 3, max(j - 2, 0):j + 3]
      assert near.any() and not near.all(), (view, t, name)   # on the cavity's border
      assert lv[max(i - 1, 0):i + 2, max(j - 1, 0):j + 2].any(), (view, t, name)
    a1, a2, apex = (r.landmarks[t, schema.LANDMARKS.index(n)] for n in
                    ("mitral_annulus_1", "mitral_annulus_2", "lv_apex"))
    assert a1[1] < a2[1] and apex[0] < min(a1[0], a2[0])   # apex on top, annulus below
  # PLAX-only points are absent in an apical view
  assert np.isnan(r.landmarks[:, schema.LANDMARKS.index("ivs_anterior")]).all()


def test_spacing_is_the_depth_scale_and_structures_by_view():
  a4c = _render("a4c", 2, depth_cm=16.0)
  lay = synthetic_render.lay_mod.layout_for("a4c", 128, 2)
  assert a4c.pixel_spacing_mm == pytest.approx(160.0 / lay.radius)
  assert set(np.unique(a4c.labels)) == set(range(len(schema.STRUCTURES)))   # all six
  assert set(np.unique(_render("a2c", 2).labels)) == {0, CAVITY, MYO, LA}
  assert set(np.unique(_render("psax_mid", 2).labels)) == {0, CAVITY, MYO}
  fan = synthetic_render.lay_mod.polar_grid(lay)[2]
  assert not a4c.labels[:, ~fan].any()                                       # none outside
  np.testing.assert_allclose(a4c.phases, ED_ES)
  # End-systole: a smaller cavity, a thicker myocardium area kept about constant.
  ed, es = (np.bincount(a4c.labels[t].ravel(), minlength=6) for t in range(2))
  assert es[CAVITY] < 0.8 * ed[CAVITY]
  doppler = synthetic_render.render("cw_av", NORMAL, None, np.random.default_rng(0), 64, 1)
  assert not doppler.labels.any() and np.isnan(doppler.landmarks).all()
  assert np.isnan(doppler.phases).all() and np.isnan(doppler.pixel_spacing_mm)


def test_a_still_is_drawn_at_end_diastole_and_the_truth_changes_no_frame():
  still = synthetic_render.render("a4c", NORMAL, None, np.random.default_rng(4), 96, 1)
  assert still.phases.tolist() == [schema.ED_PHASE]
  again = synthetic_render.render_view("a4c", NORMAL, None, np.random.default_rng(4), 96, 1)
  np.testing.assert_array_equal(still.frames, again)
