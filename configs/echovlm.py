r"""EchoVLM: a dual encoder trained with view-informed, negation-aware and
measurement-grounded contrastive objectives on the `echoground` dataset.

  python -m echovlm_jax.main --config configs/echovlm.py:size=ti,runlocal --workdir /tmp/w
  python -m echovlm_jax.main --config configs/echovlm.py:objective=clip --config.total_steps=500 ...

Arg string keys (see `ARG_SPEC`): size (ti|s|b|l), res, frames (T > 1: clips, the video
tower), objective (see `OBJECTIVES`), runlocal (tiny smoke run), seed, temporal (how frames
combine: "" = "mean" for frames=1, "factorised" for clips; models/temporal.py), data (a
weighted mixture of builds, "site_b:0.5+synthetic:0.5": names from `SOURCE_PRESETS`, weights
after the colon; "" = config.input's one build; data/mixture.py).
"""

from __future__ import annotations

from typing import Any, Mapping

import ml_collections

from configs import common
from echovlm_jax.data import reader_options

ARG_SPEC = dict(size="ti", res=128, frames=1, objective="echovlm", runlocal=False, seed=0,
                temporal="", data="")

# The builds a `data=` mixture can name: each entry's config.input keys (data/mixture.py); what
# an entry leaves out is config.input's. "synthetic" is config.input's own build (site a);
# "site_b" a second, scarce synthetic lab (data/synthetic_sites.py), "site_b_holdout" 1,000 other
# patients of that lab to evaluate on; "mimic" MIMIC-IV-ECHO from
# --config.input.manual_dir (docs/mimic.md).
SOURCE_PRESETS = {
    "synthetic": {},
    "site_b": dict(builder_config="synthetic", synthetic_patients=150, synthetic_seed=1,
                   synthetic=dict(site="b")),
    # Other patients of the same lab, for evaluation (weight 0): its test split (~100
    # patients) measures site b far more tightly than site b's own (~15 patients).
    "site_b_holdout": dict(builder_config="synthetic", synthetic_patients=1000, synthetic_seed=2,
                           synthetic=dict(site="b")),
    "mimic": dict(builder_config="mimic"),
}


def parse_data(spec: str) -> dict[str, dict]:
  """"site_b:0.5+synthetic:0.5" -> config.input.data entries (weight 1 when left out)."""
  out = {}
  for item in filter(None, (x.strip() for x in spec.split("+"))):
    name, _, weight = item.partition(":")
    if name not in SOURCE_PRESETS:
      raise ValueError(f"data={spec!r}: unknown source {name!r}; known: "
                       f"{', '.join(SOURCE_PRESETS)} (or write config.input.data in a config file).")
    if name in out:
      raise ValueError(f"data={spec!r}: {name!r} is listed twice.")
    out[name] = dict(weight=float(weight or 1.0), split="train", **SOURCE_PRESETS[name])
  return out

# Tower sizes. `ti` is the CPU demo; `b` is ViT-B/16 with a 12-layer text transformer.
# `ti` has a 2-layer text tower: two captions per example made text most of the step's cost;
# depth 2 at 64 tokens did as well as depth 4 at 96 per step and is ~4x cheaper on CPU
# (docs/results.md).
MODEL_SIZES = {
    "ti": dict(image=dict(width=192, depth=4, heads=3), text=dict(width=192, depth=2, heads=3), embed_dim=192),
    "s": dict(image=dict(width=384, depth=12, heads=6), text=dict(width=384, depth=12, heads=6), embed_dim=384),
    "b": dict(image=dict(width=768, depth=12, heads=12), text=dict(width=512, depth=12, heads=8), embed_dim=512),
    "l": dict(image=dict(width=1024, depth=24, heads=16), text=dict(width=768, depth=12, heads=12), embed_dim=768),
}

# One flag per paper ablation: the loss switches each objective sets.
_OFF = dict(negation=False, meas_weight=0.0, meas_text_weight=0.0)
OBJECTIVES = {
    "clip": dict(kind="clip", view_mode="none", **_OFF),
    "sigmoid": dict(kind="sigmoid", view_mode="none", **_OFF),
    "view_sv": dict(kind="clip", view_mode="same_view_negatives", **_OFF),
    "view_supcon": dict(kind="clip", view_mode="view_supcon", **_OFF),
    "neg": dict(_OFF, kind="clip", view_mode="none", negation=True),
    "view_neg": dict(_OFF, kind="clip", view_mode="same_view_negatives", negation=True),
    "meas": dict(_OFF, kind="clip", view_mode="none", meas_weight=3.0),
    # The measurement head reads the caption's embedding too (docs/results.md).
    "meas_text": dict(_OFF, kind="clip", view_mode="none", meas_weight=3.0, meas_text_weight=3.0),
    # The full method uses the SupCon view term: same-view negatives never contrast captions
    # of different views, and zero-shot view accuracy collapsed (~0.2) with them.
    "echovlm": dict(kind="clip", view_mode="view_supcon", negation=True, meas_weight=3.0,
                    meas_text_weight=3.0),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, **ARG_SPEC)
  if arg.size not in MODEL_SIZES:
    raise ValueError(f"size={arg.size!r}: expected one of {', '.join(MODEL_SIZES)}.")
  if arg.objective not in OBJECTIVES:
    raise ValueError(f"objective={arg.objective!r}: expected one of {', '.join(OBJECTIVES)}.")
  c = ml_collections.ConfigDict()
  c.seed = arg.seed
  # What the one trainer trains: "contrastive" (this dual encoder) or "view_classifier"
  # (configs/view_classifier.py: the image tower and a linear head over the views).
  c.task = "contrastive"

  # --- Data -----------------------------------------------------------------
  c.input = dict(
      builder_config="synthetic",   # of the `echoground` TFDS builder; or "mimic" (manual_dir)
      data_dir="data/tfds",         # relative paths are resolved against the cwd
      manual_dir="",                # MIMIC-IV-ECHO tree for builder_config=mimic
      synthetic_patients=2000,      # size of the synthetic dataset built on first use (~45 s)
      synthetic_seed=0,
      num_shards=4,
      res=arg.res,                  # side of the frames the model sees
      # Side of the stored frames (the dataset is built at this size; the pipeline crops and
      # resizes to res). At least res: `res=N` in the arg string raises both, a lone
      # --config.input.res override beyond it fails at start.
      image_size=max(128, arg.res),
      num_frames=arg.frames,        # T: frames stored per example (a clip when > 1)
      clip_fps=15.0,                # a clip's frame rate: synthetic cines are drawn at it, MIMIC
                                    # cines sampled at its time step (16 frames ~ 1 s, one cycle
                                    # or more); 0 = T frames over one cycle / the whole file
      window=0,                     # frames the model reads per clip: training takes a random
                                    # window of this many consecutive frames, evaluation
      eval_windows=3,               # averages this many evenly spaced ones; 0 = all T frames
      frames_at="cycle",            # synthetic: "cycle" (a still at end-diastole; T frames over a
                                    # cycle) or "ed_es" (T = 2: end-diastole, end-systole; the
                                    # dense tasks', configs/segmentation.py)
      max_text_len=64,              # ~94 % of PLAX / PSAX captions are longer: see fit_statements
      vocab_size=1024,
      shuffle_buffer=4096,
      prefetch=2,
      augment=True,                 # frames: crop, gamma, gain; captions: the three below
      caption_subsample=0.5,        # fraction of training captions cut to a random subset of
      statement_keep=0.5,           # their statements (each kept with this probability)
      fit_statements=True,          # too-long training captions drop random statements, not their
                                    # tail (data/caption_augment.py)
      # What a training image of unknown view is paired with: "sentence" (its study sentence
      # only: the report states findings the image may not show) or "report" (the study's
      # whole report, EchoCLIP-style); docs/results.md, "Demo targets after issue 20".
      unknown_view_text="sentence",
      tokenizer="",                 # "" = the dataset's sentencepiece; an HF tokenizer dir (set
                                    # from model_init by interop.init_from_checkpoint.configure)
      # builder_config=synthetic: the views of the unlabelled majority, simulated (docs/results.md,
      # "Pretraining on a view classifier's labels"); builder_config=mimic: what the reader takes
      # from manual_dir (docs/mimic.md). Each option is declared once, with its meaning, in
      # echovlm_jax/data/reader_options.py.
      synthetic=reader_options.as_config(reader_options.SyntheticViewOptions()),
      mimic=reader_options.as_config(reader_options.MimicOptions()),
      # A weighted mixture of builds (data/mixture.py): name -> {weight, split, and the keys
      # above that choose its build}; {} = the one build above. Set by the arg `data=`.
      data=parse_data(arg.data),
  )

  # --- Model ----------------------------------------------------------------
  size = MODEL_SIZES[arg.size]
  # Block variants (models/layers.block_options): ours; model_init sets CLIP's / SigLIP's.
  block = dict(act="gelu_tanh", ln_eps=1e-6, qkv_bias=False, mlp_dim=0, proj="dense")
  c.model = dict(
      image=dict(patch=16, mlp_ratio=4, pool="map", channels=1, ln_pre=False, **block,
                 # How a clip's frames combine (models/temporal.py): "mean" of the per-frame
                 # features, or "factorised" (a transformer over time, identity at init).
                 temporal=arg.temporal or ("factorised" if arg.frames > 1 else "mean"),
                 temporal_depth=2,
                 **size["image"]),
      text=dict(mlp_ratio=4, pool="eos", causal=False, pad_mask=True, pad_id=0, eos_id=1,
                **block, **size["text"]),
      embed_dim=size["embed_dim"],
      dtype="float32",              # compute dtype; parameters stay float32
      attention_impl="",            # jax.nn.dot_product_attention: "" (XLA) | "cudnn" (GPU, bf16)
      remat=False,
      scan_layers=False,
      init_temperature=10.0,        # logit scale s = exp(t), t stored as a log
      init_bias=-10.0,              # sigmoid loss bias
      meas_hidden=256,
  )
  # The model's learned position tables are sized from the input; references keep them in step
  # with --config.input.res / --config.input.max_text_len overrides.
  c.model.image.res = c.input.get_ref("res")
  c.model.image.frames = c.input.get_ref("num_frames")   # the temporal position table
  c.model.text.max_len = c.input.get_ref("max_text_len")

  # Initialise the towers from pretrained weights (echovlm_jax/interop/, docs/artifacts.md):
  # a Hugging Face CLIP / SigLIP directory, an open_clip state dict or a big_vision .npz; it sets
  # the architecture, text length and tokenizer. "" = from scratch.
  c.model_init = ""
  c.model_init_format = "auto"      # "auto" | "big_vision" | "open_clip" | "hf_clip" | "hf_siglip"
  c.model_init_skip = ""            # comma-separated regexes of checkpoint names to drop knowingly
  c.model_init_act = ""             # "" = the checkpoint's; "gelu" for LAION open_clip weights
  c.model.vocab_size = 0            # 0 = the tokenizer's; model_init: the checkpoint's rows
  c.lr_mult = dict(image=1.0, text=1.0)  # per-tower lr multipliers; 0 freezes (train/tower_lr.py)

  # --- Objectives -----------------------------------------------------------
  c.loss = dict(
      view_weight=0.5,              # lambda_view for view_supcon
      negation_weight=1.0,          # lambda_neg for the pairwise negation term
      huber_delta=1.0,
      sigmoid_ring=False,           # chunked ring variant of the sigmoid loss
      **OBJECTIVES[arg.objective],
  )

  # --- Optimisation ---------------------------------------------------------
  c.total_steps = 1500              # the CPU demo: ~18 min on 2 idle cores, dataset and evals included
  c.batch_size = 64                 # global batch
  c.lr = 1e-3
  c.wd = 0.05
  # What weight decay reaches, by what a parameter is (echovlm_jax/train/weight_decay.py): a
  # comma-separated subset of kernel, embedding, norm, bias, scalar. Norms, biases, the
  # temperature and the sigmoid bias are never decayed by default.
  c.wd_kinds = "kernel,embedding"
  c.b1, c.b2 = 0.9, 0.98
  c.warmup_steps = 100
  c.grad_clip_norm = 1.0
  c.grad_accum_steps = 1

  # --- Mesh and sharding ----------------------------------------------------
  c.mesh = dict(data=-1, fsdp=1, tensor=1)
  # A rule's mesh axis that does not divide a parameter's dim (3 heads on tensor=2) leaves that
  # parameter partly replicated: False warns at start listing them, True stops the run.
  c.sharding_strict = False
  # Logical axis name -> mesh axes. Activations' batch goes over (data, fsdp).
  c.sharding_rules = [
      ("batch", ("data", "fsdp")),
      ("embed", "fsdp"),
      ("mlp", "tensor"),
      ("heads", "tensor"),
      ("kv", None),
      ("vocab", "tensor"),
      ("length", None),
      ("time", None),
      ("patch", None),
      ("meas", None),
  ]

  # --- Logging, checkpoints, evaluation -------------------------------------
  c.log_every = 20
  c.ckpt_every = 250
  c.keep_ckpts = 3
  c.eval_batch_size = 0             # global batch of the evaluators' embedding pass; 0 = batch_size
  # Evaluators (echovlm_jax/evaluation/registry.py): name -> {type, split, every}; every <= 0 =
  # only at the last step. Evaluators of one split share one embedding pass per step; metrics
  # are logged as "<split>/<type>/<metric>" (validation -> "val").
  # A mixture evaluates each source on its own splits (`source`, metrics
  # "<split>/<source>/<type>/..."); the study pooling only its first source's (the artifact's).
  c.evals = ml_collections.ConfigDict()
  mixed = sorted(c.input.data) or [""]   # name order, as data/mixture.py numbers the sources
  for src in mixed:
    at = dict(source=src) if src else {}
    tail = f"_{src}" if src else ""
    for split, every in (("validation", 750), ("test", 0)):
      for kind in ("zero_shot_views", "zero_shot_findings", "retrieval", "negation"):
        c.evals[f"{split}_{kind}{tail}"] = dict(type=kind, split=split, every=every, **at)
    # Probes fit on the train split's embeddings: only at the end (they embed the train split);
    # train_max_batches > 0 caps how many batches of it they embed (0 = all).
    c.evals[f"test_probes{tail}"] = dict(type="probes", split="test", every=0,
                                         train_split="train", train_max_batches=0, **at)
  # Study embeddings: attention pooling with per-view weights fitted on the train split's
  # embeddings (the probes' pass, cached), beside the plain mean (evaluation/study_pooling.py).
  c.evals.test_study = dict(type="study_pooling", split="test", every=0, train_split="train",
                            train_max_batches=0, **(dict(source=mixed[0]) if mixed[0] else {}))
  # What the report compares against, per input.builder_config: evaluator type -> metric ->
  # target (the demo's, on the synthetic data). A builder config with no entry (mimic) gets no
  # targets column; add one (e.g. the paper's 0.951 / 0.865) to compare a MIMIC run.
  c.report_targets = dict(synthetic=dict(zero_shot_views=dict(accuracy=0.95),
                                         zero_shot_findings=dict(macro_auc=0.90),
                                         negation=dict(sensitivity=0.90)))

  # --- Fault injection (tests) ----------------------------------------------
  c.debug_nan_step = 0              # > 0: make this step non-finite to test the clean stop
  c.debug_nan_target = "frames"     # "frames": NaN inputs (NaN loss); "grads": NaN gradient only

  if arg.runlocal:
    c.input.synthetic_patients = 40
    c.input.num_shards = 2
    c.input.shuffle_buffer = 256
    c.input.data_dir = "data/tfds_runlocal"
    c.total_steps = 10
    c.batch_size = 16
    c.warmup_steps = 2
    c.log_every = 2
    c.ckpt_every = 5
    for name in c.evals:
      if c.evals[name].every > 0:
        c.evals[name].every = 5

  c.lock()
  return c


# Name -> entry maps: a stored config keeps its own entries (filling them would add evaluators).
_MAPS = ("evals", "report_targets")
# Keys whose absence from a stored config means something other than today's default: runs
# from before the text side of the measurement head existed trained without it.
# Clips from before clips had a frame rate were drawn over one cycle.
_ABSENT_MEANT = dict(loss=dict(meas_text_weight=0.0), input=dict(clip_fps=0.0))


def with_defaults(stored: Mapping[str, Any], default: Mapping[str, Any] | None = None
                  ) -> dict[str, Any]:
  """`stored` (a config written to disk: a workdir's or an artifact's config.json, perhaps by
  an older version that lacked a key) with each key it lacks taken from get_config() (or from
  `default`, a part of it); sub-configs are filled key by key, `evals` and `report_targets`
  stay as stored. Readers of stored configs call this once where they read the file, so the
  code after it reads every declared key without a fallback."""
  if default is None:
    default = get_config().to_dict()
    default["loss"].update(_ABSENT_MEANT["loss"])
    default["input"].update(_ABSENT_MEANT["input"])
  out = dict(stored)
  for k, v in default.items():
    if k not in out:
      out[k] = v
    elif isinstance(v, Mapping) and isinstance(out[k], Mapping) and k not in _MAPS:
      out[k] = with_defaults(out[k], v)
  return out
