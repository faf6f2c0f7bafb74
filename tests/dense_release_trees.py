"""Clean CAMUS, EchoNet-Dynamic and EchoNet-LVH releases big enough to train on (a global
batch of 8 from the train split), in the layouts of camus_tree.py, echonet_dynamic_tree.py
and echonet_lvh_tree.py, with the same geometry; those trees test the readers' bad inputs.
Each writer returns {record key: what the build must hold}.
"""

from __future__ import annotations

import os

from tests import camus_tree, dense_fixtures, echonet_dynamic_tree, echonet_lvh_tree

# patients / videos per split: train fills a batch of 8 examples.
CAMUS_SPLITS = {"train": 5, "validation": 1, "test": 2}        # x 2 views each
ECHONET_SPLITS = {"train": 8, "validation": 2, "test": 2}
EFS = (41.0, 48.5, 52.0, 57.5, 60.0, 63.5, 66.0, 70.5)


def _names(splits: dict[str, int]) -> list[tuple[str, str]]:
  return [(split, i) for split, n in splits.items() for i in range(n)]


def write_camus(root: str) -> dict[str, dict]:
  """database_nifti/ with the official split files; every patient's two views usable."""
  expected, lists = {}, {s: [] for s in CAMUS_SPLITS}
  for k, (split, _) in enumerate(_names(CAMUS_SPLITS)):
    name = f"patient{k + 1:04d}"
    folder = os.path.join(root, "database_nifti", name)
    os.makedirs(folder)
    lists[split].append(name)
    ef = EFS[k % len(EFS)]
    for view, geometry in camus_tree.VIEWS.items():
      with open(os.path.join(folder, f"Info_{view}.cfg"), "w", encoding="utf-8") as f:
        f.write(f"ED: 1\nES: 2\nNbFrame: 2\nSex: {'FM'[k % 2]}\nAge: {50 + k}\n"
                f"ImageQuality: Good\nEF: {ef}\nFrameRate: 40.0\n")
      pair = {}
      for phase in ("ED", "ES"):
        labels = camus_tree.label_map(view, phase)
        img = camus_tree.image(view, labels, seed=10 * k + (phase == "ES"))
        stem = os.path.join(folder, f"{name}_{view}_{phase}")
        dense_fixtures.write_nifti(stem + ".nii.gz", img, geometry["spacing"])
        dense_fixtures.write_nifti(stem + "_gt.nii.gz", labels, geometry["spacing"])
        pair[phase] = dict(image=img, mask=labels)
      expected[f"{name}_{view}"] = dict(pair, split=split, ef=ef, view=view,
                                        spacing_mm=geometry["spacing"])
  os.makedirs(os.path.join(root, "database_split"))
  for split, file in {"train": "subgroup_training.txt", "validation": "subgroup_validation.txt",
                      "test": "subgroup_testing.txt"}.items():
    with open(os.path.join(root, "database_split", file), "w", encoding="utf-8") as f:
      f.write("\n".join(lists[split]) + "\n")
  return expected


def write_echonet_dynamic(root: str) -> dict[str, dict]:
  """Videos/, FileList.csv and VolumeTracings.csv; ES traced at frame 3, ED at frame 9."""
  t = echonet_dynamic_tree
  os.makedirs(os.path.join(root, "Videos"))
  files, traces, expected = [], [], {}
  for k, (split, _) in enumerate(_names(ECHONET_SPLITS)):
    name = f"0XC{k:02d}"
    frames = t.video(k)
    dense_fixtures.write_avi(os.path.join(root, "Videos", name + ".avi"), frames, t.FPS)
    ef = EFS[k % len(EFS)]
    files.append(list(t._row(name, {"train": "TRAIN", "validation": "VAL", "test": "TEST"}[split],
                             str(ef)).values()))
    for frame, ellipse in ((3, t.SMALL), (9, t.LARGE)):
      traces.extend((name + ".avi", *xy, frame) for xy in t.tracing(ellipse))
    expected[name] = dict(frames=frames, split=split, ef=ef, ed=(9, t.LARGE), es=(3, t.SMALL))
  dense_fixtures.write_csv(os.path.join(root, "FileList.csv"), list(t._row("x")), files)
  dense_fixtures.write_csv(os.path.join(root, "VolumeTracings.csv"), ["FileName", "X1", "Y1", "X2", "Y2", "Frame"],
             traces)
  return expected


def write_echonet_lvh(root: str) -> dict[str, dict]:
  """Batch1/ and MeasurementsList.csv: each video's four calipers, shifted right by k px."""
  t = echonet_lvh_tree
  os.makedirs(os.path.join(root, "Batch1"))
  table, expected = [], {}
  for k, (split, _) in enumerate(_names(ECHONET_SPLITS)):
    name = f"0XL{k:02d}"
    rows = t._calipers(float(k))
    dense_fixtures.write_avi(os.path.join(root, "Batch1", name + ".avi"), t.video(k, rows), t.FPS)
    for calc, value, frame, x1, y1, x2, y2 in rows:
      table.append([name, calc, value, frame, x1, x2, y1, y2, t.NUM_FRAMES, t.FPS, t.WIDTH,
                    t.HEIGHT, {"validation": "val"}.get(split, split)])
    expected[name] = dict(split=split, rows=rows)
  dense_fixtures.write_csv(os.path.join(root, "MeasurementsList.csv"), t.HEADER,
             [[i] + row for i, row in enumerate(table)])
  return expected

