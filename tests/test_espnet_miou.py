"""Tests of the mIoU judge: confusion matrix, ESPNet (p=2, q=8) loading and its CamVid score."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from semsynth.config import DataConfig
from semsynth.data import build_dataset
from semsynth.data.cityscapes_ids import cityscapes_label_to_train_id
from semsynth.eval.miou import CAMVID_VOID, ConfusionMatrix, segment_and_score
from semsynth.eval.segmenters.espnet import ESPNet, default_weights_dir, load_espnet

WEIGHTS = default_weights_dir()
CAMVID = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "camvid"


# ---------------------------------------------------------------- confusion matrix


def _hand_example():
    # 4 classes; 255 = ignore. Class 3 occurs only under an ignored pixel -> zero union.
    target = np.array([[[0, 0, 1, 1], [0, 255, 1, 2]]], dtype=np.int64)
    pred = np.array([[[0, 1, 1, 1], [2, 3, 1, 2]]], dtype=np.int64)
    return pred, target


@pytest.mark.parametrize("ignore_index", [255, None])
def test_confusion_matrix_hand_computed(ignore_index):
    pred, target = _hand_example()
    cm = ConfusionMatrix(4, ["a", "b", "c", "d"])
    cm.update(torch.from_numpy(pred), torch.from_numpy(target), ignore_index=ignore_index)
    r = cm.compute()
    # class 0: TP 1, |gt| 3, |pred| 1 -> 1/3; class 1: TP 3, |gt| 3, |pred| 4 -> 3/4;
    # class 2: TP 1, |gt| 1, |pred| 2 -> 1/2; class 3: union 0 -> omitted.
    assert r["per_class_iou"].keys() == {"a", "b", "c"}
    assert r["per_class_iou"]["a"] == pytest.approx(100 / 3)
    assert r["per_class_iou"]["b"] == pytest.approx(75.0)
    assert r["per_class_iou"]["c"] == pytest.approx(50.0)
    assert r["miou"] == pytest.approx(100 * 19 / 36)
    assert r["pixel_acc"] == pytest.approx(100 * 5 / 7)
    assert r["num_pixels"] == 7
    assert r["matrix"].dtype == np.int64 and r["matrix"].sum() == 7
    assert r["matrix"][1, 1] == 3 and r["matrix"][0, 2] == 1


def test_confusion_matrix_accumulates_and_excludes_ignore():
    pred, target = _hand_example()
    cm = ConfusionMatrix(4)
    cm.update(pred, target, ignore_index=255)
    # a second image: all pixels ignored (class id 1 used as ignore_index) or out of range
    cm.update(np.array([[3, 3]]), np.array([[1, 9]]), ignore_index=1)
    r = cm.compute()
    assert r["miou"] == pytest.approx(100 * 19 / 36)
    assert set(r["per_class_iou"]) == {"0", "1", "2"}
    cm.reset()
    assert math.isnan(cm.compute()["miou"])


def test_confusion_matrix_errors():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match=r"\(1, 2, 3\).*\(1, 3, 2\)"):
        cm.update(np.zeros((1, 2, 3), np.int64), np.zeros((1, 3, 2), np.int64))
    with pytest.raises(ValueError, match="predictions"):
        cm.update(np.full((1, 2), 5), np.zeros((1, 2), np.int64))


# ---------------------------------------------------------------- cityscapes ids


def test_cityscapes_train_ids():
    lab = np.array([[7, 8, 26, 33], [0, 9, 24, -1]])
    want = np.array([[0, 1, 13, 18], [255, 255, 11, 255]])
    np.testing.assert_array_equal(cityscapes_label_to_train_id(lab), want)
    got = cityscapes_label_to_train_id(torch.from_numpy(lab))
    assert got.dtype == torch.int64
    np.testing.assert_array_equal(got.numpy(), want)
    with pytest.raises(ValueError):
        cityscapes_label_to_train_id(np.array([34]))


# ---------------------------------------------------------------- ESPNet


def test_missing_weights(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="espnet_camvid_p2q8.pth"):
        load_espnet("camvid", weights_dir=tmp_path)
    monkeypatch.setenv("SEMSYNTH_WEIGHTS", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_espnet("cityscapes")
    with pytest.raises(ValueError, match="unknown"):
        load_espnet("ade20k", weights_dir=tmp_path)


def test_corrupted_weights(tmp_path):
    (tmp_path / "espnet_camvid_p2q8.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="sha256"):
        load_espnet("camvid", weights_dir=tmp_path)


def test_espnet_loads_strictly():
    for name, c, skip in [("camvid", 12, "br"), ("cityscapes", 20, "conv")]:
        sd = torch.load(WEIGHTS / f"espnet_{name}_p2q8.pth", map_location="cpu", weights_only=True)
        net = ESPNet(c, p=2, q=8, skip=skip)
        res = net.load_state_dict(sd, strict=True)
        assert not res.missing_keys and not res.unexpected_keys
        with pytest.raises(RuntimeError):  # the other decoder variant does not fit
            ESPNet(c, skip="conv" if skip == "br" else "br").load_state_dict(sd, strict=True)
    seg = load_espnet("camvid")
    assert seg.input_size == (480, 360) and seg.num_classes == 11
    assert not seg.net.training
    out = seg.logits(torch.zeros(1, 3, 90, 120))
    assert out.shape == (1, 12, 360, 480)


@pytest.fixture(scope="module")
def camvid5():
    seg = load_espnet("camvid", batch_size=5)
    ds = build_dataset(DataConfig(dataset="camvid", root=str(CAMVID)), "val", train=False)
    imgs = np.stack([ds.load_image(i) for i in range(5)])
    labs = np.stack([ds.load_label(i) for i in range(5)])
    return seg, imgs, labs


def test_espnet_camvid_real_miou(camvid5):
    seg, imgs, labs = camvid5
    assert imgs.shape == (5, 360, 480, 3) and imgs.dtype == np.uint8
    r = segment_and_score(seg, list(imgs), list(labs), ignore_index=CAMVID_VOID)
    assert r["num_images"] == 5
    # measured with this module; shared/README.md: first 5 val images sorted by name: 69.19
    assert r["miou"] == pytest.approx(69.19, abs=0.05)
    assert r["pixel_acc"] == pytest.approx(95.28, abs=0.05)
    assert len(r["per_class_iou"]) == 11


def test_espnet_float_path_matches_uint8(camvid5):
    seg, imgs, labs = camvid5
    pu = seg.predict_uint8(imgs)
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    pf = seg.predict(x, batch_size=2)
    assert pu.shape == pf.shape == (5, 360, 480) and pf.dtype == torch.int64
    assert int(pf.max()) < 11 and int(pf.min()) >= 0
    assert (pf == pu).float().mean().item() > 0.999
    # a lower-resolution input is resized to 480x360 and scored against full-res labels
    small = torch.nn.functional.interpolate(x[:1], size=(180, 240), mode="bilinear")
    r = segment_and_score(seg, [small[0]], [labs[0]], ignore_index=CAMVID_VOID)
    assert r["num_images"] == 1 and r["miou"] > 40
