"""One contract, run over every registered method (as diffusers' ``ModelTesterMixin``).

A method registered with :func:`semsynth.registry.register_method` and given a tiny config in
``tests/conftest.py`` gets these tests: it builds; its generator declares the
:class:`semsynth.methods.base.Generator` surface; one training step (or one-pass fit) changes
its weights and keeps them finite; save → load (checkpoint and export folder) → sample gives
the same pixels as the in-memory generator; the Sampler's ``deterministic`` flag and region
re-rolling behave as the generator declares; parameter counts are reported.
"""

from pathlib import Path

import pytest
import torch
from tests.conftest import TINY_CONFIGS

from semsynth.config import config_to_dict, load_config
from semsynth.data import dataset_info
from semsynth.labels import one_hot
from semsynth.methods.base import NOISE_KINDS, Generator, count_parameters
from semsynth.model.build import build_method
from semsynth.model.checkpoint import TrainingState, load_trained, save_checkpoint
from semsynth.model.export import write_export
from semsynth.registry import registered_methods
from semsynth.sample.sampler import Sampler
from semsynth.train.loop import make_optimizers, train_step

METHODS = registered_methods()


def test_every_registered_method_has_a_tiny_config():
    assert set(METHODS) == set(TINY_CONFIGS), "add the new method's tiny config to tests/conftest.py"


CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SHIPPED = sorted(CONFIGS.rglob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_config_loads(path):
    """Every preset loads: no unknown key and no key that its options ignore (both errors in
    ``load_config``), and it names a registered method."""
    cfg = load_config(str(path))
    assert cfg.method in METHODS


def test_main_job_sets_the_diversity_term():
    """The README's main job keeps the measured recipe (docs/results.md, issue 18): the
    structure diversity term at λ 3, τ 0.15 on the pretrained-backbone D."""
    m = load_config(str(CONFIGS / "oasis" / "camvid_cpu_pretrained_d.yaml")).model
    assert (m.discriminator_type, m.lambda_diversity, m.diversity_distance, m.diversity_tau) == \
        ("pretrained_unet", 3.0, "structure", 0.15)


def _trained(method_name, tiny_config):
    cfg = tiny_config(method_name)
    info = dataset_info(cfg.data)
    torch.manual_seed(0)
    method = build_method(cfg, info)
    method.train()
    g = torch.Generator().manual_seed(3)
    label = torch.randint(0, info.semantic_nc, (2, cfg.data.height, cfg.data.width), generator=g)
    image = torch.rand(2, 3, cfg.data.height, cfg.data.width, generator=g) * 2 - 1
    before = {k: v.clone() for k, v in method.generator.state_dict().items()}
    if method.phases:
        logs = train_step(method, make_optimizers(method, cfg.train), image, label, torch.Generator().manual_seed(1))
        assert logs and all(bool(torch.isfinite(v)) for v in logs.values())
    else:
        method.fit([(image, label)])
    after = method.generator.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before), "one step changed nothing in G"
    assert all(bool(torch.isfinite(v).all()) for v in after.values() if v.is_floating_point())
    return cfg, info, method, label


@pytest.mark.parametrize("name", METHODS)
def test_contract(name, tiny_config, tmp_path):
    cfg, info, method, label = _trained(name, tiny_config)
    gen = method.generator
    # the declared generator surface
    assert isinstance(gen, Generator)
    assert gen.noise in NOISE_KINDS
    assert (gen.noise == "none") == (gen.z_dim == 0)
    assert gen.num_outputs >= 1 and (gen.num_outputs == 1 or gen.noise == "none")
    counts = method.parameter_counts()
    assert counts["G"] == count_parameters(gen) and ("D" in counts) == ("D" in method.phases)
    # save -> load -> sample: the same pixels from a checkpoint and from an export folder
    gen.eval()
    state = TrainingState(config=config_to_dict(cfg), dataset_info=info.to_dict(), method=method.state_dict(),
                          ema=gen.state_dict(), optimizers={}, step=1, images_seen=2, elapsed_seconds=0.0, rng={})
    save_checkpoint(tmp_path / "c.pt", state)
    write_export(tmp_path / "export", cfg, gen.state_dict(), info.to_dict(), 1, 2)
    direct = Sampler(gen, info, cfg.data.height, cfg.data.width)
    seeds = [0, 1]
    want = direct.generate(label, seeds=seeds)
    assert want.shape == (2, 3, cfg.data.height, cfg.data.width) and want.abs().max() <= 1
    for path in (tmp_path / "c.pt", tmp_path / "export"):
        model = load_trained(path)
        assert model.step == 1 and model.info == info and model.cfg == cfg
        assert torch.equal(Sampler.from_trained(model).generate(label, seeds=seeds), want), path
    # determinism and re-rolling as declared
    assert direct.deterministic == (gen.noise == "none" and gen.num_outputs == 1)
    lab = label[:1].expand(2, -1, -1)
    two = direct.generate(lab, seeds=[0, 1])
    assert torch.equal(two[0], two[1]) == direct.deterministic
    assert torch.equal(direct.generate(lab, seeds=[0, 1]), two)  # same seeds, same images
    why = direct.region_resampling_unavailable()
    assert (why is None) == (gen.noise == "spatial")
    region = label[0] == label[0, 0, 0]
    if why is None:
        out = direct.resample_region(label[:1], region, base_seed=0, seeds=[1, 2])
        assert out.shape == (2, 3, cfg.data.height, cfg.data.width)
    else:
        with pytest.raises(ValueError):
            direct.resample_region(label[:1], region, base_seed=0, seeds=[1, 2])
    # noise of the declared kind is accepted; a noise-free generator refuses z
    if gen.noise == "none":
        with pytest.raises(ValueError):
            direct.generate(label, z=torch.zeros(2, 4))
    else:
        z = torch.randn(2, gen.z_dim)
        with torch.no_grad():
            ref = gen(one_hot(label, info.semantic_nc), z)
        torch.testing.assert_close(direct.generate(label, z=z), ref)
