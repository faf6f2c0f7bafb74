"""Image formation for the synthetic echo: B-mode sectors, M-mode and CW Doppler strips.

Turns reflectivity maps from synthetic_anatomy into scanner-like uint8 frames
(speckle, point-spread blur, depth attenuation, gain / TGC, log-like
compression) and burns in the overlays of synthetic_layout. numpy only.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping

import numpy as np

from echovlm_jax.data import synthetic_anatomy as anat
from echovlm_jax.data import synthetic_layout as lay_mod
from echovlm_jax.data import synthetic_sites
from echovlm_jax.echo import schema

def _blur(img: np.ndarray, axis_rows: int = 1, axis_cols: int = 2) -> np.ndarray:
  """Separable [1 2 1]-style point spread: short axially, wider laterally. [..., H, W]."""
  out = img
  for _ in range(axis_rows):
    p = np.pad(out, [(0, 0)] * (out.ndim - 2) + [(1, 1), (0, 0)], mode="edge")
    out = 0.25 * p[..., :-2, :] + 0.5 * p[..., 1:-1, :] + 0.25 * p[..., 2:, :]
  for _ in range(axis_cols):
    p = np.pad(out, [(0, 0)] * (out.ndim - 1) + [(1, 1)], mode="edge")
    out = 0.25 * p[..., :-2] + 0.5 * p[..., 1:-1] + 0.25 * p[..., 2:]
  return out


def _compress(intensity: np.ndarray, gain: float, gamma: float) -> np.ndarray:
  """Power-law display map (spectral Doppler and the small reference image)."""
  return np.clip(255.0 * gain * np.power(np.maximum(intensity, 0.0), gamma), 0, 255)


def _log_compress(intensity: np.ndarray, gain: float, dyn_range: float) -> np.ndarray:
  """B-mode log compression over `dyn_range` decades: blood near black, tissue mid-grey."""
  return np.clip(255.0 * gain * (np.log10(intensity + 1e-4) + dyn_range) / dyn_range, 0, 255)


def _rayleigh(rng: np.random.Generator, shape) -> np.ndarray:
  """Unit-mean Rayleigh speckle amplitudes."""
  return np.sqrt(-2.0 * np.log1p(-rng.random(shape, dtype=np.float32))) / 1.2533


@dataclasses.dataclass(frozen=True)
class _Probe:
  """Where the probe sat: the anatomy frame seen rotated by `ang` about (0, py) and shifted by
  (tx, ty) cm; `depth` cm spans the sector's radius."""
  ang: float
  tx: float
  ty: float
  py: float
  depth: float

  def to_anatomy(self, x, y):
    ca, sa = math.cos(self.ang), math.sin(self.ang)
    return (ca * (x - self.tx) - sa * (y - self.ty - self.py),
            sa * (x - self.tx) + ca * (y - self.ty - self.py) + self.py)

  def to_pixel(self, lay: lay_mod.Layout, xa: float, ya: float) -> tuple[float, float]:
    """(row, col) in pixel-index units (pixel i's centre at i) of an anatomy point."""
    ca, sa = math.cos(self.ang), math.sin(self.ang)
    u, v = xa, ya - self.py
    x, y = self.tx + ca * u + sa * v, self.ty + self.py - sa * u + ca * v   # to_anatomy^-1
    scale = lay.radius / self.depth                                         # pixels per cm
    return lay.apex[0] + y * scale - 0.5, lay.apex[1] + x * scale - 0.5


def _bmode(view: str, heart: anat.Heart, lay: lay_mod.Layout, phases: np.ndarray, depth: float,
           rng: np.random.Generator, gain: float, dyn_range: float,
           lab: synthetic_sites.Site = synthetic_sites.SITES["a"]
           ) -> tuple[np.ndarray, np.ndarray, _Probe]:
  """(float [T, H, W] in 0..255 inside the fan, 0 outside; int8 [T, H, W] structure labels,
  0 outside the fan; the probe's placement)."""
  rho, theta, fan = lay_mod.polar_grid(lay)
  s = lay.size
  d = rho * depth
  x, y = d * np.sin(theta), d * np.cos(theta)
  # The probe is never held the same way twice: small rotation and shift of the anatomy.
  ang = rng.uniform(-0.12, 0.12)
  tx, ty = rng.uniform(-0.5, 0.5), rng.uniform(-0.4, 0.4)
  probe = _Probe(ang, tx, ty, 0.45 * depth, depth)
  xa, ya = probe.to_anatomy(x, y)
  func = anat.ANATOMY[view]
  canvases = [func(xa, ya, float(p), heart) for p in phases]
  refl = np.stack([cv.out for cv in canvases])                                # [T, H, W]
  labels = np.where(fan, np.stack([cv.labels for cv in canvases]), np.int8(0))
  # Speckle lives on the beam grid (axial x lateral), so it stretches with depth.
  # A coarser grain (another transducer's resolution cell) is fewer beam-grid cells.
  n_ax, n_lat = s // lab.speckle_axial_px, max(8, s // lab.speckle_lateral_px)
  ri = np.clip((rho * n_ax).astype(np.int32), 0, n_ax - 1)
  ti = np.clip(((theta / lay.half_angle + 1) * 0.5 * n_lat).astype(np.int32), 0, n_lat - 1)
  base = _rayleigh(rng, (n_ax, n_lat))
  sp = np.stack([(0.8 * base + 0.2 * _rayleigh(rng, (n_ax, n_lat)))[ri, ti] for _ in phases])
  img = _blur(refl * sp + 0.006 * _rayleigh(rng, refl.shape))
  # Attenuation with depth, partly undone by the TGC the sonographer set.
  # Net depth gain: attenuation partly undone by the TGC the sonographer set, plus
  # near-field clutter brightening the top of the fan.
  tgc_slope = rng.uniform(-0.25, 0.15)
  img = img * np.exp(tgc_slope * rho - 0.25 * rho ** 2) * (1.0 + 0.8 * np.exp(-rho * 12))
  out = _log_compress(img, gain, dyn_range)
  return np.where(fan, out, 0.0), labels, probe


def _mmode(view: str, heart: anat.Heart, lay: lay_mod.Layout, span_cm: float, phase0: float,
           cycles: float, rng: np.random.Generator, gain: float, dyn_range: float) -> np.ndarray:
  """float [h, w] M-mode strip: `span_cm` of cursor line (its own cm ticks) x time."""
  r0, r1, c0, c1 = lay.strip
  h, w = r1 - r0, c1 - c0
  px_cm = h / span_cm
  phases = phase0 + np.linspace(0.0, cycles, w)[None, :]
  panels = [("lv", w)] if view != "a4c" else [("lv", w // 2), ("tapse", w - w // 2)]
  out, start = [], 0
  for which, pw in panels:
    cx, cy, ang = anat.mmode_cursor(view, heart, which)
    t = (np.arange(h, dtype=np.float32) - h / 2 + 0.5)[:, None] / px_cm
    xs, ys = cx + t * math.sin(ang), cy + t * math.cos(ang)
    refl = anat.ANATOMY[view](xs, ys, phases[:, start:start + pw], heart).out
    # M-mode speckle streaks along time: the same tissue returns the same echo.
    sp = 0.75 * _rayleigh(rng, (h, 1)) + 0.25 * _rayleigh(rng, (h, pw))
    out.append(refl * sp)
    start += pw
  img = _blur(np.concatenate(out, axis=1)[None], 1, 1)[0]
  img[:, :1] = 0.0
  if len(panels) == 2:
    img[:, w // 2 - 1:w // 2 + 1] = 0.0
  img = img + 0.006 * _rayleigh(rng, img.shape)
  return _log_compress(img * (1.0 + 0.5 * np.exp(-np.arange(h)[:, None] / 6.0)), gain, dyn_range)


def doppler_envelope(view: str, vmax: float, phase) -> np.ndarray:
  """CW velocity envelope (m/s, away from the probe) over the cycle: AV ejection or TR jet."""
  p = np.mod(phase, 1.0)
  if view == "cw_av":
    start, dur = 0.06, 0.30
    u = np.clip((p - start) / dur, 0.0, 1.0)
    # Peak moves later as stenosis worsens (rounded, late-peaking envelope).
    k = np.log(0.5) / np.log(np.clip(0.32 + 0.06 * (vmax - 1.0), 0.32, 0.5))
    shape = np.sin(np.pi * u ** k)
  else:
    start, dur = 0.03, 0.42
    u = np.clip((p - start) / dur, 0.0, 1.0)
    shape = np.sin(np.pi * u) ** 0.45
  return vmax * np.where((u > 0) & (u < 1), shape, 0.0)


def mean_gradient(view: str, vmax: float) -> float:
  """Mean of 4 v(t)^2 over the ejection (simplified Bernoulli) for the envelope drawn."""
  ph = np.linspace(0.0, 1.0, 2001)
  v = doppler_envelope(view, vmax, ph)
  return float(np.mean(4.0 * v[v > 0] ** 2))


def _doppler(view: str, vmax: float, lay: lay_mod.Layout, vscale: int, phase0: float,
             cycles: float, rng: np.random.Generator, gain: float) -> tuple[np.ndarray, int]:
  """float [h, w] spectral strip and the baseline row inside it."""
  r0, r1, c0, c1 = lay.strip
  h, w = r1 - r0, c1 - c0
  base = int(0.14 * h)
  px_v = (h - base - 2) / vscale
  ph = phase0 + np.linspace(0.0, cycles, w)
  env = doppler_envelope(view, vmax, ph)[None, :]
  v_rows = ((np.arange(h) - base)[:, None] / px_v).astype(np.float32)       # m/s per row
  # Antegrade filling (mitral / tricuspid E and A waves) shows above the baseline.
  pd = np.mod(ph, 1.0)
  inflow = (0.75 * np.exp(-((pd - 0.62) / 0.05) ** 2) + 0.5 * np.exp(-((pd - 0.9) / 0.035) ** 2))
  inflow = inflow[None, :] * rng.uniform(0.7, 1.1)
  frac = np.where(v_rows > 0, v_rows / np.maximum(env, 1e-3), -v_rows / np.maximum(inflow, 1e-3))
  inside = (frac >= 0) & (frac <= 1) & np.where(v_rows > 0, env > 0.05, inflow > 0.05)
  dens = np.where(inside, 0.35 + 0.65 * frac ** 3, 0.0)     # dense outline, as CW spectra look
  spec = dens * _rayleigh(rng, (h, w)) + 0.05 * _rayleigh(rng, (h, w))
  spec = _blur(spec[None], 1, 1)[0]
  out = _compress(spec, gain, 0.8)
  out[base, :] = 200.0
  return out, base


def _thumbnail(lay: lay_mod.Layout, view: str, rng) -> np.ndarray:
  """Small 2D reference image above the spectrum, with the CW cursor line."""
  rho, theta, fan = lay_mod.polar_grid(lay)
  off = 0.0 if view == "cw_av" else -0.2
  cav = ((rho - 0.6) / 0.25) ** 2 + ((theta - off) / 0.25) ** 2 < 1
  refl = np.where(cav, anat.BLOOD, anat.MYO * 0.8) * _rayleigh(rng, rho.shape)
  img = _compress(_blur(refl[None])[0], 0.7, 0.7)
  img = np.where(np.abs(theta - off) < 0.02, 230.0, img)
  return np.where(fan, img, 0.0)


def _overlays(layer, mask, view, lay, depth, rng, vscale, base_row, span,
              lab: synthetic_sites.Site = synthetic_sites.SITES["a"]):
  """Scanner text, scales and ECG outside the ultrasound region (uint8 layer, in place)."""
  s = lay.size
  fp = lay_mod.font_px(s)
  white = int(rng.integers(190, 256))
  vendor = lab.vendors[int(rng.integers(len(lab.vendors)))]
  mode = "CW" if lay.kind == "doppler" else ("2D/M" if lay.kind == "sector_mmode" else "2D")
  # Each vendor puts its header text somewhere of its own: site b mirrors site a's.
  (c_l, a_l), (c_r, a_r) = ((s - 1, "right"), (1, "left")) if lab.text_mirrored else \
      ((1, "left"), (s - 1, "right"))
  lay_mod.draw_text(layer, mask, vendor, 1, c_l, white, a_l)
  lay_mod.draw_text(layer, mask, f"{mode} {int(rng.integers(30, 80))}Hz", 2 + fp, c_l, white, a_l)
  lay_mod.draw_text(layer, mask, f"MI {rng.uniform(0.6, 1.4):.1f}", 1, c_r, white, a_r)
  lay_mod.draw_text(layer, mask, f"G{int(rng.integers(40, 70))}", 2 + fp, c_r, white, a_r)
  if lay.kind == "doppler":
    r0, r1, c0, c1 = lay.strip
    px_v = (r1 - r0 - int(0.14 * (r1 - r0)) - 2) / vscale
    step = 1 if px_v >= fp + 1 else 2
    for k in range(0, vscale + 1, step):
      row = r0 + base_row + int(round(k * px_v))
      layer[row, c1 + 1:c1 + 3] = white
      lay_mod.draw_text(layer, mask, f"-{k}" if k else "0", row - fp // 2, c1 + 4, white)
    lay_mod.draw_text(layer, mask, "m/s", r0 - fp - 1, s - 1, white, "right")
  else:
    lay_mod.draw_depth_scale(layer, mask, lay, depth, white)
    if lay.kind == "sector_mmode":
      r0, r1, c0, c1 = lay.strip
      for k in range(int(span) + 1):
        row = r0 + int(round(k * (r1 - r0) / span))
        if row < r1:
          layer[row, c1 + 1:c1 + 3 + (k % 5 == 0)] = white
    lay_mod.draw_text(layer, mask, f"{depth:.0f}cm", lay.ecg[0] - fp - 1, 1, white)


def _defaults(measurements: Mapping[str, float]) -> dict[str, float]:
  m = dict(anat.NORMAL)
  m.update({k: float(v) for k, v in measurements.items() if schema.is_present(v)})
  return m


@dataclasses.dataclass(frozen=True)
class Rendered:
  """One rendered image / clip and its exact ground truth, in the frame's pixel grid.

  frames: uint8 [T, H, W]. labels: uint8 [T, H, W] structure per pixel
    (synthetic_anatomy.BACKGROUND .. RIGHT_ATRIUM; 0 outside the B-mode sector and for
    Doppler). landmarks: float32 [T, K, 2] (row, col) pixel-index coordinates of
    schema.LANDMARKS, NaN where the view has no such point. phases: float32 [T] cardiac phase
    in cycles (schema.ED_PHASE = 0 end-diastole, ES_PHASE end-systole; NaN for Doppler).
    pixel_spacing_mm: mm per pixel of the B-mode sector (isotropic; NaN for Doppler).
  """
  frames: np.ndarray
  labels: np.ndarray
  landmarks: np.ndarray
  phases: np.ndarray
  pixel_spacing_mm: float


def render_view(view: str, measurements: Mapping[str, float], sex: str | None,
                rng: np.random.Generator, image_size: int = 128, num_frames: int = 1,
                **kwargs) -> np.ndarray:
  """Renders one image / clip of a known `view`: uint8 [T, H, W] (see `render`)."""
  return render(view, measurements, sex, rng, image_size, num_frames, **kwargs).frames


def render(view: str, measurements: Mapping[str, float], sex: str | None,
           rng: np.random.Generator, image_size: int = 128, num_frames: int = 1, *,
           bsa: float = 1.9, depth_cm: float | None = None,
           velocity_scale: int | None = None, overlays: bool = True,
           phases: np.ndarray | None = None, fps: float = 0.0, site: str = "a") -> Rendered:
  """Renders one image / clip of a known `view` with its ground truth (`Rendered`).

  `measurements` are the patient's true values (absent ones default to normal);
  depth_cm / velocity_scale fix what is otherwise drawn at random; with
  overlays=False the burned-in layer is left out but the same random draws are made.
  `phases` [T] (cycles) draws the B-mode frames at those phases instead of a still at
  end-diastole (T = 1) or T frames from a random phase: over one cycle, or with `fps` > 0 at
  that frame rate (a cine of T / fps seconds at the drawn heart rate, 55-100 bpm); the same
  random draws are made either way.
  `site` (synthetic_sites) is the lab's scanner: gain, dynamic range, speckle, sector width,
  text layout. `sex` is accepted for symmetry with the captions; the anatomy is set by the values.
  """
  del sex
  lab = synthetic_sites.get(site)
  info = schema.VIEW_INFO[schema.check_view(view)]
  if info.kind == "unknown":
    raise ValueError("render_view draws a real view; label it 'unknown' afterwards if needed.")
  m = _defaults(measurements)
  heart = anat.heart_from_measurements(m, bsa)
  lay = lay_mod.layout_for(view, image_size, num_frames, lab.half_angle_deg)
  gain = rng.uniform(*lab.gain)
  dyn_range = rng.uniform(*lab.dyn_range)  # B-mode dynamic range (decades); Doppler has its own map
  hr = rng.uniform(55, 100)
  phase0 = rng.random()
  mask = lay_mod.ultrasound_mask(lay)
  frames = np.zeros((num_frames, image_size, image_size), np.float32)
  labels = np.zeros((num_frames, image_size, image_size), np.uint8)
  points = np.full((num_frames, len(anat.LANDMARKS), 2), np.nan, np.float32)
  depth, vscale, base_row, span = 0.0, 0, 0, 0.0
  given_phases = phases
  if info.kind == "doppler":
    vmax = m["av_vmax"] if view == "cw_av" else m["tr_vmax"]
    vscale = velocity_scale or int(min(8, math.ceil(vmax * 1.1 + rng.uniform(0.2, 1.6))))
    sweep = 2.4 * hr / 60.0                       # beats across the strip
    thumb = _thumbnail(lay, view, rng)
    r0, r1, c0, c1 = lay.strip
    for t in range(num_frames):
      spec, base_row = _doppler(view, vmax, lay, vscale, phase0 + t * 0.15, sweep, rng, gain)
      frames[t, r0:r1, c0:c1] = spec
      frames[t] = np.maximum(frames[t], thumb)
    cycles = sweep
  else:
    lo, hi = anat.DEPTH_RANGE[view]
    depth = depth_cm or float(np.clip(max(rng.uniform(lo, hi), anat.needed_depth(view, heart)),
                                      lo, hi + 4))
    # Cycles per frame: a clip at a stated frame rate spans T / fps seconds of the heart rate.
    per_frame = (hr / 60.0) / fps if fps > 0 else 1.0 / num_frames
    phases = np.array([0.0]) if num_frames == 1 else phase0 + np.arange(num_frames) * per_frame
    if given_phases is not None:
      phases = np.asarray(given_phases, np.float64).reshape(num_frames)
    frames[:], lab_map, probe = _bmode(view, heart, lay, phases, depth, rng, gain, dyn_range, lab)
    labels[:] = lab_map
    for t, p in enumerate(phases):
      for name, (xa, ya) in anat.landmarks(view, float(p), heart).items():
        points[t, anat.LANDMARKS.index(name)] = probe.to_pixel(lay, xa, ya)
    cycles = 2.5 * hr / 60.0
    if lay.kind == "sector_mmode":
      r0, r1, c0, c1 = lay.strip
      # The M-mode is zoomed onto the LV (its own cm ticks) so wall motion spans many pixels.
      span = max(rng.uniform(7.0, 10.0), 2 * (heart.rd + heart.ts + heart.tp) + 2.0)
      frames[:, r0:r1, c0:c1] = _mmode(view, heart, lay, span, phase0, cycles, rng, gain, dyn_range)
  layer = np.zeros((image_size, image_size), np.uint8)
  _overlays(layer, mask, view, lay, depth, rng, vscale, base_row, span, lab)
  e_r0, e_r1, e_c0, e_c1 = lay.ecg
  if lay.strip is not None:       # the ECG runs in step with the strip's time axis
    per_col = cycles / (lay.strip[3] - lay.strip[2])
    ecg_start = phase0 - (lay.strip[2] - e_c0) * per_col
    ecg_cycles = per_col * (e_c1 - e_c0)
  else:                           # sweeping trace that ends at the displayed frame
    ecg_cycles = cycles
    ecg_start = float(phases[-1]) + 0.05 - cycles
  lay_mod.draw_ecg(layer, lay, ecg_start, ecg_cycles, int(rng.integers(120, 200)),
                   rng.normal(0.0, 0.015, image_size))
  out = np.clip(frames, 0, 255).astype(np.uint8)
  if overlays:
    out = np.maximum(out, layer[None])
    if lay.kind == "sector":      # frame marker on the ECG (R wave for a still = end-diastole)
      for t, p in enumerate(phases):
        col = e_c0 + int((p - ecg_start) / ecg_cycles * (e_c1 - e_c0))
        out[t, e_r0:e_r1, col:col + 1] = 230
  spacing = 10.0 * depth / lay.radius if depth else float("nan")
  if info.kind == "doppler":
    phases = np.full(num_frames, np.nan)   # a spectral strip spans several beats
  return Rendered(out, labels, points, np.asarray(phases, np.float32), spacing)
