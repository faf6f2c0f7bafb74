"""Reads which findings a caption or report sentence asserts, and flips them.

`caption_labels` parses captions (captions.py) and common echo-report wording into labels;
`negate` rewrites every finding to its opposite: present <-> absent, abnormal <-> normal,
and numeric statements to a counterfactual value across the guideline cut-off.
"""

from __future__ import annotations

import dataclasses
import random
import re
import zlib
from typing import Callable

from echovlm_jax.echo import captions
from echovlm_jax.echo import guidelines
from echovlm_jax.echo import schema

_FLAGS = re.IGNORECASE
_NUM = r"(?P<num>\d+(?:\.\d+)?)"
_UNIT = r"(?:\s*(?P<unit>%|percent|mL/m²|mL/m2|mm\s?Hg|cm/s|m/s|cm|mm)(?![A-Za-z]))?"
_ADV = (r"(?:(?:mildly|moderately|severely|markedly|slightly|minimally|"
        r"mild(?:ly)?\s+to\s+moderately|moderately\s+to\s+severely)\s+)?")


def _alt(words) -> str:
  """Regex alternation, longest first so "LV systolic function" beats "LV"."""
  return "|".join(re.escape(w).replace(r"\ ", r"\s+") for w in sorted(set(words), key=len, reverse=True))


def _norm_unit(unit: str) -> str:
  return unit.lower().replace(" ", "").replace("²", "2").replace("percent", "%")


# ---------------------------------------------------------------------------------------
# Measurement statements: "<alias> [is] [<number> <unit>][, which is] <phrase>".
# ---------------------------------------------------------------------------------------

_EXTRA_ALIASES = {
    "lvidd": ["LVEDD", "LV internal diameter in diastole", "LV end-diastolic diameter",
              "left ventricular end-diastolic diameter"],
    "ivsd": ["interventricular septal thickness", "septal thickness", "IVS thickness"],
    "lvpwd": ["posterior wall thickness", "LV posterior wall thickness",
              "left ventricular posterior wall thickness"],
    "lavi": ["LA volume index", "left atrial volume indexed"],
    "rvd_basal": ["basal RV diameter", "RV basal diameter"],
    "lvef": ["LV ejection fraction", "ejection fraction", "EF", "estimated ejection fraction",
             "estimated LVEF"],
    "av_vmax": ["aortic valve peak velocity", "peak aortic velocity", "peak AV velocity",
                "aortic Vmax"],
    "av_mean_gradient": ["mean AV gradient", "aortic valve mean gradient", "mean gradient",
                         "mean transaortic gradient"],
    "tr_vmax": ["peak TR velocity", "TR velocity", "tricuspid regurgitation velocity",
                "tricuspid regurgitation peak velocity", "TR peak velocity", "TR jet velocity",
                "tricuspid regurgitant jet velocity", "peak tricuspid regurgitant velocity"],
    "rvsp": ["PASP", "pulmonary artery systolic pressure",
             "estimated pulmonary artery systolic pressure"],
    "e_e_prime": ["E/e'", "E/e′", "E/e’", "average E/e'"],
}
_SYNONYMS = {  # (normal, abnormal) words a report may use beside the caption words
    "lvef": (["preserved"], ["depressed", "impaired", "decreased"]),
    "tapse": (["preserved"], ["depressed", "impaired", "decreased"]),
    "lvidd": (["not dilated"], ["enlarged"]),
    "rvd_basal": (["not dilated"], ["enlarged"]),
    "ivsd": (["not increased"], ["thickened"]),
    "lvpwd": (["not increased"], ["thickened"]),
    "lavi": (["not increased"], ["increased", "enlarged"]),
    "av_vmax": ([], ["increased", "elevated"]),
    "av_mean_gradient": (["normal"], ["increased", "elevated"]),
    "tr_vmax": (["not elevated"], ["increased"]),
    "rvsp": (["not elevated"], ["increased"]),
    "e_e_prime": (["not elevated"], ["increased"]),
}
_ADVERBS = ("", "mildly ", "moderately ", "severely ")
_GAP = r"[\s:=,]+(?:(?:is|was|are|measures|measured|measuring|of|at|estimated|calculated|approximately|about)[\s:=,]+){0,3}"
_CONNECTOR = (r"\s*(?:[,(:;]\s*)?(?:(?:which|that)\s+(?:is|was)\s+|"
              r"(?:and|indicating|suggesting|suggestive\s+of)\s+(?:is\s+)?)?")
# What a report says a value implies ("3.6 m/s, suggesting pulmonary hypertension"), as
# (abnormal regex, normal regex, abnormal words, normal words) for the flipped statement.
# "consistent with" belongs to the phrase (the caption words of lavi / AV already start so).
_WITH = r"(?:(?:consistent|compatible)\s+with\s+)?"
_SEV = r"(?:(?:mild|moderate|severe|significant|mild\s+to\s+moderate|moderate\s+to\s+severe)\s+)?"
_PH = r"pulmonary\s+(?:arterial\s+)?hypertension"
_AS = r"aortic\s+(?:valve\s+)?stenosis"
_FP = r"(?:left\s+ventricular\s+|LV\s+)?filling\s+pressures?"
CONSEQUENCES: dict[str, tuple[str, str, str, str]] = {
    "tr_vmax": (_WITH + _SEV + _PH, _WITH + r"no\s+(?:evidence\s+of\s+)?" + _PH, "pulmonary hypertension",
                "no pulmonary hypertension"),
    "rvsp": (_WITH + _SEV + _PH, _WITH + r"no\s+(?:evidence\s+of\s+)?" + _PH, "pulmonary hypertension",
             "no pulmonary hypertension"),
    "av_vmax": (_SEV + _AS, r"no\s+(?:significant\s+)?" + _AS, "aortic stenosis",
                "no aortic stenosis"),
    "av_mean_gradient": (_SEV + _AS, r"no\s+(?:significant\s+)?" + _AS, "aortic stenosis",
                         "no aortic stenosis"),
    "e_e_prime": (_WITH + r"(?:elevated|increased|raised)\s+" + _FP, _WITH + r"normal\s+" + _FP,
                  "elevated filling pressure", "normal filling pressure"),
}

# Counterfactual ranges (normal, abnormal) per graded measurement: values drawn here and
# kept only when M, F and unknown sex all read them the same, so the flipped caption is
# right whatever the (unstated) sex.
COUNTERFACTUAL_RANGES: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "lvef": ((55.0, 70.0), (15.0, 50.0)),
    "lvidd": ((4.0, 5.1), (5.9, 7.5)),
    "ivsd": ((0.6, 0.9), (1.1, 2.0)),
    "lvpwd": ((0.6, 0.9), (1.1, 2.0)),
    "lavi": ((18.0, 33.0), (36.0, 70.0)),
    "tapse": ((1.8, 2.8), (0.8, 1.6)),
    "rvd_basal": ((2.5, 4.0), (4.3, 5.5)),
    "av_vmax": ((1.0, 2.4), (2.7, 5.0)),
    "av_mean_gradient": ((3.0, 15.0), (22.0, 60.0)),
    "tr_vmax": ((1.8, 2.6), (3.0, 4.5)),
    "rvsp": ((18.0, 32.0), (40.0, 80.0)),
    "e_e_prime": ((5.0, 12.0), (15.0, 25.0)),
    "pericardial_effusion": ((0.0, 0.0), (0.2, 2.5)),
}


def counterfactual_value(name: str, abnormal: bool, rng: random.Random) -> float:
  """A value of `name` read as `abnormal` (and with one grade) for every sex."""
  lo, hi = COUNTERFACTUAL_RANGES[name][int(abnormal)]
  d = captions.DECIMALS[name]
  candidates = [round(rng.uniform(lo, hi), d) for _ in range(32)]
  candidates += [round(lo + (hi - lo) * i / 16, d) for i in range(17)]  # deterministic backup
  for v in candidates:
    reads = {guidelines.interpret(name, v, s) for s in ("M", "F", None)}
    if len(reads) == 1 and next(iter(reads)).abnormal == abnormal:
      return v
  raise AssertionError(f"negation.py: COUNTERFACTUAL_RANGES[{name!r}] has no sex-independent value")


def _measurement_regex(name: str) -> re.Pattern:
  normal, abnormal = guidelines.phrases(name)
  rule = guidelines.RULES[name]
  syn_normal, syn_abnormal = _SYNONYMS.get(name, ([], []))
  normal = list(normal) + syn_normal + ["normal", "within normal limits"]
  if " " not in rule.generic_abnormal:
    normal.append("not " + rule.generic_abnormal)
  abnormal = list(abnormal) + [rule.generic_abnormal]
  abnormal += [a + w for a in _ADVERBS for w in syn_abnormal + [rule.generic_abnormal]
               if " " not in w]
  abn, norm = _alt(abnormal), _alt(normal)
  if name in CONSEQUENCES:
    abn, norm = f"{CONSEQUENCES[name][0]}|{abn}", f"{CONSEQUENCES[name][1]}|{norm}"
  return re.compile(
      rf"(?<![\w/'])(?P<alias>{_alt(_aliases(name))})(?![\w'′’])(?P<gap>{_GAP})"
      rf"(?:{_NUM}{_UNIT}(?P<conn>{_CONNECTOR}))?"
      rf"(?:(?P<abn>{abn})|(?P<norm>{norm}))(?![\w-])", _FLAGS)


def _aliases(name: str) -> list[str]:
  return [schema.MEASUREMENT_INFO[name].description, captions.ABBREVIATIONS[name],
          *_EXTRA_ALIASES.get(name, [])]


def _value_regex(name: str) -> re.Pattern:
  """A value stated without words ("an estimated ejection fraction of 60 %"): its reading
  comes from the cut-off, so the number itself is the finding."""
  return re.compile(rf"(?<![\w/'])(?P<alias>{_alt(_aliases(name))})(?![\w'′’])(?P<gap>{_GAP})"
                    rf"{_NUM}{_UNIT}(?![\w.]*\d)", _FLAGS)


_MEASUREMENT_RES = {m: _measurement_regex(m) for m in guidelines.RULES
                    if m != "pericardial_effusion"}
_VALUE_RES = {m: _value_regex(m) for m in _MEASUREMENT_RES}


# ---------------------------------------------------------------------------------------
# Disease nouns: "[a] [mild] aortic stenosis" / "no aortic stenosis" / "... is absent".
# ---------------------------------------------------------------------------------------

_DISEASES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (r"pericardial\s+effusion", ("pericardial_effusion",)),
    (r"aortic\s+(?:valve\s+)?stenosis", ("aortic_stenosis",)),
    (r"pulmonary\s+(?:arterial\s+)?hypertension", ("pulmonary_hypertension",)),
    (r"(?:left\s+ventricular|LV)\s+hypertrophy|LVH", ("lv_hypertrophy",)),
    (r"(?:left\s+atrial|LA)\s+(?:enlargement|dilat(?:at)?ion)", ("la_enlargement",)),
    (r"(?:left\s+ventricular|LV)\s+(?:enlargement|dilat(?:at)?ion)", ("lv_dilation",)),
    (r"(?:right\s+ventricular|RV)\s+(?:enlargement|dilat(?:at)?ion)", ("rv_dilation",)),
    (r"(?:left\s+ventricular|LV)\s+(?:systolic\s+)?dysfunction", ("lv_systolic_dysfunction",)),
    (r"(?:right\s+ventricular|RV)\s+(?:systolic\s+)?dysfunction", ("rv_dysfunction",)),
    (r"biventricular\s+(?:systolic\s+)?dysfunction", ("lv_systolic_dysfunction", "rv_dysfunction")),
    # Grade-only findings (echo/schema.py GRADES): flipped like the others, no label of their own.
    (r"tricuspid\s+(?:valve\s+)?regurgitation", ("tricuspid_regurgitation",)),
    (r"mitral\s+(?:valve\s+)?regurgitation", ("mitral_regurgitation",)),
    (r"aortic\s+(?:valve\s+)?regurgitation", ("aortic_regurgitation",)),
)
_QUAL = (r"(?:(?:mild|moderate|severe|small|large|trivial|trace|minimal|significant|critical|"
         r"mild\s+to\s+moderate|moderate\s+to\s+severe|small\s+to\s+moderate|moderate\s+to\s+large|concentric|eccentric|asymmetric|"
         r"circumferential|loculated|small-sized|moderate-sized|large-sized)\s+)*")
_GRADE_WORDS = (r"(?:mild|moderate|severe|small|large|trivial|trace|minimal|significant|"
                r"mild\s+to\s+moderate|moderate\s+to\s+severe|small\s+to\s+moderate|"
                r"moderate\s+to\s+large)")
_VALUE = rf"(?:\s+(?:of|measuring)\s+{_NUM}{_UNIT}|\s*\(\s*{_NUM.replace('num', 'num2')}" \
         rf"{_UNIT.replace('unit', 'unit2')}\s*\))?"
_ABSENT_CUES = {"no evidence of": "evidence of", "without evidence of": "with evidence of",
                "absence of": "presence of", "negative for": "positive for",
                "without": "with", "no": ""}
_PRESENT_CUES = {v: k for k, v in _ABSENT_CUES.items() if v and k != "without"}
_ABSENT_POST = {"absent": "present", "not present": "present", "not seen": "seen",
                "not identified": "identified", "not noted": "noted",
                "not visualized": "visualized", "not demonstrated": "demonstrated"}
# Words after which a present-form disease noun may be rewritten to "no <disease>"
# ("There is a small ...", "with mild ..."); after anything else ("the", an unknown
# adjective) the rewrite could read wrongly, so the finding is left alone.
_SAFE_BEFORE = re.compile(r"(?:^|[,;:(]|\b(?:is|was|are|were|with|and|also|shows|"
                          r"demonstrates|reveals|there\s+is|there\s+was))\s*$", _FLAGS)


def _disease_regexes(pattern: str) -> dict[str, re.Pattern]:
  d = rf"(?P<dis>{pattern})(?![\w-])"
  return dict(
      absent_pre=re.compile(rf"(?<![\w-])(?P<cue>{_alt(_ABSENT_CUES)})\s+(?P<qual>{_QUAL}){d}", _FLAGS),
      present_pre=re.compile(rf"(?<![\w-])(?P<cue>{_alt(_PRESENT_CUES)})\s+(?:(?:a|an)\s+)?"
                             rf"(?P<qual>{_QUAL}){d}{_VALUE}", _FLAGS),
      absent_post=re.compile(rf"(?<![\w-]){d}\s+(?:is|was)\s+(?P<post>{_alt(_ABSENT_POST)})(?![\w-])", _FLAGS),
      # "Tricuspid regurgitation is moderate.": graded after a copula.
      present_post=re.compile(rf"(?<![\w-]){d}\s+(?:is|was)\s+(?P<grade>{_GRADE_WORDS})(?![\w-])", _FLAGS),
      # Not before a copula and a grade: that is present_post's.
      present=re.compile(rf"(?<![\w-])(?P<det>(?:a|an)\s+)?(?P<qual>{_QUAL}){d}{_VALUE}"
                         rf"(?!\s+(?:is|was)\s+{_GRADE_WORDS}(?![\w-]))", _FLAGS),
  )


_DISEASE_RES = [(labels, _disease_regexes(p)) for p, labels in _DISEASES]


# ---------------------------------------------------------------------------------------
# Chamber / function adjectives: "Mildly dilated left atrium.", "RV function is normal."
# ---------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Kind:
  abnormal: str   # regex of abnormal words (after an optional grade adverb)
  normal: str     # regex of normal words
  abnormal_word: str
  normal_word: str


_KINDS = {
    "size": _Kind(r"dilated|enlarged", r"normal(?:\s+in\s+size|-sized|\s+sized|\s+size)?|"
                  r"not\s+dilated|not\s+enlarged|within\s+normal\s+limits", "dilated", "normal"),
    "function": _Kind(r"reduced|depressed|decreased|impaired",
                      r"low[-\s]normal|normal|preserved|not\s+reduced|within\s+normal\s+limits",
                      "reduced", "normal"),
    "wall": _Kind(r"increased|thickened", r"normal|not\s+increased|not\s+thickened|"
                  r"within\s+normal\s+limits", "increased", "normal"),
    "pressure": _Kind(r"elevated|increased", r"normal|not\s+elevated|within\s+normal\s+limits",
                      "elevated", "normal"),
}
# (kind, labels, subject phrases); a bare "systolic function" is resolved by side below.
_SUBJECTS = (
    ("size", ("lv_dilation",), ["left ventricle", "left ventricular size", "left ventricular cavity",
                                "left ventricular cavity size", "LV", "LV size", "LV cavity",
                                "LV cavity size", "left ventricular chamber size"]),
    ("size", ("la_enlargement",), ["left atrium", "left atrial size", "LA", "LA size",
                                   "left atrial volume", "LA volume"]),
    ("size", ("rv_dilation",), ["right ventricle", "right ventricular size", "RV", "RV size",
                                "right ventricular cavity", "RV cavity size",
                                "right ventricular cavity size"]),
    ("size", ("ra_enlargement",), ["right atrium", "right atrial size", "RA", "RA size"]),
    ("function", ("lv_systolic_dysfunction",),
     ["left ventricular systolic function", "left ventricular function", "LV systolic function",
      "LV function", "left ventricular ejection fraction", "ejection fraction", "LVEF", "EF",
      "left ventricular systolic performance"]),
    ("function", ("rv_dysfunction",),
     ["right ventricular systolic function", "right ventricular function", "RV systolic function",
      "RV function"]),
    ("function", ("lv_systolic_dysfunction", "rv_dysfunction"),
     ["biventricular systolic function", "biventricular function"]),
    ("function", ("side",), ["systolic function"]),
    ("wall", ("lv_hypertrophy",), ["left ventricular wall thickness", "LV wall thickness",
                                   "wall thickness", "septal thickness"]),
    ("pressure", ("pulmonary_hypertension",),
     ["pulmonary artery pressure", "pulmonary artery pressures", "pulmonary artery systolic pressure",
      "pulmonary pressure", "pulmonary pressures", "PA pressure", "PA pressures",
      "right ventricular systolic pressure", "RVSP", "PASP"]),
    ("pressure", ("elevated_filling_pressure",),
     ["left ventricular filling pressure", "left ventricular filling pressures",
      "LV filling pressure", "LV filling pressures", "filling pressure", "filling pressures",
      "left atrial pressure"]),
)
_COPULA = r"(?:\s*:\s*|\s+(?:(?:is|are|was|were|appears|appear|seems|seem|remains|remain)\s+(?:to\s+be\s+)?(?:also\s+)?)?)"
_FILLER = r"(?:(?:overall|global|resting)\s+)?"
_COORDINATED_AFTER = r"(?!\s*(?:,|and|&|or)\s+(?:\w+\s+){0,2}(?:function|size|thickness|wall|dimensions?)\b)"


def _adjective_regexes():
  out = []
  for kind, labels, subjects in _SUBJECTS:
    k = _KINDS[kind]
    # Atomic, so "normal in size and function" cannot back off to "normal" and slip past
    # the coordination check.
    mod = rf"(?>(?P<abn>{_ADV}(?:{k.abnormal}))|(?P<norm>{k.normal}))(?![\w-])"
    subj = rf"(?P<subj>{_alt(subjects)})(?![\w-])"
    post = re.compile(rf"(?<![\w-]){subj}{_COPULA}{mod}{_COORDINATED_AFTER}", _FLAGS)
    pre = re.compile(rf"(?<![\w-]){mod}\s+{_FILLER}{subj}{_COORDINATED_AFTER}", _FLAGS)
    out.append((kind, labels, post, pre))
  return out


_ADJECTIVE_RES = _adjective_regexes()
# "The left ventricle and left atrium are dilated": the words after the second subject
# belong to both, so a flip of the second alone would misread the first. Such conjuncts
# (a subject right after another subject and "and" / "or" / ",") are left alone.
_ALL_SUBJECTS = [w for _, _, ws in _SUBJECTS for w in ws]
_ALL_SUBJECTS += [a for m in _MEASUREMENT_RES for a in (schema.MEASUREMENT_INFO[m].description,
                                                        captions.ABBREVIATIONS[m],
                                                        *_EXTRA_ALIASES.get(m, []))]
_COORDINATED_BEFORE = re.compile(
    rf"(?<![\w-])(?:{_alt(_ALL_SUBJECTS)})\s*(?:,|and|or|&)\s*(?:the\s+)?$", _FLAGS)


# ---------------------------------------------------------------------------------------
# Finding extraction.
# ---------------------------------------------------------------------------------------

@dataclasses.dataclass
class Finding:
  """One asserted finding: labels it speaks for, its polarity, where it is, how to flip it.

  start, end: character span in the text; flip(rng) -> replacement text for that span
  with the opposite polarity.
  """
  labels: tuple[str, ...]
  abnormal: bool
  start: int
  end: int
  flip: Callable[[random.Random], str]
  has_number: bool = False


def _match_case(old: str, new: str) -> str:
  if old[:1].isupper() and new:
    return new[:1].upper() + new[1:]
  if old[:1].islower() and new and not new[:2].isupper():
    return new[:1].lower() + new[1:]
  return new


def _sentences(text: str):
  """(start, end) of sentences; a '.' followed by a non-space (0.5, i.e.) does not end one."""
  for m in re.finditer(r"(?:[^.!?]|[.!?](?=\S))+(?:[.!?]+|$)", text):
    if m.group().strip():
      yield m.start(), m.end()


def _measurement_findings(sent: str, off: int) -> list[Finding]:
  found = []
  for name, rx in _MEASUREMENT_RES.items():
    unit = _norm_unit(schema.MEASUREMENT_INFO[name].unit)
    for m in rx.finditer(sent):
      has_number = m.group("num") is not None
      if has_number and m.group("unit") and _norm_unit(m.group("unit")) != unit:
        continue  # another unit (mm for cm): the counterfactual would be mis-scaled
      if not has_number and _COORDINATED_BEFORE.search(sent[:m.start()]):
        continue  # "LVEF and LVIDd are normal": the words belong to both subjects
      found.append(Finding((guidelines.RULES[name].label,), m.group("abn") is not None,
                           off + m.start(), off + m.end(), _measurement_flipper(name, m),
                           has_number))
  for name, rx in _VALUE_RES.items():
    unit = _norm_unit(schema.MEASUREMENT_INFO[name].unit)
    for m in rx.finditer(sent):
      if (_norm_unit(m.group("unit") or "") != unit) or not schema.is_present(m.group("num")):
        continue  # no unit, or another one: the number cannot be read against the cut-off
      reads = {guidelines.is_abnormal(name, float(m.group("num")), s) for s in ("M", "F", None)}
      if len(reads) != 1:
        continue  # the reading depends on the (unstated) sex
      abnormal = reads.pop()
      found.append(Finding((guidelines.RULES[name].label,), abnormal, off + m.start(),
                           off + m.end(), _value_flipper(name, m, abnormal), True))
  return found


def _value_flipper(name: str, m: re.Match, abnormal: bool) -> Callable[[random.Random], str]:
  def flip(rng: random.Random) -> str:
    number = captions.format_number(name, counterfactual_value(name, not abnormal, rng), None)
    return m.string[m.start():m.start("num")] + number + m.string[m.end("num"):m.end()]
  return flip


def _measurement_flipper(name: str, m: re.Match) -> Callable[[random.Random], str]:
  rule = guidelines.RULES[name]
  to_abnormal = m.group("abn") is None
  phrase_key = "norm" if to_abnormal else "abn"

  def flip(rng: random.Random) -> str:
    s = m.string
    base = m.start()
    pieces = []
    consequence = CONSEQUENCES.get(name)
    if consequence and re.fullmatch(consequence[int(to_abnormal)], m.group(phrase_key), _FLAGS):
      # "suggesting [no] pulmonary hypertension", "consistent with [no] ..."
      with_ = re.match(_WITH, m.group(phrase_key), _FLAGS).group()
      phrase = with_ + consequence[2 + int(not to_abnormal)]
    else:
      consequence = None
    if m.group("num") is not None:
      v = counterfactual_value(name, to_abnormal, rng)
      phrase = phrase if consequence else guidelines.interpret(name, v, None).phrase
      number = captions.format_number(name, v, None)
      pieces.append(s[base:m.start("num")] + number + s[m.end("num"):m.start(phrase_key)])
    else:
      if not consequence:
        phrase = rule.generic_abnormal if to_abnormal else rule.normal_phrase
      pieces.append(s[base:m.start(phrase_key)])
    pieces.append(_match_case(m.group(phrase_key), phrase))
    return "".join(pieces)
  return flip


def _effusion_counterfactual(rng: random.Random) -> str:
  v = counterfactual_value("pericardial_effusion", True, rng)
  phrase = guidelines.interpret("pericardial_effusion", v, None).phrase
  return f"{phrase} of {captions.format_value('pericardial_effusion', v, None)}"


def _disease_findings(sent: str, off: int) -> list[Finding]:
  found = []
  for labels, rxs in _DISEASE_RES:
    effusion = labels == ("pericardial_effusion",)
    for form, rx in rxs.items():
      for m in rx.finditer(sent):
        if form == "present" and not _SAFE_BEFORE.search(sent[:m.start()]):
          continue
        present = form.startswith("present")
        valued = form in ("present", "present_pre")  # the forms that may carry a value clause
        units = [m.group(g) for g in ("unit", "unit2")] if valued else []
        if any(u and _norm_unit(u) != "cm" for u in units):
          continue  # "effusion of 5 mm": the value clause would be misread
        has_number = valued and bool(m.group("num") or m.group("num2"))
        found.append(Finding(labels, present, off + m.start(), off + m.end(),
                             _disease_flipper(form, m, effusion), has_number))
  return found


def _disease_flipper(form: str, m: re.Match, effusion: bool) -> Callable[[random.Random], str]:
  def flip(rng: random.Random) -> str:
    dis = m.group("dis")
    if not dis[:2].isupper():  # "Aortic stenosis" moves off the sentence start; "LVH" stays
      dis = dis[:1].lower() + dis[1:]
    if form == "present_post":
      return m.group()[:m.start("grade") - m.start()] + "absent"
    if form == "absent_post":
      post = m.group("post")
      new_post = _ABSENT_POST[re.sub(r"\s+", " ", post.lower())]
      return m.group()[:m.start("post") - m.start()] + new_post
    if form == "absent_pre":
      cue = re.sub(r"\s+", " ", m.group("cue").lower())
      new_cue = _ABSENT_CUES[cue]
      if effusion:
        body = _effusion_counterfactual(rng)
      else:
        body = m.group("qual") + dis
      return _match_case(m.group(), (new_cue + " " + body).strip())
    if form == "present_pre":
      cue = re.sub(r"\s+", " ", m.group("cue").lower())
      return _match_case(m.group(), f"{_PRESENT_CUES[cue]} {dis}")
    return _match_case(m.group(), f"no {dis}")
  return flip


# "The right ventricle is normal in size and function": one phrase, two labels.
_SIZE_AND_FUNCTION = [
    (("lv_dilation", "lv_systolic_dysfunction"), ["left ventricle", "LV"]),
    (("rv_dilation", "rv_dysfunction"), ["right ventricle", "RV"]),
]
_SIZE_AND_FUNCTION_RES = [
    (labels, re.compile(rf"(?<![\w-])(?P<subj>{_alt(subjects)}){_COPULA}"
                        r"(?P<norm>normal\s+in\s+size\s+and\s+(?:systolic\s+)?function)(?![\w-])", _FLAGS))
    for labels, subjects in _SIZE_AND_FUNCTION]


def _adjective_findings(sent: str, off: int) -> list[Finding]:
  found = []
  for labels, rx in _SIZE_AND_FUNCTION_RES:
    for m in rx.finditer(sent):
      found.append(Finding(labels, False, off + m.start(), off + m.end(),
                           lambda rng, m=m: m.group()[:m.start("norm") - m.start()]
                           + "dilated with reduced systolic function"))
  for kind, labels, post, pre in _ADJECTIVE_RES:
    for prenominal, rx in ((False, post), (True, pre)):
      for m in rx.finditer(sent):
        if _COORDINATED_BEFORE.search(sent[:m.start("subj")]) and not prenominal:
          continue
        lab = labels
        if labels == ("side",):  # bare "systolic function": the last chamber named before it
          sides = re.findall(r"\b(left|right|LV|RV|biventricular)\b", sent[:m.start("subj")], _FLAGS)
          side = sides[-1].lower() if sides else "left"
          lab = {"left": ("lv_systolic_dysfunction",), "lv": ("lv_systolic_dysfunction",),
                 "right": ("rv_dysfunction",), "rv": ("rv_dysfunction",)}.get(
                     side, ("lv_systolic_dysfunction", "rv_dysfunction"))
        found.append(Finding(lab, m.group("abn") is not None, off + m.start(), off + m.end(),
                             _adjective_flipper(kind, m, prenominal)))
  return found


def _adjective_flipper(kind: str, m: re.Match, prenominal: bool) -> Callable[[random.Random], str]:
  k = _KINDS[kind]

  def flip(rng: random.Random) -> str:
    key = "norm" if m.group("abn") is None else "abn"
    new = k.abnormal_word if key == "norm" else k.normal_word
    subj = m.group("subj").lower()
    if kind == "size" and not subj.endswith(("size", "volume")):
      new = {"dilated": "dilated", "normal": "normal-sized" if prenominal else "normal in size"}[new]
    elif kind == "size":
      new = "increased" if new == "dilated" else "normal"
    s, base = m.string, m.start()
    return (s[base:m.start(key)] + _match_case(m.group(key), new) + s[m.end(key):m.end()])
  return flip


def _no_overlap(findings: list[Finding]) -> list[Finding]:
  """Earliest, then longest, findings win; overlapping later ones are dropped."""
  kept, end = [], -1
  for f in sorted(findings, key=lambda f: (f.start, -(f.end - f.start))):
    if f.start >= end:
      kept.append(f)
      end = f.end
  return kept


def findings(text: str) -> list[Finding]:
  """All findings `text` asserts, in order.

  Measurement statements (with or without a value) take precedence over disease nouns,
  which take precedence over chamber adjectives. A sentence holding a number that no
  measurement statement accounts for keeps its value-less findings out: flipping "severe
  aortic stenosis" next to "a mean gradient of 45 mmHg" would make a wrong caption.
  """
  if not isinstance(text, str):
    raise TypeError(f"negation.py: expected caption text (str), got {type(text).__name__}.")
  out = []
  for s0, s1 in _sentences(text):
    sent = text[s0:s1]
    chosen = _no_overlap(_measurement_findings(sent, s0))
    taken = [(f.start, f.end) for f in chosen]
    free = lambda f: all(f.end <= a or f.start >= b for a, b in taken)
    for extra in (_disease_findings(sent, s0), _adjective_findings(sent, s0)):
      new = _no_overlap([f for f in extra if free(f)])
      chosen += new
      taken += [(f.start, f.end) for f in new]
    spare = sent
    for f in chosen:
      if f.has_number:
        spare = spare[:f.start - s0] + " " * (f.end - f.start) + spare[f.end - s0:]
    if re.search(r"\d", spare):
      chosen = [f for f in chosen if f.has_number]
    out += sorted(chosen, key=lambda f: f.start)
  return out


def _label_states(found: list[Finding]) -> dict[str, int]:
  states = {}
  for f in found:
    for l in f.labels:
      states[l] = max(states.get(l, 0), int(f.abnormal))
  return states


def caption_labels(text: str) -> dict[str, int]:
  """Labels a caption asserts, {label: 1 / 0 / -1} in schema.LABELS order: 1 when any
  statement of the label is abnormal, 0 when all are normal, -1 when none is made."""
  states = _label_states(findings(text))
  return {l: states.get(l, -1) for l in schema.LABELS}


def negate(text: str) -> str | None:
  """`text` with every asserted label flipped, or None when it asserts none.

  A label stated abnormal has all its statements rewritten to normal; a label stated
  normal has all of them rewritten to abnormal, numeric statements with a counterfactual
  value across the cut-off (sex-independent) and its guideline words. The view sentence
  and statements without a finding are kept. Deterministic: the counterfactual values
  are drawn from an rng seeded with the text. A statement that speaks for two labels
  needing opposite flips ("normal biventricular function" beside a reduced TAPSE) is kept.
  """
  found = findings(text)
  states = _label_states(found)
  edits = []
  for f in found:
    targets = {1 - states[l] for l in f.labels}
    if len(targets) != 1 or targets.pop() == int(f.abnormal):
      continue
    rng = random.Random(zlib.crc32(f"{f.start}\x00{text}".encode()))
    edits.append((f.start, f.end, f.flip(rng)))
  out = text
  for start, end, new in sorted(edits, reverse=True):
    out = out[:start] + new + out[end:]
  return None if out == text else out
