"""CRN at 512p and 1024p (issue 20, point 5): the generators against the official
CQFIO/PhotographicImageSynthesis ``demo_512p.py`` / ``demo_1024p.py`` (widths, one output,
parameter counts derived by hand), their loss against the official unmasked formula, and
the warm start (``train.init_from`` / ``init_skip`` / ``freeze``) on tiny CPU runs."""

import json
from pathlib import Path

import pytest
import torch

from semsynth.cli import main
from semsynth.config import load_config
from semsynth.data import dataset_info
from semsynth.losses.best_of_k import min_over_outputs
from semsynth.methods.base import has_prefix
from semsynth.methods.crn.generator import CRNGenerator, CRNGeneratorConfig
from semsynth.methods.crn.method import imagenet_normalize
from semsynth.model.build import build_method
from semsynth.nn.perceptual import load_vgg16
from semsynth.train.loop import Trainer
from semsynth.types import ConfigError

ROOT = Path(__file__).resolve().parents[1]
CRN = ROOT / "configs" / "crn"
W256 = (1024, 1024, 1024, 1024, 1024, 512, 512)  # demo_256p.py: dim = 512 if sp >= 128 else 1024
W512 = W256 + (128,)  # demo_512p.py: dim = 128 at sp == 512
W1024 = W512 + (32,)  # demo_1024p.py: dim = 32 at sp == 1024


def _by_hand(widths, nc=20, k=1):
    """Σ over modules of conv1 (3·3·(nc + previous width)·w, no bias) + layer norm (γ, β:
    2w) + conv2 (3·3·w·w) + layer norm (2w), and the 1×1 output conv (w·3k weights + 3k
    biases): the official graph's g_* variables."""
    total, prev = 0, 0
    for w in widths:
        total += 9 * (nc + prev) * w + 2 * w + 9 * w * w + 2 * w
        prev = w
    return total + prev * 3 * k + 3 * k


def _count(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("widths,h,w,official", [(W512, 512, 1024, 98_622_851), (W1024, 1024, 2048, 98_674_531)])
def test_highres_generators_have_the_official_modules_and_parameter_counts(widths, h, w, official):
    assert _by_hand(W256, k=9) == 97_875_483  # the known 256p count: the formula is the official graph
    assert _by_hand(widths) == official
    with torch.device("meta"):
        g = CRNGenerator(CRNGeneratorConfig(channels=widths, num_outputs=1), 20, h, w)
    assert _count(g) == official
    assert [m.conv2.out_channels for m in g.refine] == list(widths)
    assert g.sizes[0] == (4, 8) and g.sizes[-1] == (h, w) and len(g.sizes) == len(widths)
    assert tuple(g.to_rgb.weight.shape) == (3, widths[-1], 1, 1)  # one image (g_<sp>_conv100: 3 channels)


def test_presets_build_with_the_official_trained_parameters(capsys):
    for name, g, frozen in (("cityscapes_512p", 98_622_851, None), ("cityscapes_1024p", 98_674_531, 97_861_632)):
        assert main(["info", str(CRN / f"{name}.yaml"), "--json"]) == 0
        params = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["parameters"]
        assert params.get("G") == g and params.get("G_frozen") == frozen, (name, params)
    # demo_1024p.py trains g_512* and g_1024* (conv1, conv2 and the output conv): by hand
    trained = (9 * 532 * 128 + 4 * 128 + 9 * 128 * 128) + (9 * 148 * 32 + 4 * 32 + 9 * 32 * 32) + (32 * 3 + 3)
    assert 98_674_531 - 97_861_632 == trained == 812_899
    cfg = load_config(CRN / "cityscapes_1024p.yaml")
    assert cfg.train.init_skip == ("to_rgb",) and cfg.train.lr_g == 1e-4 and cfg.train.batch_size == 1
    assert cfg.model.layer_weights == (1 / 2.6, 1 / 4.8, 1 / 3.7, 1 / 5.6, 10 / 1.5)


def test_the_one_output_loss_is_the_official_unmasked_loss():
    # demo_512p.py: compute_error = mean |fake − real| over all pixels and channels (no
    # masks), G_loss = Σ weights · terms; semsynth's class-masked loss with k = 1 equals it
    cfg = load_config(CRN / "tiny.yaml", ["model.generator.num_outputs=1",
                                          "model.layer_weights=[0.3846,0.2083,0.2703,0.1786,6.6667]"])
    method = build_method(cfg, dataset_info(cfg.data))
    gen = torch.Generator().manual_seed(0)
    label = torch.randint(0, method.info.semantic_nc, (2, 6, 8), generator=gen)
    label = label.repeat_interleave(8, 1).repeat_interleave(8, 2)  # 48×64
    image = torch.rand(2, 3, 48, 64, generator=gen) * 2 - 1
    onehot = torch.nn.functional.one_hot(label, method.info.semantic_nc).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        fake = method.generator.forward_all(onehot)
        ours = min_over_outputs(method.perceptual_per_class(fake, image, onehot), cfg.model.min_mean_weight)
        x_fake, x_real = imagenet_normalize(fake[:, 0]), imagenet_normalize(image)
        official = (x_fake - x_real).abs().mean()
        vgg = load_vgg16(torch.device("cpu"))
        for wt, f, r in zip(cfg.model.layer_weights, vgg(x_fake, method_layers(), pool="avg"),
                            vgg(x_real, method_layers(), pool="avg")):
            official = official + wt * (f - r).abs().mean()
    torch.testing.assert_close(ours, official, rtol=1e-5, atol=0)


def method_layers():
    from semsynth.methods.crn.method import CRN_LAYERS

    return CRN_LAYERS


def test_min_mean_weight_is_refused_with_one_output():
    with pytest.raises(ConfigError, match="model.min_mean_weight"):
        load_config(CRN / "tiny.yaml", ["model.generator.num_outputs=1", "model.min_mean_weight=0.01"])
    load_config(CRN / "tiny.yaml", ["model.min_mean_weight=0.01"])  # k = 2: applies


def test_prefixes_match_whole_components():
    assert has_prefix("refine.1.conv1.weight", "refine.1") and has_prefix("to_rgb", "to_rgb")
    assert not has_prefix("refine.10.conv1.weight", "refine.1") and not has_prefix("to_rgb.bias", "to_")


def test_warm_start_and_freeze_errors_name_the_key_or_file(tmp_path):
    with pytest.raises(ConfigError, match="train.init_skip applies only with train.init_from"):
        load_config(CRN / "tiny.yaml", ["train.init_skip=[to_rgb]"])
    with pytest.raises(ConfigError, match=r"train.freeze: 'refine.1' is given twice"):
        load_config(CRN / "tiny.yaml", ["train.freeze=[refine.1,refine.1]"])
    cfg = load_config(CRN / "tiny.yaml", ["train.freeze=[refine.9]"])
    with pytest.raises(ConfigError, match=r"train.freeze: 'refine.9' names no generator parameter.*refine.3, to_rgb"):
        build_method(cfg, dataset_info(cfg.data))
    cfg = load_config(CRN / "tiny.yaml", ["train.freeze=[refine,to_rgb]"])
    with pytest.raises(ConfigError, match="freezes every generator parameter"):
        build_method(cfg, dataset_info(cfg.data))
    missing = tmp_path / "nope" / "latest.pt"
    cfg = load_config(CRN / "tiny.yaml", [f"train.init_from={missing}"])
    with pytest.raises(ConfigError, match=f"train.init_from: no checkpoint at {missing}"):
        Trainer(cfg, tmp_path / "run", progress=False, data_check=False)
    assert not (tmp_path / "run").exists()  # stopped at the start: nothing written


LOW = ["data.height=24", "data.width=32", "model.generator.channels=[16,16,8]", "train.max_steps=1",
       "train.sample_every=1000", "train.tensorboard=false"]
HIGH = ["model.generator.channels=[16,16,8,4]", "model.generator.num_outputs=1", "train.sample_every=1000",
        "train.tensorboard=false", "train.max_steps=2"]


@pytest.fixture(scope="module")
def low_ckpt(tmp_path_factory):
    """A 1-step 24×32 run (3 modules, k = 2): the 'lower resolution' checkpoint."""
    out = tmp_path_factory.mktemp("crn_low")
    Trainer(load_config(CRN / "tiny.yaml", LOW), out, progress=False, data_check=False).run()
    return out / "checkpoints" / "latest.pt"


def _gen(state):
    return {k[len("generator."):]: v for k, v in state.items() if k.startswith("generator.")}


def test_warm_start_loads_the_lower_resolution_weights_and_freezes(low_ckpt, tmp_path):
    cfg = load_config(CRN / "tiny.yaml", [*HIGH, f"train.init_from={low_ckpt}", "train.init_skip=[to_rgb]",
                                          "train.freeze=[refine.0]"])
    t = Trainer(cfg, tmp_path / "high", progress=False, data_check=False)
    low = _gen(torch.load(low_ckpt, weights_only=True)["method"])
    start = {k: v.clone() for k, v in t.method.generator.state_dict().items()}
    for k, v in low.items():
        if not k.startswith("to_rgb"):
            assert torch.equal(start[k], v), k  # loaded exactly
    assert not torch.equal(start["to_rgb.weight"][:, :4], low["to_rgb.weight"][:3, :4, :, :])  # fresh
    assert "refine.3.conv1.weight" not in low  # the new module: fresh init
    assert all(torch.equal(start[k], v) for k, v in t.ema.state_dict().items())  # EMA starts there too
    in_opt = {id(p) for g in t.optimizers["G"].param_groups for p in g["params"]}
    frozen = [p for n, p in t.method.generator.named_parameters() if n.startswith("refine.0.")]
    assert frozen and not any(id(p) in in_opt for p in frozen) and not any(p.requires_grad for p in frozen)
    t.run()
    end = t.method.generator.state_dict()
    for k in start:
        same = torch.equal(start[k], end[k])
        assert same == k.startswith("refine.0."), k  # frozen unchanged, every other tensor trained


def test_a_resumed_warm_started_run_is_exact_and_does_not_reread_init_from(low_ckpt, tmp_path):
    copy = tmp_path / "low.pt"
    copy.write_bytes(low_ckpt.read_bytes())
    sets = [*HIGH, f"train.init_from={copy}", "train.init_skip=[to_rgb]", "train.freeze=[refine.0,refine.1]"]
    Trainer(load_config(CRN / "tiny.yaml", sets), tmp_path / "full", progress=False, data_check=False).run()
    part = tmp_path / "part"
    Trainer(load_config(CRN / "tiny.yaml", [*sets, "train.max_steps=1"]), part, progress=False,
            data_check=False).run()
    copy.unlink()  # a resume reads its own checkpoint, never init_from
    Trainer(load_config(CRN / "tiny.yaml", sets), part, resume=True, progress=False, data_check=False).run()
    a = torch.load(tmp_path / "full" / "checkpoints" / "latest.pt", weights_only=True)["method"]
    b = torch.load(part / "checkpoints" / "latest.pt", weights_only=True)["method"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_warm_start_is_strict_about_shapes_and_unknown_tensors(low_ckpt, tmp_path):
    cfg = load_config(CRN / "tiny.yaml", [*HIGH, f"train.init_from={low_ckpt}"])  # to_rgb not skipped
    with pytest.raises(ConfigError, match=rf"{low_ckpt}: generator tensor 'to_rgb.weight' has shape "
                                          r"\(6, 8, 1, 1\) there and \(3, 4, 1, 1\) here"):
        Trainer(cfg, tmp_path / "a", progress=False, data_check=False)
    # a smaller model than the checkpoint's: refine.2 has no place in it
    cfg = load_config(CRN / "tiny.yaml", ["model.generator.channels=[16,16]", f"train.init_from={low_ckpt}",
                                          "train.init_skip=[to_rgb]"])
    with pytest.raises(ConfigError, match=r"'refine.2.conv1.weight' \(8, 28, 3, 3\) has no place"):
        Trainer(cfg, tmp_path / "b", progress=False, data_check=False)
    cfg = load_config(CRN / "tiny.yaml", [*HIGH, f"train.init_from={low_ckpt}", "train.init_skip=[to_rbg]"])
    with pytest.raises(ConfigError, match="train.init_skip: 'to_rbg' names no tensor"):
        Trainer(cfg, tmp_path / "c", progress=False, data_check=False)
