"""run_evals end to end: a randomly initialised tiny DualEncoder on the 8-device mesh over
padded eval batches of the documented shapes (docs/design.md, "Batches"), every evaluator
type, one embedding pass per split, metrics checked against tests/eval_reference.py."""

import os

import numpy as np
import pytest

from configs import echovlm
from echovlm_jax import distributed, sharding
from echovlm_jax.data import tokenizer as tok_lib
from echovlm_jax.echo import schema
from echovlm_jax.evaluation import embeddings, registry
from echovlm_jax.models import factory
from tests import eval_reference

CAPTIONS = [
    "Apical four-chamber view. Left ventricular ejection fraction is 35 %, moderately reduced.",
    "Apical four-chamber view. Normal left ventricular ejection fraction.",
    "Parasternal long axis view. The left ventricle is dilated.",
    "Continuous-wave Doppler through the aortic valve. Severe aortic stenosis.",
    "Subcostal four-chamber view. No pericardial effusion.",
]
SPLIT_SIZES = {"train": 45, "test": 37}   # 37 = 2 full batches of 16 + 5 real rows and 11 pad


def _tiny_config():
  c = echovlm.get_config("size=ti,res=32")
  c.input.max_text_len = 48
  c.model.image.update(width=32, depth=1, heads=2)
  c.model.text.update(width=32, depth=1, heads=2)
  c.model.embed_dim = 16
  c.model.meas_hidden = 8
  c.batch_size = 16
  return c


def _split_examples(split, tokenizer, max_len):
  n = SPLIT_SIZES[split]
  rng = np.random.default_rng(len(split))
  caps = [CAPTIONS[i % len(CAPTIONS)] for i in range(n)]
  m, k = len(schema.MEASUREMENTS), len(schema.LABELS)
  return dict(
      frames=rng.uniform(-1, 1, size=(n, 1, 32, 32, 1)).astype(np.float32),
      text=tokenizer.encode_batch(caps, max_len),
      neg_text=tokenizer.encode_batch([c.replace("Normal", "Reduced") for c in caps], max_len),
      has_negation=(np.arange(n) % 2).astype(np.float32),
      view=rng.integers(0, len(schema.VIEWS), size=n).astype(np.int32),
      measurements=rng.normal(size=(n, m)).astype(np.float32),
      meas_mask=np.ones((n, m), np.float32),
      labels=rng.integers(-1, 2, size=(n, k)).astype(np.int32),
      study_id=(np.arange(n) // 3).astype(np.int32),
  )


class FakeEvalData:
  """make_eval_iterator stand-in: padded global batches with `valid`; counts passes."""

  def __init__(self, tokenizer, max_len):
    self.examples = {s: _split_examples(s, tokenizer, max_len) for s in SPLIT_SIZES}
    self.calls = []

  def __call__(self, input_config, split, batch_size, mesh):
    self.calls.append(split)
    ex, n = self.examples[split], SPLIT_SIZES[split]
    for s in range(0, n, batch_size):
      b = {k: v[s:s + batch_size] for k, v in ex.items()}
      real = len(b["view"])
      pad = batch_size - real
      b = {k: np.concatenate([v, np.zeros((pad, *v.shape[1:]), v.dtype)]) for k, v in b.items()}
      b["valid"] = (np.arange(batch_size) < real).astype(np.float32)
      yield b


@pytest.fixture(scope="module")
def setup():
  import jax  # after conftest set the fake devices
  config = _tiny_config()
  corpus = CAPTIONS * 10 + [d.description for d in schema.VIEW_INFO.values()] * 3
  tokenizer = tok_lib.Tokenizer(tok_lib.train_tokenizer(corpus, vocab_size=120))
  mesh = distributed.create_mesh({"data": -1, "fsdp": 1, "tensor": 1})
  model = sharding.create_sharded(
      factory.dual_encoder(config.model, vocab_size=tokenizer.vocab_size), mesh,
      config.sharding_rules)
  assert jax.device_count() == 8
  return config, tokenizer, mesh, model


@pytest.mark.slow
def test_embeddings_drop_padding_and_see_each_example_once(setup):
  config, tokenizer, mesh, model = setup
  data = FakeEvalData(tokenizer, config.input.max_text_len)
  emb = embeddings.compute_embeddings(model, data(config.input, "test", 16, mesh), mesh)
  ex = data.examples["test"]
  assert emb["image_emb"].shape == (37, 16)
  np.testing.assert_array_equal(emb["study_id"], ex["study_id"])
  np.testing.assert_array_equal(emb["view"], ex["view"])
  np.testing.assert_allclose(np.linalg.norm(emb["text_emb"], axis=1), 1.0, rtol=1e-5)
  # The sharded, batched pass equals encoding the same images in one unsharded call.
  direct = np.asarray(model.encode_image(ex["frames"]))
  np.testing.assert_allclose(emb["image_emb"], direct, atol=2e-5)
  assert len(np.unique(emb["caption_id"])) == len(CAPTIONS)


@pytest.mark.slow
def test_run_evals_all_types_share_one_pass_per_split(setup, tmp_path):
  config, tokenizer, mesh, model = setup
  data = FakeEvalData(tokenizer, config.input.max_text_len)
  evals = {t: dict(type=t, split="test", every=10) for t in registry.EVALUATORS}
  cache = {}
  kw = dict(batch_size=16, make_iterator=data, meas_std=np.full(len(schema.MEASUREMENTS), 2.0))
  flat, details = registry.run_evals_with_details(
      evals, model, 10, mesh, config.input, tokenizer, cache, **kw)
  assert sorted(data.calls) == ["test", "train"]           # probes add the train split, once
  for key in ("test/zero_shot_views/accuracy", "test/zero_shot_views/balanced_accuracy",
              "test/zero_shot_findings/macro_auc", "test/zero_shot_findings/study_macro_auc",
              "test/retrieval/i2t_r1", "test/retrieval/t2i_median_rank",
              "test/negation/sensitivity", "test/probes/view_accuracy", "test/probes/mae/lvef",
              "test/study_pooling/mean/macro_auc", "test/study_pooling/attention/i2t_r1"):
    assert key in flat, key
  # The headline numbers equal an independent NumPy computation on the same embeddings, with
  # echo/prompts.py's classes encoded eagerly, one text at a time.
  eval_reference.check(flat, "test", cache[("embeddings", "test", None, None, 10)],
                       eval_reference.prompt_classes(model, tokenizer, config.input.max_text_len),
                       cache[("prompts", 10)])
  assert details["probes"]["measurements"]["lvef"]["unit"] == "%"
  # Again at step 10 (e.g. the final eval then the report): the cache serves the embeddings.
  again = registry.run_evals(evals, model, 10, mesh, config.input, tokenizer, cache, **kw)
  assert len(data.calls) == 2 and again.keys() == flat.keys()
  np.testing.assert_allclose([again[k] for k in flat], list(flat.values()))  # NaN == NaN here
  # Nothing is due at step 11, and the stale step-10 embeddings are released.
  assert registry.run_evals(evals, model, 11, mesh, config.input, tokenizer, cache, **kw) == {}
  assert cache == {}

  from echovlm_jax.evaluation import report
  path = report.write_report(str(tmp_path), details, [{"step": 10, "train/loss": 1.0}])
  assert os.path.exists(path) and os.path.exists(tmp_path / "report" / "roc_test.png")
  assert "Study embeddings" in open(path).read()
  fitted = np.load(tmp_path / "report" / report.STUDY_POOLING_FILE)
  assert fitted["w"].shape == (len(schema.LABELS) + 1, len(schema.KNOWN_VIEWS))


def test_evals_config_errors_name_the_entry():
  with pytest.raises(ValueError, match="config.evals.bad.type"):
    registry.check_evals_config({"bad": dict(type="nope", split="test")})
  with pytest.raises(ValueError, match="collide"):
    registry.check_evals_config({"a": dict(type="negation", split="test"),
                                 "b": dict(type="negation", split="test", every=5)})
  assert registry.is_due(dict(every=0), 7, last_step=True)
  assert not registry.is_due(dict(every=0), 7)
  assert registry.is_due(dict(every=5), 10) and not registry.is_due(dict(every=5), 11)
  assert set(registry.EVALUATORS) == {"zero_shot_views", "zero_shot_findings", "retrieval",
                                      "negation", "probes", "study_pooling"}
  config = echovlm.get_config("runlocal")
  registry.check_evals_config(config.evals)
  # The trainer's per-step question: runlocal evaluates validation every 5 steps, test at the end.
  evaluator = registry.Evaluator(config, mesh=None, tokenizer=None, meas_std=np.ones(1))
  assert evaluator.due(5) and evaluator.due(7, last_step=True) and not evaluator.due(7)


@pytest.mark.slow
def test_evaluator_on_the_real_input_pipeline(tiny_echoground, tmp_path):
  """The trainer's path: Evaluator over make_eval_iterator of the tiny built dataset."""
  from echovlm_jax.data import input_pipeline
  ic, _ = tiny_echoground
  config = _tiny_config()
  config.input = ic
  config.model.image.update(patch=8)
  config.model.image.res = ic.res
  config.model.text.max_len = ic.max_text_len
  config.batch_size = 8
  config.evals = {"views": dict(type="zero_shot_views", split="test", every=0),
                  "findings": dict(type="zero_shot_findings", split="test", every=0),
                  "negation": dict(type="negation", split="test", every=0),
                  "probes": dict(type="probes", split="test", every=0, train_split="validation")}
  tokenizer = input_pipeline.load_tokenizer(ic)
  mesh = distributed.create_mesh({"data": -1, "fsdp": 1, "tensor": 1})
  model = sharding.create_sharded(
      factory.dual_encoder(config.model, vocab_size=tokenizer.vocab_size), mesh,
      config.sharding_rules)
  evaluator = registry.Evaluator(config, mesh, tokenizer)
  np.testing.assert_allclose(evaluator.meas_std, input_pipeline.load_measurement_stats(ic)[1])
  assert evaluator.maybe_run(model, 3) == {}                 # every=0: only at the last step
  flat = evaluator.maybe_run(model, 4, last_step=True)
  assert "test/probes/mae/lvef" in flat
  # Every test example embedded exactly once (padding dropped).
  emb = next(v for k, v in evaluator.cache.items() if k[:2] == ("embeddings", "test"))
  assert len(emb["view"]) == input_pipeline.num_examples(ic, "test")
  eval_reference.check(flat, "test", emb,
                       eval_reference.prompt_classes(model, tokenizer, ic.max_text_len),
                       evaluator.cache[("prompts", 4)])
  path = evaluator.write_report(str(tmp_path), [{"step": 4, "train/loss": 2.0}])
  assert "Findings (zero-shot)" in open(path).read()
