"""Synthetic heart anatomy: measurements -> per-view reflectivity maps in centimetres.

Owns the cardiac cycle (contraction curve, LV wall thickening with conserved
myocardial area) and, for every B-mode view, the chamber layout as seen from
that acoustic window: each view function returns a canvas with the reflectivity
(`out`) and the structure under each point (`labels`); `landmarks` gives the
named points of a view. Everything broadcasts: x, y [...] in cm (x lateral,
y depth from the transducer) and phase [...] in cycles, so one call renders a
2D frame ([H, W] points, scalar phase) or an M-mode strip ([N, 1] points along
a cursor, [1, T] phases).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Mapping

import numpy as np

from echovlm_jax.echo import schema

# Reflectivities before speckle and log compression (blood and effusion are echo-free).
TISSUE, MYO, BLOOD, PERI, EFF, VALVE, WALL, LIVER, DEEP = (
    0.30, 0.55, 0.015, 1.0, 0.01, 0.9, 0.75, 0.42, 0.15)

# Normal adult values used when a caller renders with some measurements absent.
NORMAL = {
    "lvef": 62.0, "lvidd": 4.7, "ivsd": 0.9, "lvpwd": 0.9, "lavi": 26.0,
    "tapse": 2.3, "rvd_basal": 3.5, "aortic_root": 3.2, "av_vmax": 1.3,
    "tr_vmax": 2.3, "pericardial_effusion": 0.0,
}


def contraction(phase):
  """0 at end-diastole (phase 0, the R wave), 1 at end-systole (0.35), relaxed by 0.6."""
  p = np.mod(phase, 1.0)
  es = schema.ES_PHASE
  rise = 0.5 - 0.5 * np.cos(np.pi * np.clip(p / es, 0.0, 1.0))
  fall = 0.5 + 0.5 * np.cos(np.pi * np.clip((p - es) / 0.25, 0.0, 1.0))
  return np.where(p < es, rise, fall)


def teichholz_volume(d):
  """LV volume (mL) from an internal diameter (cm), Teichholz."""
  return 7.0 / (2.4 + d) * d ** 3


def lvids_from_ef(lvidd: float, lvef: float) -> float:
  """End-systolic diameter whose Teichholz volume gives `lvef` with `lvidd` (bisection)."""
  target = teichholz_volume(lvidd) * (1.0 - lvef / 100.0)
  lo, hi = 0.1, lvidd
  for _ in range(40):
    mid = 0.5 * (lo + hi)
    lo, hi = (mid, hi) if teichholz_volume(mid) < target else (lo, mid)
  return 0.5 * (lo + hi)


@dataclasses.dataclass(frozen=True)
class Heart:
  """Diastolic geometry in cm, derived from one patient's measurements."""
  rd: float        # LV cavity radius, diastole
  rs: float        # LV cavity radius, systole
  ts: float        # septal thickness (diastole)
  tp: float        # posterior / lateral wall thickness (diastole)
  lv_len: float    # LV long axis, diastole
  mapse: float     # mitral annular excursion (LV base descent)
  la_a: float      # LA semi-axes (long, short) from LAVI x BSA as a prolate ellipsoid
  la_b: float
  rv_w: float      # RV basal diameter
  tapse: float
  ao: float        # aortic root radius
  eff: float       # pericardial effusion thickness
  as_severity: float  # 0 normal .. 1 severe (valve calcification)

  def radius(self, c):
    return self.rd - (self.rd - self.rs) * c

  def thickness(self, c, t_d):
    """Wall thickness at contraction c, keeping the myocardial ring's area constant."""
    r = self.radius(c)
    return np.sqrt(r ** 2 + (self.rd + t_d) ** 2 - self.rd ** 2) - r


def heart_from_measurements(m: Mapping[str, float], bsa: float = 1.9) -> Heart:
  def get(k):
    v = m.get(k, float("nan"))
    return NORMAL[k] if v is None or not np.isfinite(v) else float(v)
  lvidd, lvef = get("lvidd"), get("lvef")
  lvids = m.get("lvids", float("nan"))
  if lvids is None or not np.isfinite(lvids):
    lvids = lvids_from_ef(lvidd, lvef)
  la_vol = get("lavi") * bsa
  la_b = (la_vol / (4.0 / 3.0 * math.pi * 1.35)) ** (1.0 / 3.0)
  av = get("av_vmax")
  return Heart(
      rd=lvidd / 2, rs=min(lvids, lvidd - 0.05) / 2, ts=get("ivsd"), tp=get("lvpwd"),
      lv_len=float(np.clip(1.3 * lvidd + 2.4, 6.5, 11.5)),
      mapse=float(np.clip(0.9 * (lvidd - lvids), 0.3, 1.8)),
      la_a=1.35 * la_b, la_b=la_b, rv_w=get("rvd_basal"), tapse=get("tapse"),
      ao=get("aortic_root") / 2, eff=max(get("pericardial_effusion"), 0.0),
      as_severity=float(np.clip((av - 2.0) / 2.5, 0.0, 1.0)))


# ---------------------------------------------------------------- primitives

def _q(x, y, cx, cy, a, b):
  """Normalised squared radius of an axis-aligned ellipse (< 1 inside)."""
  return ((x - cx) / a) ** 2 + ((y - cy) / b) ** 2


def _local(x, y, ox, oy, ang):
  """Coordinates in a frame at (ox, oy) whose +v axis points at `ang` rad from screen-down."""
  ca, sa = math.cos(ang), math.sin(ang)
  dx, dy = x - ox, y - oy
  return ca * dx - sa * dy, sa * dx + ca * dy


def _seg(x, y, x0, y0, x1, y1):
  """Distance to the segment (x0, y0)-(x1, y1); endpoints may be arrays."""
  dx, dy = x1 - x0, y1 - y0
  t = np.clip(((x - x0) * dx + (y - y0) * dy) / (dx * dx + dy * dy + 1e-9), 0.0, 1.0)
  return np.hypot(x - x0 - t * dx, y - y0 - t * dy)


# Segmentation labels, CAMUS's convention (0 background, 1 LV cavity, 2 LV myocardium, 3 left
# atrium) plus the apical views' 4 RV and 5 RA. A layer painted without a label is
# background; KEEP leaves the label underneath (small valve blobs on a chamber's border and
# papillary muscles, which tracings include in the cavity).
BACKGROUND, LV_CAVITY, LV_MYOCARDIUM, LEFT_ATRIUM, RIGHT_VENTRICLE, RIGHT_ATRIUM = (
    schema.STRUCTURES.index(s) for s in schema.STRUCTURES)
KEEP = -1


class _Canvas:
  """Painter's algorithm over broadcast points: later layers cover earlier ones.

  out: float32 reflectivity; labels: int8 structure (see BACKGROUND ..), same shape."""

  def __init__(self, x, y, phase, base=TISSUE):
    self.shape = np.broadcast_shapes(np.shape(x), np.shape(phase))
    self.out = np.full(self.shape, base, np.float32)
    self.labels = np.zeros(self.shape, np.int8)

  def paint(self, mask, value, label: int = BACKGROUND):
    self.out = np.where(mask, np.float32(value), self.out)
    if label != KEEP:
      self.labels = np.where(mask, np.int8(label), self.labels)


def _pericardium(cv, inside_at: Callable[[float], np.ndarray], h: Heart):
  """Pericardial line, the effusion's echo-free rim, then the heart's muscle envelope."""
  cv.paint(inside_at(h.eff + 0.22), PERI)
  cv.paint(inside_at(h.eff), EFF)
  cv.paint(inside_at(0.0), MYO)


# --------------------------------------------------------------- apical LV

def _apical_lv(x, y, c, h: Heart, ax, ay, ang, t_left, t_right):
  """Bullet-shaped LV, apex at (ax, ay), axis at `ang`; returns (myo, cavity, u, v, L)."""
  u, v = _local(x, y, ax, ay, ang)
  r = h.radius(c)
  length = h.lv_len - h.mapse * c
  tl, tr = h.thickness(c, t_left), h.thickness(c, t_right)
  t_ap = 0.5 * (tl + tr) * 0.8
  semi = 0.58 * length
  wall = np.where(u < 0, tl, tr)
  in_base = v <= length
  myo = (_q(u, v, 0.0, semi, r + wall, semi + t_ap) <= 1) & in_base & (v >= -t_ap)
  cav = (_q(u, v, 0.0, semi + 0.0, r, semi - 0.0) <= 1) & in_base
  return myo, cav, u, v, length


def _apical(x, y, phase, h: Heart, rv: bool, aorta: str | None, ang: float):
  """A4C (rv, aorta=None), A5C (rv, aorta='center'), A2C (no rv), A3C (aorta='right')."""
  c = contraction(phase)
  cv = _Canvas(x, y, phase, TISSUE * 0.8)
  ax, ay = (0.9 if rv else 0.0), 1.8
  r_max = h.rd + max(h.ts, h.tp)
  t_sep = h.ts if rv else 0.5 * (h.ts + h.tp)
  u, v = _local(x, y, ax, ay, ang)
  rv_u = -(h.rd + h.ts + 0.5 * h.rv_w)
  rv_top = 0.3 * h.lv_len
  rv_base = h.lv_len - h.tapse * c            # tricuspid annulus moves toward the apex
  rv_semi = 0.5 * (rv_base - rv_top)
  rv_cv = 0.5 * (rv_base + rv_top)

  def envelope(d):
    t_ap = 0.4 * (h.ts + h.tp)
    lv = (_q(u, v, 0.0, 0.58 * h.lv_len, r_max + 0.1 + d, 0.58 * h.lv_len + t_ap + 0.1 + d) <= 1)
    lv = lv & (v <= h.lv_len + d * 0.3)
    if rv:
      lv = lv | (_q(u, v, rv_u, rv_cv, 0.5 * h.rv_w + 0.4 + d, rv_semi + 0.4 + d) <= 1) & (v <= rv_base)
    return lv
  _pericardium(cv, envelope, h)
  length = h.lv_len - h.mapse * c
  # Atria hang below the atrioventricular plane and move with it.
  la_u = 0.15 * h.rd + (0.6 if aorta == "center" else 0.0) + (-0.5 if aorta == "right" else 0.0)
  la_v = length + 0.25 + h.la_a
  cv.paint(_q(u, v, la_u, la_v, h.la_b + 0.2, h.la_a + 0.2) <= 1, MYO)
  if rv:
    ra_a, ra_b = 0.55 * h.rv_w * 1.05, 0.45 * h.rv_w
    ra_u, ra_v = rv_u * 0.85, rv_base + 0.25 + ra_a
    cv.paint(_q(u, v, ra_u, ra_v, ra_b + 0.2, ra_a + 0.2) <= 1, MYO)
    cv.paint(_q(u, v, ra_u, ra_v, ra_b, ra_a) <= 1, BLOOD, RIGHT_ATRIUM)
    cv.paint(_q(u, v, rv_u, rv_cv, 0.5 * h.rv_w, rv_semi) <= 1, BLOOD, RIGHT_VENTRICLE)
    # Lateral tricuspid annulus: the bright point TAPSE follows.
    cv.paint(np.hypot(u - (rv_u - 0.5 * h.rv_w * 0.9), v - rv_base) < 0.3, VALVE, KEEP)
  cv.paint(_q(u, v, la_u, la_v, h.la_b, h.la_a) <= 1, BLOOD, LEFT_ATRIUM)
  myo, cav, _, _, _ = _apical_lv(x, y, c, h, ax, ay, ang, t_sep, h.tp)
  cv.paint(myo, MYO, LV_MYOCARDIUM)
  cv.paint(cav, BLOOD, LV_CAVITY)
  r = h.radius(c)
  for s in (-1.0, 1.0):   # mitral annulus
    cv.paint(np.hypot(u - s * 0.72 * r, v - length) < 0.22, VALVE, KEEP)
  if aorta is not None:
    o_u, o_v = (-0.1 * r, length - 0.4) if aorta == "center" else (0.55 * r, length - 0.5)
    ang_ao = 0.15 if aorta == "center" else -0.75
    au, av = _local(u, v, o_u, o_v, ang_ao)
    tube = (np.abs(au) < h.ao * 0.9) & (av > -0.2) & (av < 4.5)
    cv.paint(tube & (np.abs(au) > h.ao * 0.9 - 0.22), WALL)
    cv.paint(tube & (np.abs(au) <= h.ao * 0.9 - 0.22), BLOOD)
    closed = (np.mod(phase, 1.0) < 0.04) | (np.mod(phase, 1.0) > 0.36)
    cusp = 0.08 + 0.12 * h.as_severity
    cv.paint((np.abs(av - 0.3) < cusp) & (np.abs(au) < h.ao * 0.9) & (closed | (h.as_severity > 0.3)),
             VALVE)
  return cv


def a4c(x, y, phase, h):
  return _apical(x, y, phase, h, rv=True, aorta=None, ang=-0.12)


def a5c(x, y, phase, h):
  return _apical(x, y, phase, h, rv=True, aorta="center", ang=-0.12)


def a2c(x, y, phase, h):
  return _apical(x, y, phase, h, rv=False, aorta=None, ang=0.05)


def a3c(x, y, phase, h):
  return _apical(x, y, phase, h, rv=False, aorta="right", ang=0.12)


def subcostal(x, y, phase, h):
  """Four chambers seen from below: the A4C heart turned so the apex points right, under the liver."""
  sx, sy, hx, hy, tilt = 0.0, 10.0, -1.0, 0.55 * h.lv_len + 1.8, 0.3
  ca, sa = math.cos(tilt), math.sin(tilt)
  dx, dy = x - sx, y - sy
  dx, dy = ca * dx - sa * dy, sa * dx + ca * dy
  cv = a4c(hx + dy, hy - dx, phase, h)
  liver = y < 5.0 - 0.3 * x + 0.25 * np.sin(1.3 * x)
  vessel = (np.hypot(x + 2.0, y - 3.2) < 0.55) | (np.hypot(x - 1.5, y - 2.0) < 0.4)
  keep = (cv.out == np.float32(PERI)) | (cv.out == np.float32(EFF))
  # np.where, not paint: the float64 reflectivity this view always had keeps its frames bit
  # for bit.
  cv.out = np.where(liver & ~keep, np.where(vessel, BLOOD, LIVER), cv.out)
  cv.labels = np.where(liver & ~keep, np.int8(BACKGROUND), cv.labels)
  return cv


# --------------------------------------------------------------- parasternal

def plax(x, y, phase, h: Heart):
  """Parasternal long axis: RV on top, septum, LV (apex screen-left), aorta and LA screen-right."""
  c = contraction(phase)
  p = np.mod(phase, 1.0)
  cv = _Canvas(x, y, phase, DEEP)
  cv.paint(y < 1.0, TISSUE)
  hrv = float(np.clip(0.6 * h.rv_w, 1.6, 4.0))
  ys = 1.4 + hrv
  r, ts, tp = h.radius(c), h.thickness(c, h.ts), h.thickness(c, h.tp)
  cy = ys + h.ts + h.rd              # LV centre stays put; cavity shrinks about it
  xl, a = -1.6, 0.5 * h.lv_len + 0.6
  xb = xl + 2.4                      # atrioventricular / aortic plane
  bottom = cy + h.rd + h.tp

  def envelope(d):
    e = _q(x, y, xl, 0.5 * (1.0 + bottom), a + 1.2 + d, 0.5 * (bottom - 1.0) + d) <= 1
    return e & (x < xb + 0.3 + 0.3 * d)
  _pericardium(cv, envelope, h)
  cv.paint(_q(x, y, xl - 0.5, 1.4 + 0.5 * hrv, a + 0.6, 0.5 * hrv) <= 1, BLOOD)   # RV(OT)
  b = np.where(y < cy, r + ts, r + tp)
  cv.paint((_q(x, y, xl, cy, a + 0.9, b) <= 1) & (x < xb + 0.2), MYO, LV_MYOCARDIUM)
  cv.paint((_q(x, y, xl, cy, a, r) <= 1) & (x < xb + 0.2), BLOOD, LV_CAVITY)
  # Aorta: anterior wall continues the septum, posterior wall the anterior mitral leaflet.
  yao = cy - h.rd + h.ao
  tube = (x > xb - 0.1) & (x < xb + 6.0) & (np.abs(y - yao) < h.ao + 0.22)
  cv.paint(tube, WALL)
  cv.paint(tube & (np.abs(y - yao) < h.ao), BLOOD)
  la_cy = yao + h.ao + 0.3 + h.la_b
  cv.paint(_q(x, y, xb + 2.3, la_cy, 1.25 * h.la_b + 0.2, h.la_b + 0.2) <= 1, MYO)
  cv.paint(_q(x, y, xb + 2.3, la_cy, 1.25 * h.la_b, h.la_b) <= 1, BLOOD, LEFT_ATRIUM)
  closed = (p < 0.04) | (p > 0.36)
  cusp = 0.08 + 0.12 * h.as_severity
  cv.paint((np.abs(x - xb - 0.4) < cusp) & (np.abs(y - yao) < h.ao) & (closed | (h.as_severity > 0.3)),
           VALVE)
  # Mitral leaflets: open toward the LV in diastole, coapting in systole.
  opening = np.where((p > 0.55) & (p < 0.95), 1.0, 0.15)
  tip_x = xb - 0.4 - 1.6 * opening
  tip_y = cy + 0.25 * r
  cv.paint(_seg(x, y, xb, yao + h.ao + 0.1, tip_x, tip_y - 0.3 * opening * r) < 0.09, VALVE, KEEP)
  cv.paint(_seg(x, y, xb, cy + r, tip_x + 0.6, tip_y + 0.2 * opening * r) < 0.09, VALVE, KEEP)
  # Descending aorta behind the LA: effusion lies in front of it, pleural fluid behind.
  dy_ao = bottom + h.eff + 1.6
  cv.paint(np.hypot(x - xb - 0.6, y - dy_ao) < 1.1, WALL)
  cv.paint(np.hypot(x - xb - 0.6, y - dy_ao) < 0.9, BLOOD)
  return cv


def psax_mid(x, y, phase, h: Heart):
  """Parasternal short axis, papillary level: round LV, RV crescent wrapping upper-left."""
  c = contraction(phase)
  cv = _Canvas(x, y, phase, DEEP)
  cv.paint(y < 1.0, TISSUE)
  hrv = float(np.clip(0.45 * h.rv_w, 1.2, 3.2))
  cx, cy = 0.4, 1.4 + hrv + h.ts + h.rd
  r = h.radius(c)
  ts, tp = h.thickness(c, h.ts), h.thickness(c, h.tp)
  dx, dy = x - cx, y - cy
  rr = np.hypot(dx, dy) + 1e-6
  toward_rv = (-0.55 * dx - 0.85 * dy) / rr      # +1 at the septum, -1 at the posterior wall
  wall = 0.5 * (ts + tp) + 0.5 * (ts - tp) * toward_rv
  rv_cx, rv_cy = cx - 0.55 * (h.rd + h.ts), cy - 0.8 * (h.rd + h.ts)
  rv_a, rv_b = h.rd + 0.45 * h.rv_w, 0.5 * hrv + 0.6

  def envelope(d):
    lv = np.hypot(dx, dy) <= h.rd + max(h.ts, h.tp) + d
    return lv | (_q(x, y, rv_cx, rv_cy, rv_a + 0.35 + d, rv_b + 0.35 + d) <= 1)
  _pericardium(cv, envelope, h)
  cv.paint(_q(x, y, rv_cx, rv_cy, rv_a, rv_b) <= 1, BLOOD)
  cv.paint(rr <= r + wall, MYO, LV_MYOCARDIUM)
  cv.paint(rr <= r, BLOOD, LV_CAVITY)
  for s in (-1.0, 1.0):   # papillary muscles
    cv.paint(np.hypot(dx - s * 0.55 * r, dy - 0.45 * r) < 0.22 * h.rd, MYO, KEEP)
  return cv


def psax_av(x, y, phase, h: Heart):
  """Parasternal short axis at the aortic valve: the 'Mercedes' valve, LA, RA, RVOT and PA."""
  p = np.mod(phase, 1.0)
  cv = _Canvas(x, y, phase, DEEP)
  cv.paint(y < 1.0, TISSUE)
  cx, cy = 0.0, 1.6 + 2.4 + h.ao
  dx, dy = x - cx, y - cy
  rr = np.hypot(dx, dy)
  big = 0.5 * h.rv_w + 2.4
  cv.paint(_q(x, y, cx, cy + 0.8, h.ao + big + 0.8, h.ao + big) <= 1, MYO * 0.8)
  ang = np.arctan2(dx, -dy)                       # 0 = up, +pi/2 = screen right
  rvot = (rr > h.ao + 0.4) & (rr < h.ao + 0.4 + 0.45 * h.rv_w) & (ang > -1.9) & (ang < 1.5)
  cv.paint(rvot, BLOOD)
  cv.paint(_seg(x, y, cx + h.ao + 1.6, cy - 0.5, cx + h.ao + 2.6, cy + 4.0) < 1.05, BLOOD)  # PA
  cv.paint(_q(x, y, cx + 0.3, cy + h.ao + 0.35 + h.la_b, 1.2 * h.la_b, h.la_b) <= 1, BLOOD,
           LEFT_ATRIUM)
  cv.paint(_q(x, y, cx - h.ao - 1.7, cy + 1.0, 0.45 * h.rv_w + 0.2, 0.4 * h.rv_w) <= 1, BLOOD)
  cv.paint(rr < h.ao + 0.25, WALL)
  cv.paint(rr < h.ao, BLOOD)
  closed = (p < 0.04) | (p > 0.36)
  cusp = 0.07 + 0.12 * h.as_severity
  for a0 in (math.pi, math.pi / 3, -math.pi / 3):
    line = _seg(x, y, cx, cy, cx + h.ao * math.sin(a0), cy - h.ao * math.cos(a0)) < cusp
    cv.paint(line & (closed | (h.as_severity > 0.3)), VALVE)
  return cv


def suprasternal(x, y, phase, h: Heart):
  """Aortic arch with its three branches; the right pulmonary artery under the arch."""
  cv = _Canvas(x, y, phase, TISSUE * 1.1)
  cx, cy, ra = 0.0, 7.5, 3.4
  dx, dy = x - cx, y - cy
  rr = np.hypot(dx, dy)
  half = 0.45 * h.ao * 2
  arch = (np.abs(rr - ra) < half + 0.22) & (dy < 1.2)
  for bx in (-1.1, 0.0, 1.1):
    cv.paint(_seg(x, y, cx + bx, cy - ra, cx + 1.3 * bx, 1.2) < 0.55, WALL)
    cv.paint(_seg(x, y, cx + bx, cy - ra, cx + 1.3 * bx, 1.2) < 0.35, BLOOD)
  cv.paint(arch, WALL)
  cv.paint(arch & (np.abs(rr - ra) < half), BLOOD)
  cv.paint(_q(x, y, cx, cy + 0.2, 1.3, 0.9) <= 1, WALL)
  cv.paint(_q(x, y, cx, cy + 0.2, 1.1, 0.7) <= 1, BLOOD)
  return cv


ANATOMY: dict[str, Callable] = {
    "plax": plax, "psax_av": psax_av, "psax_mid": psax_mid, "a4c": a4c, "a2c": a2c,
    "a3c": a3c, "a5c": a5c, "subcostal": subcostal, "suprasternal": suprasternal,
}

# Named points a view shows, in its anatomy frame (cm): the apical views' mitral annulus hinge
# points (1: the u < 0 side, screen-left; 2: screen-right) and endocardial LV apex, and PLAX's
# caliper line through the LV centre, perpendicular to its long axis, as EchoNet-LVH's
# IVSd / LVID / LVPWd: IVSd = ivs_anterior .. lv_septal_endocardium, LVID = that ..
# lv_posterior_endocardium, LVPWd = that .. lvpw_epicardium (diastolic values at phase 0).
LANDMARKS = schema.LANDMARKS
_APICAL = {"a4c": (0.9, -0.12), "a5c": (0.9, -0.12), "a2c": (0.0, 0.05), "a3c": (0.0, 0.12)}


def landmarks(view: str, phase: float, h: Heart) -> dict[str, tuple[float, float]]:
  """name -> (x, y) cm in `view`'s anatomy frame at `phase`; {} for a view without any."""
  c = float(contraction(phase))
  r = float(h.radius(c))
  if view in _APICAL:
    ax, ang = _APICAL[view]
    ca, sa = math.cos(ang), math.sin(ang)
    length = h.lv_len - h.mapse * c
    def point(u, v):  # the inverse of _local about the apex at (ax, 1.8)
      return (ax + ca * u + sa * v, 1.8 - sa * u + ca * v)
    return {"mitral_annulus_1": point(-0.72 * r, length), "mitral_annulus_2": point(0.72 * r, length),
            "lv_apex": point(0.0, 0.0)}
  if view == "plax":
    ys = 1.4 + float(np.clip(0.6 * h.rv_w, 1.6, 4.0))
    cy, xl = ys + h.ts + h.rd, -1.6
    ts, tp = float(h.thickness(c, h.ts)), float(h.thickness(c, h.tp))
    return {"ivs_anterior": (xl, cy - r - ts), "lv_septal_endocardium": (xl, cy - r),
            "lv_posterior_endocardium": (xl, cy + r), "lvpw_epicardium": (xl, cy + r + tp)}
  return {}


# Imaging depth range (cm) a sonographer would pick per window, and the point the
# probe pivots about for jitter.
DEPTH_RANGE = {
    "plax": (13.0, 18.0), "psax_av": (11.0, 15.0), "psax_mid": (12.0, 17.0),
    "a4c": (14.0, 19.0), "a2c": (14.0, 19.0), "a3c": (14.0, 19.0), "a5c": (14.0, 19.0),
    "subcostal": (16.0, 21.0), "suprasternal": (12.0, 16.0),
}


def needed_depth(view: str, h: Heart) -> float:
  """Depth that keeps the whole heart (and an effusion rim) in the sector."""
  if view in ("plax", "psax_mid"):
    return 1.4 + 0.6 * h.rv_w + 2 * (h.ts + h.rd + h.tp) + h.eff + 3.5
  if view in ("a4c", "a2c", "a3c", "a5c"):
    return 1.8 + h.lv_len + 2 * h.la_a + 1.5
  if view == "subcostal":
    return 12.0 + h.lv_len * 0.5 + h.eff
  return 0.0


# M-mode cursors, in the view's anatomy frame: (centre x, centre y, direction angle)
# where angle 0 runs down the screen (a depth-like line) and pi/2 runs across.
def mmode_cursor(view: str, h: Heart, which: str = "lv") -> tuple[float, float, float]:
  if view == "plax":
    return (-1.0, 1.4 + float(np.clip(0.6 * h.rv_w, 1.6, 4.0)) + h.ts + h.rd, 0.0)
  if view == "psax_mid":
    return (0.4, 1.4 + float(np.clip(0.45 * h.rv_w, 1.2, 3.2)) + h.ts + h.rd, 0.0)
  ax = 0.9 if view in ("a4c", "a5c") else 0.0
  ang = {"a4c": -0.12, "a5c": -0.12, "a2c": 0.05, "a3c": 0.12}[view]
  if which == "tapse":   # along the RV free wall, through the lateral tricuspid annulus
    u, v = -(h.rd + h.ts + 0.95 * h.rv_w), h.lv_len - 0.6
  else:                  # across the LV at mid-cavity (anatomical M-mode)
    u, v = -0.5, 0.55 * h.lv_len
  ca, sa = math.cos(ang), math.sin(ang)
  x = ax + ca * u + sa * v
  y = 1.8 - sa * u + ca * v
  return (x, y, ang if which == "tapse" else ang + math.pi / 2)
