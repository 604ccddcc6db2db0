"""Instance-edge input channel (SPADE/CC-FPSE on Cityscapes and COCO-Stuff), the official
Cityscapes label_nc 35, polegroup for CRN, CC-FPSE's VAE recipe and the VAE evaluation latent
(issue 20, points 2, 4 and 6)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from semsynth.cli import main
from semsynth.config import DataConfig, load_config
from semsynth.data import build_dataset, dataset_info
from semsynth.data.cityscapes import train_id_lut
from semsynth.labels import edge_map, label_input
from semsynth.sample.sampler import Sampler
from semsynth.types import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / ".." / "shared" / "datasets" / "format_samples"
CITY = SAMPLES / "cityscapes"
SPADE_TINY = ROOT / "configs" / "spade" / "tiny.yaml"
CC_TINY = ROOT / "configs" / "cc_fpse" / "tiny.yaml"


def test_edge_map_marks_both_pixels_of_every_differing_neighbour_pair():
    ids = torch.tensor([[[0, 0, 1],
                         [0, 0, 1],
                         [2, 2, 2]]])
    want = torch.tensor([[0., 1., 1.],
                         [1., 1., 1.],
                         [1., 1., 1.]])
    assert torch.equal(edge_map(ids), want[None, None])
    assert torch.equal(edge_map(torch.full((2, 4, 5), 7)), torch.zeros(2, 1, 4, 5))
    with pytest.raises(ValueError, match="integers"):
        edge_map(torch.zeros(1, 3, 3))


def test_label_input_appends_the_edges_last_and_defaults_to_class_boundaries():
    info = dataset_info(DataConfig(dataset="cityscapes", instance_edges=True))
    assert (info.semantic_nc, info.input_nc) == (34, 35)
    label = torch.zeros(1, 4, 4, dtype=torch.int64)
    label[:, :, 2:] = 26  # two regions: car on the right
    edges = torch.zeros(1, 1, 4, 4)
    edges[..., 0, 0] = 1
    x = label_input(label, info, edges)
    assert x.shape == (1, 35, 4, 4) and torch.equal(x[:, 34:], edges)
    assert torch.equal(x[:, :34].argmax(1), label)
    fallback = label_input(label, info)  # a painted map: the class boundary is the edge
    assert torch.equal(fallback[:, 34:], edge_map(label))
    assert fallback[0, 34].sum() == 8  # columns 1 and 2
    plain = dataset_info(DataConfig(dataset="cityscapes"))
    assert label_input(label, plain, edges).shape == (1, 34, 4, 4)
    with pytest.raises(ValueError, match="does not fit"):
        label_input(label, info, torch.zeros(1, 1, 3, 4))


def _nearest(a: np.ndarray, h: int, w: int) -> np.ndarray:
    mode = "I" if a.max() > 255 else "L"
    return np.asarray(Image.fromarray(a.astype(np.int32 if mode == "I" else np.uint8), mode).resize((w, h),
                                                                                                 Image.NEAREST))


@pytest.mark.parametrize("cache", [False, True])
def test_cityscapes_items_carry_the_edges_of_the_transformed_instance_map(cache):
    cfg = DataConfig(dataset="cityscapes", root=str(CITY), height=32, width=64, instance_edges=True,
                     options={"label_nc": 35}, cache=cache, flip=True)
    assert build_dataset(cfg, "train", train=False).info.semantic_nc == 35
    ds = build_dataset(cfg, "train", train=True, seed=3)
    inst_file = ds.instance_file(0)
    assert inst_file.name.endswith("_gtFine_instanceIds.png") and inst_file.is_file()
    inst = np.asarray(Image.open(inst_file)).astype(np.int64)
    assert inst.max() > 1000  # instance ids labelId * 1000 + k
    flips = set()
    for epoch in range(8):
        ds.set_epoch(epoch)
        image, label, edges = ds[0]
        flipped = bool(ds.transform.params(ds.rng(0))[2])
        flips.add(flipped)
        want = _nearest(inst, 32, 64)
        if flipped:
            want = want[:, ::-1]
        want_edges = edge_map(torch.from_numpy(np.ascontiguousarray(want).astype(np.int64))[None])[0]
        assert edges.shape == (1, 32, 64) and edges.dtype == torch.float32
        assert torch.equal(edges, want_edges)
        # the instance edges hold the class boundaries and more (touching instances of a class)
        assert bool((edges[0] >= edge_map(label[None])[0, 0]).all())
    assert flips == {False, True}


def test_coco_stuff_instance_maps_and_missing_or_unsupported_ones():
    cfg = DataConfig(dataset="coco_stuff", root=str(SAMPLES / "coco_stuff"), height=32, width=32,
                     instance_edges=True)
    ds = build_dataset(cfg, "val", train=False)
    assert ds.instance_file(0).parent.name == "val_inst"
    image, label, edges = ds[0]
    inst = np.asarray(Image.open(ds.instance_file(0))).astype(np.int64)
    assert torch.equal(edges, edge_map(torch.from_numpy(_nearest(inst, 32, 32).astype(np.int64))[None])[0])
    with pytest.raises(ConfigError, match="camvid.*no instance maps"):
        dataset_info(DataConfig(dataset="camvid", instance_edges=True))
    with pytest.raises(ConfigError, match="instance_edges"):
        load_config(ROOT / "configs" / "oasis" / "tiny.yaml", ["data.instance_edges=true"])


def test_cityscapes_label_nc_and_polegroup_options():
    lut = train_id_lut()
    assert lut[18] == 19 and lut[17] == 5  # polegroup void, as the official evaluation
    assert train_id_lut("pole")[18] == 5 and (np.delete(train_id_lut("pole"), 18) == np.delete(lut, 18)).all()
    info = dataset_info(DataConfig(dataset="cityscapes", options={"label_nc": 35}))
    assert info.semantic_nc == 35 and info.class_names[:34] == dataset_info(DataConfig(dataset="cityscapes")).class_names
    for opts in ({"polegroup": "pole"}, {"label_ids": "train", "polegroup": "grey"}, {"label_nc": 36},
                 {"label_ids": "train", "label_nc": 35}):
        with pytest.raises(ConfigError, match="polegroup|label_nc"):
            dataset_info(DataConfig(dataset="cityscapes", options=opts))
    cfg = load_config(ROOT / "configs" / "crn" / "cityscapes.yaml")
    ds = build_dataset(DataConfig(dataset="cityscapes", root=str(CITY), height=32, width=64,
                                  options=dict(cfg.data.options)), "train", train=False)
    raw = np.asarray(Image.open(ds.pairs[0][1])).astype(np.int64)
    assert np.array_equal(ds.load_label(0), train_id_lut("pole")[raw])


@pytest.fixture(scope="module")
def spade_edges_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("spade_edges")
    assert main(["train", str(SPADE_TINY), "--out", str(out), "--no-progress", "--set", "train.max_steps=1",
                 "--set", "data.dataset=cityscapes", "--set", f"data.root={CITY}", "--set", "data.val_split=train",
                 "--set", "data.instance_edges=true", "--set", "data.height=32", "--set", "data.width=64",
                 "--set", "data.options={label_nc: 35}", "--set", "train.grid_labels=2",
                 "--set", "train.grid_samples=1"]) == 0
    return out


def test_spade_trains_samples_and_evaluates_with_instance_edges(spade_edges_run, tmp_path, capsys):
    ckpt = spade_edges_run / "checkpoints" / "latest.pt"
    sampler = Sampler.from_checkpoint(ckpt, device="cpu")
    assert sampler.info.instance_edges and sampler.generator.semantic_nc == 36
    ds = build_dataset(sampler.config.data, "train", train=False)
    _, label, edges = ds[2]  # touching instances of one class: edges beyond the class boundaries
    assert not torch.equal(edges[None], edge_map(label[None]))
    with_edges = sampler.generate(label[None], seeds=[0], edges=edges[None])
    boundaries = sampler.generate(label[None], seeds=[0])  # a painted map: class-boundary edges
    assert with_edges.shape == (1, 3, 32, 64) and not torch.equal(with_edges, boundaries)
    assert torch.equal(boundaries, sampler.generate(label[None], seeds=[0], edges=edge_map(label[None])))
    capsys.readouterr()
    assert main(["eval", str(ckpt), "--limit", "2", "--metrics", "fid", "--json", "--device", "cpu"]) == 0
    assert np.isfinite(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["fid"])
    assert main(["eval", str(ckpt), "--limit", "2", "--metrics", "fid", "--vae-latent", "prior", "--device", "cpu"]) != 0
    assert "applies only to a generator with the VAE image encoder" in capsys.readouterr().err


def test_cc_fpse_vae_recipe_trains_and_both_evaluation_latents(tmp_path, capsys):
    out = tmp_path / "run"
    vae = ["--set", "model.generator.use_vae=true", "--set", "model.generator.encoder.ndf=4",
           "--set", "model.generator.encoder.input_size=16", "--set", "model.lambda_vgg=0"]
    assert main(["train", str(CC_TINY), "--out", str(out), "--no-progress", "--set", "train.max_steps=1", *vae]) == 0
    rec = json.loads((out / "stats.jsonl").read_text().splitlines()[-1])
    assert rec["G_kld"] > 0 and np.isfinite(rec["G_adv"])
    sampler = Sampler.from_checkpoint(out / "checkpoints" / "latest.pt", device="cpu")
    g = sampler.generator
    assert g.has_encoder and g.noise == "vector" and g.z_dim == 256
    ds = build_dataset(sampler.config.data, "val", train=False)
    image, label = ds[0]
    z1 = sampler.posterior_latent(image[None], [5])
    mu, logvar = g.encode(image[None])
    from semsynth.noise import noise_from_seeds
    assert torch.allclose(z1, mu + noise_from_seeds([5], 256, "cpu") * torch.exp(0.5 * logvar))
    assert torch.equal(z1, sampler.posterior_latent(image[None], [5]))
    capsys.readouterr()
    assert main(["eval", str(out / "checkpoints" / "latest.pt"), "--limit", "2", "--metrics", "fid", "--json",
                 "--device", "cpu", "--vae-latent", "encode_real"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["vae_latent"] == "encode_real" and np.isfinite(res["fid"])
    with pytest.raises(ConfigError, match="vae_latent"):
        load_config(CC_TINY, ["eval.vae_latent=encode_real"])  # no encoder: nothing to encode
    with pytest.raises(ConfigError, match="lambda_kld"):
        load_config(CC_TINY, ["model.lambda_kld=0.1"])


def test_cached_items_keep_no_full_resolution_label_and_the_budget_counts_the_instance_map():
    from semsynth.data.cache import cached_pair_bytes

    cfg = DataConfig(dataset="cityscapes", root=str(CITY), height=32, width=64, instance_edges=True, cache=True)
    ds = build_dataset(cfg, "train", train=True)
    for i in range(len(ds)):
        ds[i]
    assert len(ds._resized_cache) == len(ds) and not ds._lab_cache and not ds._img_cache
    plain = build_dataset(DataConfig(dataset="cityscapes", root=str(CITY), height=32, width=64), "train", train=True)
    assert cached_pair_bytes(ds) - cached_pair_bytes(plain) == 4 * 32 * 64


def test_crn_polegroup_as_pole_is_input_only_the_ground_truth_keeps_it_void(tmp_path):
    # a label file with polegroup (18) next to pole (17): the input reads it as pole, the
    # evaluation's ground truth as void (train id 19), as the official evaluation
    root = tmp_path / "cs"
    src_img = next((CITY / "leftImg8bit" / "train" / "aachen").glob("*.png"))
    (root / "leftImg8bit" / "val" / "x").mkdir(parents=True)
    (root / "gtFine" / "val" / "x").mkdir(parents=True)
    img = np.asarray(Image.open(src_img).resize((64, 32)))
    Image.fromarray(img).save(root / "leftImg8bit" / "val" / "x" / "x_000000_000000_leftImg8bit.png")
    lab = np.full((32, 64), 7, np.uint8)
    lab[:, 10:12], lab[:, 20:22] = 17, 18
    Image.fromarray(lab).save(root / "gtFine" / "val" / "x" / "x_000000_000000_gtFine_labelIds.png")
    cfg = DataConfig(dataset="cityscapes", root=str(root), height=32, width=64,
                     options={"label_ids": "train", "polegroup": "pole"})
    ds = build_dataset(cfg, "val", train=False)
    assert set(np.unique(ds.load_label(0)[:, 20:22])) == {5}
    assert set(np.unique(ds.load_ground_truth(0)[:, 20:22])) == {19}
    assert set(np.unique(ds.load_ground_truth(0)[:, 10:12])) == {5}
    assert dataset_info(DataConfig(dataset="cityscapes")).semantic_nc == 34
    from semsynth.data.cityscapes import Cityscapes
    assert Cityscapes.dataset_info().semantic_nc == 34  # no config: the default label space
