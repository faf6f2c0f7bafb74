"""Weighted mixtures of builds (config.input.data, data/mixture.py, data/mixture_iterator.py) and
the second synthetic lab they are measured with (data/synthetic_sites.py): real TFDS builds of
two tiny sites, one sentencepiece over both, batches in proportion, exact resume, and a run
that trains on both and reports each."""

from __future__ import annotations

import json
import os

import jax
import ml_collections
import numpy as np
import pytest

from configs import echovlm
from echovlm_jax import distributed
from echovlm_jax.data import artifacts
from echovlm_jax.data import build
from echovlm_jax.data import input_pipeline
from echovlm_jax.data import mixture
from echovlm_jax.data import mixture_iterator
from echovlm_jax.data import synthetic
from echovlm_jax.data import synthetic_layout
from echovlm_jax.data import tokenizer as tokenizer_lib
from echovlm_jax.echo import schema
from echovlm_jax.evaluation import registry
from tests import echoground_fixtures
from tests import train_tiny_config

# Site b as the tiny fixture's size (the `site_b` preset has 150 patients).
SITE_B = dict(synthetic_patients=12, synthetic_seed=1, synthetic=dict(site="b"))


def _with_data(ic: ml_collections.ConfigDict, **entries) -> ml_collections.ConfigDict:
  ic = ml_collections.ConfigDict(ic.to_dict())
  ic.data = ml_collections.ConfigDict(entries)
  return ic


@pytest.fixture(scope="module")
def two_sites(tmp_path_factory):
  """config.input of a 3:1 mixture of tiny site a and tiny site b, both built, with the
  problem the mixture had before its shared files were written."""
  ic = echoground_fixtures.tiny_input_config(tmp_path_factory.mktemp("tfds_mix"))
  ic = _with_data(ic, a=dict(weight=3.0), b=dict(weight=1.0, **SITE_B))
  for s in mixture.sources(ic):
    build.ensure_dataset(s.input_config)
  before = mixture.problem(ic)
  build.ensure_dataset(ic)
  return ic, before


@pytest.fixture(scope="module")
def mesh():
  return distributed.create_mesh(dict(data=-1, fsdp=1, tensor=1))


# --- The second lab --------------------------------------------------------------------------

def test_site_a_is_the_default_dataset_and_site_b_differs_as_declared():
  a = list(synthetic.patient_records(0, 3, image_size=64))
  default = list(synthetic.patient_records(0, 3, image_size=64, site="a"))
  assert [k for k, _ in a] == [k for k, _ in default]
  assert all(np.array_equal(x["frames"], y["frames"]) for (_, x), (_, y) in zip(a, default))

  def phenotypes(site):
    return [synthetic.sample_patient(np.random.default_rng(i), site) for i in range(400)]
  pa, pb = phenotypes("a"), phenotypes("b")
  healthy = lambda ps: np.mean(["healthy" in p["phenotypes"] for p in ps])
  assert healthy(pb) < 0.5 * healthy(pa)                       # a sicker population
  assert np.mean([p["bsa"] for p in pb]) > np.mean([p["bsa"] for p in pa]) + 0.05  # heavier
  records_b = [r for _, r in synthetic.generate_records(6, 1, image_size=64, site="b")]
  assert all("lavi" not in r["measurements"] for r in records_b)  # never reported there
  assert any("lavi" in r["measurements"] for _, r in synthetic.generate_records(6, 1, image_size=64))
  # A narrower sector: fewer pixels in the fan.
  fan = lambda deg: synthetic_layout.polar_grid(synthetic_layout.layout_for("a4c", 64, 2, deg))[2].sum()
  assert fan(28.0) < 0.85 * fan(35.0)


def test_site_b_is_named_apart_and_a_bad_site_names_the_key(tmp_path):
  ic = echoground_fixtures.tiny_input_config(tmp_path)
  assert "site" not in build.builder_config_for(ic).name
  ic.synthetic.site = "b"
  assert build.builder_config_for(ic).name.endswith("_siteb_f15")
  ic.synthetic.site = "c"
  with pytest.raises(ValueError, match=r"config\.input\.synthetic\.site='c'"):
    build.builder_config_for(ic)


# --- Configuration ---------------------------------------------------------------------------

def test_the_data_arg_makes_weighted_entries_and_per_source_evaluators():
  c = echovlm.get_config("data=site_b:0.25+synthetic:0.75")
  srcs = mixture.sources(c.input)
  assert [(s.name, s.index, s.weight) for s in srcs] == [("site_b", 0, 0.25), ("synthetic", 1, 0.75)]
  assert srcs[0].input_config["synthetic"] == {"site": "b"}
  assert srcs[0].input_config["synthetic_patients"] == 150
  assert srcs[1].input_config["synthetic_patients"] == c.input.synthetic_patients
  assert c.evals.test_zero_shot_views_site_b.source == "site_b"
  assert c.evals.test_study.source == "site_b"    # the first source's: the artifact's
  assert registry.metric_prefix(c.evals.test_negation_synthetic) == "test/synthetic/negation"
  assert mixture.sources(echovlm.get_config().input)[0].name == ""   # one build: no mixture
  with pytest.raises(ValueError, match="unknown source 'sitex'"):
    echovlm.get_config("data=sitex:1")


def test_bad_entries_fail_naming_the_key(tmp_path):
  ic = echoground_fixtures.tiny_input_config(tmp_path)
  with pytest.raises(ValueError, match=r"config\.input\.data\.b: unknown key\(s\) \['res'\]"):
    mixture.sources(_with_data(ic, a={}, b=dict(res=64)))
  with pytest.raises(ValueError, match=r"config\.input\.data\.b\.weight=-1\.0"):
    mixture.sources(_with_data(ic, a={}, b=dict(weight=-1.0)))
  with pytest.raises(ValueError, match="every weight is 0"):
    mixture.sources(_with_data(ic, a=dict(weight=0.0), b=dict(weight=0.0)))
  evals = {"v": dict(type="negation", split="test", source="c")}
  with pytest.raises(ValueError, match=r"config\.evals\.v\.source='c'"):
    registry.check_eval_sources(evals, _with_data(ic, a={}, b={}))


def test_pooled_stats_are_the_stats_of_all_studies_together():
  rng = np.random.default_rng(0)
  m = len(schema.MEASUREMENTS)
  a, b = rng.normal(3, 1, (50, m)), rng.normal(5, 2, (20, m))
  a[rng.random(a.shape) < 0.2] = np.nan
  b[:, 0] = np.nan                               # a measurement one site never has
  pooled = mixture.pooled_stats([artifacts.measurement_stats(a), artifacts.measurement_stats(b)])
  whole = artifacts.measurement_stats(np.concatenate([a, b]))
  for k in ("mean", "std"):
    np.testing.assert_allclose([pooled[k][n] for n in schema.MEASUREMENTS],
                               [whole[k][n] for n in schema.MEASUREMENTS], rtol=1e-9)
  assert pooled["count"] == whole["count"]


# --- One tokenizer ---------------------------------------------------------------------------

def test_one_tokenizer_over_both_sites_and_a_refusal_before_it(two_sites, tmp_path):
  ic, before = two_sites
  assert "not built" in before
  d = mixture.mixture_dir(ic)
  manifest = json.loads(open(os.path.join(d, mixture.MANIFEST_FILENAME)).read())
  assert [b["dataset"] for b in manifest["builds"]] == sorted(
      build.builder_config_for(s.input_config).name for s in mixture.sources(ic))
  # The union: the sentencepiece trained on both sites' training captions, in build order.
  texts = []
  for s in sorted(mixture.sources(ic), key=lambda s: build.builder_config_for(s.input_config).name):
    ds = build.get_builder(s.input_config).as_dataset(split="train", shuffle_files=False)
    texts += [t.decode() for ex in ds.as_numpy_iterator()
              for t in (ex["caption"], ex["negated_caption"])]
  union = tokenizer_lib.Tokenizer(tokenizer_lib.train_tokenizer(texts, int(ic.vocab_size)))
  assert input_pipeline.load_tokenizer(ic).model_proto == union.model_proto
  one_site = input_pipeline.load_tokenizer(mixture.sources(ic)[0].input_config)
  assert one_site.model_proto != union.model_proto
  # Reweighting keeps the tokenizer; other sources (another site b) are refused.
  assert mixture.mixture_dir(_with_data(ic, a=dict(weight=1.0), b=dict(weight=9.0, **SITE_B))) == d
  other = _with_data(ic, a={}, b=dict(SITE_B, synthetic_patients=13))
  with pytest.raises(FileNotFoundError, match="one tokenizer over their union.*echovlm_jax.data.build"):
    input_pipeline.load_tokenizer(other)


# --- Batches ---------------------------------------------------------------------------------

def test_batches_hold_both_sources_in_proportion_with_absent_fields_masked(two_sites, mesh):
  ic, _ = two_sites
  it = mixture_iterator.make_train_iterator(ic, 8, mesh, seed=0)
  assert isinstance(it, mixture_iterator.MixtureTrainIterator)
  with pytest.raises(ValueError, match="mixture_iterator.make_train_iterator"):
    input_pipeline.make_train_iterator(ic, 8, mesh, seed=0)   # never the first source alone
  batches = [jax.device_get(next(it)) for _ in range(25)]
  src = np.concatenate([b["source"] for b in batches])
  # 200 draws at p = 1/4: 3.5 standard deviations either side.
  assert abs(src.mean() - 0.25) < 3.5 * np.sqrt(0.25 * 0.75 / src.size)
  # Exactly the draws `consumed` counts without reading anything.
  np.testing.assert_array_equal(mixture_iterator.consumed(it.weights, 0, 0, src.size),
                                np.bincount(src, minlength=2))
  lavi = schema.MEASUREMENTS.index("lavi")
  mask = np.concatenate([b["meas_mask"] for b in batches])
  assert mask[src == 1, lavi].sum() == 0 and mask[src == 0, lavi].sum() > 0
  text = np.concatenate([b["text"] for b in batches])
  assert (text[src == 1] > 0).any(axis=1).all()   # site b's captions are tokenized too


def test_resuming_mid_mixture_gives_the_uninterrupted_batches(two_sites, mesh, monkeypatch):
  ic, _ = two_sites
  # Rounds of 4 batches: the whole run and the resumed one cut the stream at other places.
  monkeypatch.setattr(mixture_iterator, "ROUND_STEPS", 4)
  ic = _with_data(ic, a=dict(weight=1.0), b=dict(weight=1.0, **SITE_B))
  whole = mixture_iterator.make_train_iterator(ic, 8, mesh, seed=3)
  expected = [jax.device_get(next(whole)) for _ in range(14)]   # past site b's first epoch
  n_b = int(np.concatenate([b["source"] for b in expected]).sum())
  assert n_b > input_pipeline.num_examples(ic, "train", "b")
  resumed = mixture_iterator.make_train_iterator(ic, 8, mesh, seed=3, start_step=9)
  for want in expected[9:]:
    got = jax.device_get(next(resumed))
    for k in want:
      np.testing.assert_array_equal(got[k], want[k], err_msg=k)
  assert resumed.position == 14


# --- End to end ------------------------------------------------------------------------------

def _mixture_run_config(ic, **overrides):
  c = train_tiny_config.get_config()   # the tiny builds of `two_sites`, read at 32 px
  with c.unlocked():
    c.input.data_dir = ic.data_dir
    c.input.data = ml_collections.ConfigDict(ic.data.to_dict())
    c.ckpt_every = 4
    c.update(overrides)
    c.evals = ml_collections.ConfigDict({
        f"test_views_{s}": dict(type="zero_shot_views", split="test", every=0, source=s)
        for s in ("a", "b")})
  return c


@pytest.mark.slow
def test_a_mixture_trains_resumes_with_the_same_losses_and_reports_each_source(two_sites, tmp_path):
  from echovlm_jax.train import loop  # pylint: disable=g-import-not-at-top
  from echovlm_jax.train import metrics_log  # pylint: disable=g-import-not-at-top
  from echovlm_jax.train.step import NonFiniteLossError  # pylint: disable=g-import-not-at-top
  ic, _ = two_sites
  wd = str(tmp_path / "run")

  def losses():
    rows = metrics_log.read_metrics_history(wd)
    return {int(r["step"]): r["train/loss"] for r in rows if "train/loss" in r}

  # Killed mid-mixture: a NaN at step 8 stops it after steps 5-7 ran past the step-4 checkpoint.
  with pytest.raises(NonFiniteLossError):
    loop.train_and_evaluate(_mixture_run_config(ic, debug_nan_step=8), wd)
  uninterrupted = losses()
  assert sorted(uninterrupted) == list(range(1, 8))
  # Resumed from step 4: steps 5-7 again, on the same batches, then step 8 and the evaluation.
  last = loop.train_and_evaluate(_mixture_run_config(ic), wd)
  resumed = losses()
  assert sorted(resumed) == list(range(1, 9))
  np.testing.assert_allclose([resumed[s] for s in (5, 6, 7)],
                             [uninterrupted[s] for s in (5, 6, 7)], rtol=1e-5)
  for s in ("a", "b"):
    assert 0.0 <= last[f"test/{s}/zero_shot_views/accuracy"] <= 1.0
    assert np.isfinite(last[f"loss/{s}/total"]) and last[f"loss/{s}/contrastive"] > 0
  report = open(os.path.join(wd, "report.md")).read()
  assert "test split of a" in report and "test split of b" in report
  assert "## Training losses by source" in report and "| b | " in report
  # The artifact carries the mixture's tokenizer, which a user of it needs for every source.
  from echovlm_jax.inference import artifact  # pylint: disable=g-import-not-at-top
  from echovlm_jax.tools import export  # pylint: disable=g-import-not-at-top
  out = export.export(wd, str(tmp_path / "artifact"))
  shared = mixture.mixture_dir(ic)
  for name, ours in ((artifact.TOKENIZER_FILE, tokenizer_lib.TOKENIZER_FILENAME),
                     (artifact.STATS_FILE, artifacts.STATS_FILENAME)):
    assert open(os.path.join(out, name), "rb").read() == open(os.path.join(shared, ours), "rb").read()
  assert "a weighted mixture of builds" in open(os.path.join(out, "README.md")).read()


def test_a_source_of_weight_zero_is_only_evaluated(two_sites, mesh):
  ic, _ = two_sites
  only_b = _with_data(ic, a=dict(weight=0.0), b=dict(weight=1.0, **SITE_B))
  assert mixture.mixture_dir(only_b) == mixture.mixture_dir(ic)   # the same tokenizer
  it = mixture_iterator.make_train_iterator(only_b, 8, mesh, seed=0)
  assert all((jax.device_get(next(it))["source"] == 1).all() for _ in range(3))
  test_a = next(input_pipeline.make_eval_iterator(only_b, "test", 8, mesh, source="a"))
  assert (jax.device_get(test_a["source"]) == 0).all()
