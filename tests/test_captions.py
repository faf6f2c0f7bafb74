"""Captions state the view and only what it shows, with the guideline's own words."""

import random
import re

import numpy as np
import pytest

from echovlm_jax.data import caption_augment
from echovlm_jax.echo import captions
from echovlm_jax.echo import guidelines
from echovlm_jax.echo import negation
from echovlm_jax.echo import schema
from echo_fixtures import random_cases

FULL = dict(lvef=45.0, lvidd=6.1, lvids=4.2, ivsd=1.2, lvpwd=0.8, lavi=45.0, tapse=1.5,
            rvd_basal=4.5, aortic_root=3.3, av_vmax=2.7, av_mean_gradient=15.0, tr_vmax=3.1,
            rvsp=40.0, e_e_prime=16.0, pericardial_effusion=0.5)


def test_the_issue_example():
  text = captions.make_caption("plax", {"lvidd": 6.1}, "M")
  assert text == ("This is a parasternal long axis view. The left ventricular internal "
                  "diameter in diastole is 6.1 cm, which is dilated.")


@pytest.mark.parametrize("view", schema.KNOWN_VIEWS)
def test_states_only_what_the_view_shows(view):
  for seed in range(8):
    text = captions.make_caption(view, FULL, "F", random.Random(seed))
    for name in schema.MEASUREMENTS:
      said = any(w in text for w in (schema.MEASUREMENT_INFO[name].description,
                                     schema.MEASUREMENT_INFO[name].description.capitalize(),
                                     captions.ABBREVIATIONS[name]))
      assert said == (name in schema.view_measurements(view)), (name, text)
    # Every value printed belongs to a shown measurement.
    shown = [captions.format_number(m, FULL[m], "F") for m in schema.view_measurements(view)]
    assert sorted(re.findall(r"\d+(?:\.\d+)?", text)) == sorted(shown)


def test_e_e_prime_is_in_no_view_caption():
  assert not any("e_e_prime" in schema.view_measurements(v) for v in schema.VIEWS)
  assert all("E/e'" not in captions.make_caption(v, FULL, "M") for v in schema.KNOWN_VIEWS)


@pytest.mark.parametrize("view", schema.KNOWN_VIEWS)
def test_names_the_view_even_when_nothing_is_measured(view):
  text = captions.make_caption(view, {}, "M")
  assert schema.VIEW_INFO[view].description in text
  assert text == captions.view_sentence(view)
  assert negation.negate(text) is None
  assert all(v == -1 for v in negation.caption_labels(text).values())


def test_unknown_view_states_the_whole_study_and_makes_no_view_claim():
  grades = dict(rv_function="mild", tricuspid_regurgitation="moderate", la_size="severe")
  for seed in range(10):
    stmts = captions.caption_statements("unknown", FULL, "M", random.Random(seed), grades=grades)
    text = " ".join(s.text for s in stmts)
    assert stmts[0].text in captions.UNKNOWN_VIEW_TEMPLATES and stmts[0].kind == "view"
    # Every measurement of the report, in schema order, then the grades no number overrides
    # (LAVI is measured, so the LA grade is not stated; TAPSE decides RV function).
    assert [s.states for s in stmts[1:]] == list(schema.MEASUREMENTS) + ["tricuspid_regurgitation"]
    assert not any(schema.VIEW_INFO[v].description in text for v in schema.KNOWN_VIEWS)
    assert "unknown" not in text
    # One finding per sentence, so the negated caption flips it sentence by sentence.
    assert len(caption_augment.split_statements(text)) == len(stmts)


def test_unknown_spectral_still_states_the_doppler_findings_only():
  stmts = captions.caption_statements("unknown", FULL, "F", image_kind="spectral",
                                      grades=dict(aortic_stenosis="moderate", la_size="mild"))
  assert stmts[0].text in captions.SPECTRAL_TEMPLATES
  assert [s.states for s in stmts[1:]] == ["av_vmax", "av_mean_gradient", "tr_vmax", "rvsp"]
  doppler_only = captions.caption_statements("unknown", {"tr_vmax": 2.0}, "F", image_kind="spectral",
                                             grades=dict(aortic_stenosis="moderate", la_size="mild"))
  assert [s.states for s in doppler_only[1:]] == ["tr_vmax", "aortic_stenosis"]


def test_grades_are_stated_where_no_number_decides_the_finding():
  stmts = captions.caption_statements("a4c", {"lvef": 60.0}, "F",
                                      grades=dict(rv_function="moderate", pericardial_effusion="mild",
                                                  la_size="normal", lv_wall_thickness="severe"))
  # a4c shows RV function, effusion and LA size; wall thickness is a PLAX / PSAX finding.
  assert [s.text for s in stmts[2:]] == [
      "The left atrium is normal in size.",
      "Right ventricular systolic function is moderately reduced.",
      "There is a small pericardial effusion."]


def test_unknown_names_raise():
  with pytest.raises(ValueError, match="'a6c'"):
    captions.make_caption("a6c", {}, "M")
  with pytest.raises(ValueError, match="'LVEF'"):
    captions.make_caption("plax", {"LVEF": 50.0}, "M")


def test_absent_values_are_skipped():
  text = captions.make_caption("plax", {"lvef": float("nan"), "lvidd": None, "ivsd": 0.8}, "M")
  assert "ejection" not in text and "internal diameter in diastole" not in text
  assert "interventricular septal thickness in diastole is 0.8 cm, which is normal" in text


def test_phrasings_vary_with_rng_and_are_reproducible():
  texts = {captions.make_caption("a4c", FULL, "M", random.Random(s)) for s in range(40)}
  assert len(texts) >= 10
  assert captions.make_caption("a4c", FULL, "M") == captions.make_caption("a4c", FULL, "M")
  a = captions.make_caption("a4c", FULL, "M", np.random.default_rng(3))
  assert a == captions.make_caption("a4c", FULL, "M", np.random.default_rng(3))
  assert captions.make_caption("a4c", FULL, "M", random.Random(5)) == \
      captions.make_caption("a4c", FULL, "M", random.Random(5))


@pytest.mark.parametrize("name,value,sex,printed,words", [
    ("lvef", 51.7, "M", "51.7 %", "mildly reduced"),   # "52 %" would read normal in a man
    ("lvef", 51.7, "F", "52 %", "mildly reduced"),
    ("tr_vmax", 2.84, "M", "2.84 m/s", "elevated"),     # "2.8 m/s" would read normal
    ("lvidd", 5.84, "M", "5.84 cm", "dilated"),
    ("pericardial_effusion", 0.1, "M", "0.1 cm", "a small pericardial effusion"),
    ("lavi", 34.4, None, "34.4 mL/m²", "consistent with mild left atrial enlargement"),
])
def test_printed_value_never_contradicts_its_words(name, value, sex, printed, words):
  assert captions.format_value(name, value, sex) == printed
  sentence = captions.measurement_sentence(name, value, sex)
  assert printed in sentence and words in sentence.lower()


def test_stated_interpretation_agrees_with_derive_labels():
  """Property test: parse each caption back and compare with the guideline labels."""
  n = 0
  for view, m, sex, rng in random_cases(700, seed=0):
    text = captions.make_caption(view, m, sex, rng)
    said = (schema.MEASUREMENTS if view == schema.UNKNOWN_VIEW else schema.view_measurements(view))
    shown = {k: v for k, v in m.items() if k in said}
    assert negation.caption_labels(text) == guidelines.derive_labels(shown, sex), text
    n += any(v >= 0 for v in guidelines.derive_labels(shown, sex).values())
  assert n > 300  # most cases assert something
