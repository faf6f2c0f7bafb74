"""Simulated echo labs: what differs between two hospitals' synthetic data.

Site "a" is the default synthetic dataset, unchanged. Site "b" is a second lab for the mixture
experiments (docs/results.md, "Synthetic and real together"): a scarce "real" side with
another scanner's look, a sicker and heavier population and a report protocol that never
states the left atrial volume index.

  --config.input.synthetic.site=b        # configs/echovlm.py:data=site_b sets it, with 150 patients

numpy-free and light: reader_options checks names against SITES.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Site:
  """One lab's population, report protocol and scanner appearance."""
  name: str
  # Population (synthetic.sample_patient).
  healthy_rate: float = 0.2              # share of patients drawn with no phenotype
  disease_scale: float = 1.0             # multiplies each phenotype's base probability
  weight_shift_kg: float = 0.0           # added to the sex-specific mean weight
  height_shift_cm: float = 0.0           # added to the sex-specific mean height
  # Report protocol: measurements this lab never reports (absent from every record, so the
  # labels that need them are unknown and the losses mask them).
  unreported: tuple[str, ...] = ()
  # Appearance (synthetic_render): display gain and B-mode dynamic range (decades), drawn
  # uniformly per image; speckle grain as pixels per axial / lateral cell; sector width.
  gain: tuple[float, float] = (0.75, 1.1)
  dyn_range: tuple[float, float] = (1.4, 1.9)
  speckle_axial_px: int = 1
  speckle_lateral_px: int = 3
  half_angle_deg: float = 35.0
  vendors: tuple[str, ...] = ("SIMSCAN", "ECHOSIM", "SYNUS", "PSEUDO")
  text_mirrored: bool = False            # scanner text on the other side of the screen


SITES = {
    "a": Site("a"),
    # Another vendor: brighter, flatter images, coarser speckle, a narrower sector, its own
    # text layout; a tertiary centre's patients: more disease, heavier.
    "b": Site("b", healthy_rate=0.08, disease_scale=1.5, weight_shift_kg=12.0,
              height_shift_cm=-3.0, unreported=("lavi",), gain=(0.95, 1.3), dyn_range=(2.1, 2.6),
              speckle_axial_px=2, speckle_lateral_px=5, half_angle_deg=28.0,
              vendors=("NOVASONIC", "BETAVUE"), text_mirrored=True),
}


def get(name: str) -> Site:
  """The site called `name`; a ValueError naming the config key otherwise."""
  if name not in SITES:
    raise ValueError(f"config.input.synthetic.site={name!r}: expected one of {sorted(SITES)}.")
  return SITES[name]
