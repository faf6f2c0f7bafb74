"""The prediction CLI: DICOM (through data/dicom.load_frames), PNG / JPEG and folders are
predicted; an unreadable file is reported and skipped while the rest still get predictions."""

import json

import numpy as np
import pytest
from PIL import Image

from echovlm_jax.tools import predict
from tests import dicom_fixtures as fake_mimic
from tests.test_export import make_artifact


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
  d = tmp_path_factory.mktemp("predict_inputs")
  rng = np.random.RandomState(0)
  yy, xx = np.mgrid[:64, :80]
  fan = ((xx - 40) ** 2 + (yy - 4) ** 2 < 55 ** 2) & (np.abs(xx - 40) < (yy + 4) * 0.8)
  clip = (fan[None] * rng.randint(60, 255, (3, 64, 80))).astype(np.uint8)
  (d / "study").mkdir()
  dcm = fake_mimic.write_dicom(d / "study" / "clip.dcm", clip, mode="mono", phi=False)
  png = d / "frame.png"
  Image.fromarray(clip[0]).save(png)
  jpg = d / "study" / "still.jpg"
  Image.fromarray(np.stack([clip[1]] * 3, -1)).save(jpg)
  bad = d / "study" / "broken.dcm"
  bad.write_bytes(b"not a dicom at all" * 10)
  return dict(dir=str(d), study=str(d / "study"), dcm=dcm, png=str(png), jpg=str(jpg), bad=str(bad))


def test_read_frames_uses_the_dicom_loader(tmp_path_factory, inputs):
  from echovlm_jax.data import dicom
  got = predict.read_frames(inputs["dcm"], 1, 32)
  np.testing.assert_array_equal(got, dicom.load_frames(inputs["dcm"], num_frames=1, size=32))
  png = predict.read_frames(inputs["png"], 2, 32)
  assert png.shape == (2, 32, 32) and png.dtype == np.uint8
  with pytest.raises(predict.UnreadableFile, match="broken.dcm"):
    predict.read_frames(inputs["bad"], 1, 32)


def test_cli_table_skips_unreadable_files(tmp_path_factory, inputs, capsys):
  art = make_artifact(tmp_path_factory)
  code = predict.main(["--artifact", art["artifact"], inputs["png"], inputs["study"]])
  out, err = capsys.readouterr()
  assert code == 1                                      # one file failed
  assert "broken.dcm" in err and "skipped" in err
  for name in ("frame.png", "clip.dcm", "still.jpg"):
    assert name in out
  assert "broken.dcm" not in out and "aortic_stenosis" in out


def test_cli_json_and_success_exit_code(tmp_path_factory, inputs, capsys):
  art = make_artifact(tmp_path_factory)
  code = predict.main(["--artifact", art["artifact"], "--json", inputs["dcm"], inputs["png"]])
  out, _ = capsys.readouterr()
  assert code == 0
  data = json.loads(out)
  assert [r["file"] for r in data["results"]] == [inputs["dcm"], inputs["png"]]
  assert data["errors"] == []
  for r in data["results"]:
    assert abs(sum(r["view_probs"].values()) - 1.0) < 1e-4
    assert r["view"] in r["view_probs"]
    assert all(0.0 <= p <= 1.0 for p in r["findings"].values()) and len(r["findings"]) == 10


def test_cli_rejects_a_bad_artifact(tmp_path, inputs, capsys):
  assert predict.main(["--artifact", str(tmp_path), inputs["png"]]) == 2
  assert "MANIFEST.json" in capsys.readouterr().err
