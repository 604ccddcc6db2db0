"""``semsynth import-official``: official OASIS key names and label spaces in, same images out."""


import pytest
import torch

from semsynth.cli import main
from semsynth.config import DataConfig
from semsynth.data import dataset_info
from semsynth.methods.oasis.discriminator import OASISDiscriminator, OASISDiscriminatorConfig
from semsynth.methods.oasis.generator import OASISGenerator, OASISGeneratorConfig
from semsynth.model.official.oasis import (
    OFFICIAL_DATASETS,
    channel_map,
    discriminator_to_official,
    generator_to_official,
)
from semsynth.sample.sampler import Sampler

GEN = OASISGeneratorConfig(channels=(16, 16, 8, 8), z_dim=64, spade_hidden=12)
DISC = OASISDiscriminatorConfig(channels=(8, 8, 16), last_channels=8)


def _random_networks(dataset):
    """semsynth G and D with random weights and non-trivial BatchNorm statistics."""
    torch.manual_seed(0)
    info = dataset_info(DataConfig(dataset=dataset))
    _, h, w = OFFICIAL_DATASETS[dataset]
    g = OASISGenerator(GEN, info.semantic_nc, h, w)
    d = OASISDiscriminator(DISC, info.semantic_nc)
    g.train()
    with torch.no_grad():
        lab = torch.randint(0, info.semantic_nc, (2, h // 32, w // 32)).repeat_interleave(32, 1).repeat_interleave(32, 2)
        g(torch.nn.functional.one_hot(lab, info.semantic_nc).permute(0, 3, 1, 2).float())
    return g.eval(), d.eval(), info


def _write_official(tmp_path, dataset):
    g, d, info = _random_networks(dataset)
    g_off = generator_to_official(g.state_dict(), dataset)
    d_off = discriminator_to_official(d.state_dict(), dataset)
    models = tmp_path / "checkpoints" / "run" / "models"
    models.mkdir(parents=True)
    torch.save(g_off, models / "latest_EMA.pth")
    torch.save(d_off, models / "latest_D.pth")
    return models, g, d, info, g_off, d_off


def test_official_key_names_and_shapes():
    g, d, _ = _random_networks("ade20k")
    off = generator_to_official(g.state_dict(), "ade20k")
    # official models/generator.py + norms.py names; old-style spectral norm tensors
    assert off["fc.weight"].shape == (16, 64 + 151, 3, 3)
    assert off["body.0.norm_0.mlp_shared.0.weight"].shape == (12, 64 + 151, 3, 3)
    assert off["body.0.norm_0.mlp_gamma.weight"].shape == (16, 12, 3, 3)
    assert off["body.0.norm_0.first_norm.running_var"].shape == (16,)
    assert off["body.1.conv_0.weight_orig"].shape == (8, 16, 3, 3)
    assert off["body.1.conv_0.weight_u"].shape == (8,) and off["body.1.conv_0.weight_v"].shape == (16 * 9,)
    assert off["body.1.conv_s.weight_orig"].shape == (8, 16, 1, 1) and "body.1.conv_s.bias" not in off
    assert off["conv_img.weight"].shape == (3, 8, 3, 3)
    assert not any("parametrizations" in k for k in off)
    doff = discriminator_to_official(d.state_dict(), "ade20k")
    # official models/discriminator.py: Sequential-wrapped convs, N+1 = 152 outputs
    assert doff["body_down.0.conv1.0.weight_orig"].shape == (8, 3, 3, 3)
    assert doff["body_down.1.conv1.1.weight_orig"].shape == (8, 8, 3, 3)
    assert doff["body_down.1.conv2.1.weight_orig"].shape == (8, 8, 3, 3)
    assert doff["body_up.1.conv1.2.weight_orig"].shape == (8, 16, 3, 3)
    assert doff["layer_up_last.weight"].shape == (152, 8, 1, 1)


def test_label_space_maps_by_hand():
    assert channel_map("ade20k")[:3] == [0, 1, 2]
    cmap = channel_map("coco_stuff")
    assert cmap[0] == 1 and cmap[181] == 182 and cmap[182] == 0  # don't-care id 182 = official channel 0
    assert len(channel_map("cityscapes")) == 34  # official channel 34 is unused
    g, _, _ = _random_networks("coco_stuff")
    off = generator_to_official(g.state_dict(), "coco_stuff")
    ours = g.state_dict()["fc.weight"]
    assert torch.equal(off["fc.weight"][:, 64 + 0], ours[:, 64 + 182])  # don't-care
    assert torch.equal(off["fc.weight"][:, 64 + 1], ours[:, 64 + 0])  # person
    off_c = generator_to_official(_random_networks("cityscapes")[0].state_dict(), "cityscapes")
    assert off_c["fc.weight"].shape[1] == 64 + 35 and torch.count_nonzero(off_c["fc.weight"][:, 64 + 34]) == 0


@pytest.mark.parametrize("dataset", ["ade20k", "cityscapes", "coco_stuff"])
def test_import_round_trip_gives_the_same_images_and_logits(tmp_path, dataset):
    models, g, d, info, _, _ = _write_official(tmp_path, dataset)
    out = tmp_path / "export"
    assert main(["import-official", str(models), "--dataset", dataset, "--out", str(out)]) == 0
    sampler = Sampler.from_checkpoint(out)
    assert sampler.info.semantic_nc == info.semantic_nc and sampler.config.model.generator == GEN
    _, h, w = OFFICIAL_DATASETS[dataset]
    lab = torch.randint(0, info.semantic_nc, (2, h // 16, w // 16)).repeat_interleave(16, 1).repeat_interleave(16, 2)
    z = torch.randn(2, 64)
    expected = g(torch.nn.functional.one_hot(lab, info.semantic_nc).permute(0, 3, 1, 2).float(), z).detach()
    assert torch.allclose(sampler.generate(lab, z=z), expected, atol=1e-6, rtol=0)
    from safetensors.torch import load_file

    d2 = OASISDiscriminator(sampler.config.model.discriminator, info.semantic_nc)
    d2.load_state_dict(load_file(str(out / "discriminator.safetensors")))
    x = torch.rand(1, 3, h, w) * 2 - 1
    assert torch.allclose(d2.eval()(x), d(x), atol=1e-6, rtol=0)


def test_real_file_quirks_prefix_no_counter_no_noise_no_spectral_norm(tmp_path):
    """What real official files may have: a DataParallel ``module.`` prefix, BatchNorm without
    ``num_batches_tracked`` (SynchronizedBatchNorm2d), ``--no_3dnoise`` (z_dim 0) and
    ``--no_spectral_norm`` (plain ``weight`` keys)."""
    torch.manual_seed(1)
    info = dataset_info(DataConfig(dataset="coco_stuff"))
    cfg = OASISGeneratorConfig(channels=(8, 8, 8), z_dim=0, spade_hidden=4, spectral_norm=False)
    g = OASISGenerator(cfg, info.semantic_nc, 256, 256).eval()
    off = generator_to_official(g.state_dict(), "coco_stuff", z_dim=0)
    assert "body.0.conv_0.weight" in off and off["fc.weight"].shape[1] == 183
    off = {"module." + k: v for k, v in off.items() if not k.endswith("num_batches_tracked")}
    torch.save(off, tmp_path / "100_G.pth")
    out = tmp_path / "export"
    assert main(["import-official", str(tmp_path / "100_G.pth"), "--dataset", "coco_stuff", "--z-dim", "0",
                 "--out", str(out)]) == 0
    s = Sampler.from_checkpoint(out)
    assert s.config.model.generator == cfg and s.z_dim == 0
    lab = torch.randint(0, 183, (1, 16, 16)).repeat_interleave(16, 1).repeat_interleave(16, 2)
    expected = g(torch.nn.functional.one_hot(lab, 183).permute(0, 3, 1, 2).float()).detach()
    assert torch.allclose(s.generate(lab), expected, atol=1e-6, rtol=0)
    # without --z-dim 0 the error says what to pass
    assert main(["import-official", str(tmp_path / "100_G.pth"), "--dataset", "coco_stuff",
                 "--out", str(tmp_path / "x")]) == 2


def test_coco_discriminator_rows_by_value():
    _, d, _ = _random_networks("coco_stuff")
    ours = d.state_dict()["classifier.weight"]
    off = discriminator_to_official(d.state_dict(), "coco_stuff")["layer_up_last.weight"]
    assert off.shape[0] == 184
    assert torch.equal(off[0], ours[0])  # fake
    assert torch.equal(off[1], ours[1 + 182])  # official class 0 = don't-care = semsynth id 182
    assert torch.equal(off[2], ours[1 + 0])  # person


def test_import_errors_name_the_file_and_shapes(tmp_path, capsys):
    models, *_ = _write_official(tmp_path, "ade20k")
    out = tmp_path / "export"
    assert main(["import-official", str(models), "--dataset", "cityscapes", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "latest_EMA.pth" in err and "(16, 215, 3, 3)" in err and "99" in err  # 35 labels + 64 noise
    assert main(["import-official", str(models / "nope_EMA.pth"), "--dataset", "ade20k", "--out", str(out)]) == 2
    assert "nope_EMA.pth" in capsys.readouterr().err
    assert main(["import-official", str(models / "latest_D.pth"), "--dataset", "ade20k", "--out", str(out)]) == 2
    assert "discriminator file" in capsys.readouterr().err
    junk = tmp_path / "junk_G.pth"
    torch.save({"weight": torch.zeros(3)}, junk)
    assert main(["import-official", str(junk), "--dataset", "ade20k", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "junk_G.pth" in err and "not an OASIS generator" in err
    text = tmp_path / "text_G.pth"
    text.write_text("hello")
    assert main(["import-official", str(text), "--dataset", "ade20k", "--out", str(out)]) == 2
    assert "text_G.pth" in capsys.readouterr().err
    assert not out.exists()
