"""Check ``semsynth import-official`` against the official OASIS code — not a test.

Usage: python docs/check_official_oasis.py --official-repo DIR [--ch 64] [--datasets ade20k,cityscapes,coco_stuff]

``DIR`` is a local copy of boschresearch/OASIS (at least its ``models/`` folder; never
committed here). For each dataset preset this builds the official ``OASIS_Generator`` and
``OASIS_Discriminator`` with the official options (``--channels_G ch``, z_dim 64,
BatchNorm, spectral norm), keeps PyTorch's default initialisation (larger weights than the
official ``init_networks``, so that the images span [-1, 1] and a wrong channel would show),
runs a few train-mode forward passes (so that BatchNorm statistics and spectral-norm vectors
are not at their initial values), saves them as ``latest_EMA.pth`` / ``latest_D.pth`` in a temp
folder, runs ``semsynth import-official`` on it, and feeds the same one-hot label maps and
the same noise to both generators (eval mode) and the same images to both
discriminators. Prints one JSON line per dataset with the max abs differences.
"""

import argparse
import json
import sys
import tempfile
import types
from pathlib import Path

import torch
import torch.nn.functional as F


def official_opt(dataset: str, ch: int) -> types.SimpleNamespace:
    semantic_nc, crop, aspect = {"ade20k": (151, 256, 1.0), "cityscapes": (35, 512, 2.0),
                                 "coco_stuff": (183, 256, 1.0)}[dataset]
    return types.SimpleNamespace(gpu_ids="-1", channels_G=ch, z_dim=64, semantic_nc=semantic_nc, crop_size=crop,
                                 aspect_ratio=aspect, num_res_blocks=6, no_3dnoise=False,
                                 no_spectral_norm=False, param_free_norm="batch", spade_ks=3)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--official-repo", required=True)
    ap.add_argument("--ch", type=int, default=64)
    ap.add_argument("--datasets", default="ade20k,cityscapes,coco_stuff")
    ap.add_argument("--batch", type=int, default=2)
    args = ap.parse_args()
    sys.path.insert(0, str(Path(args.official_repo).resolve()))
    from models.discriminator import OASIS_Discriminator
    from models.generator import OASIS_Generator

    from semsynth.methods.oasis.discriminator import OASISDiscriminator
    from semsynth.model.official.oasis import channel_map, import_official
    from semsynth.sample.sampler import Sampler

    for dataset in args.datasets.split(","):
        torch.manual_seed(0)
        opt = official_opt(dataset, args.ch)
        g_off, d_off = OASIS_Generator(opt), OASIS_Discriminator(opt)
        cmap = channel_map(dataset)
        h, w = (256, 512) if dataset == "cityscapes" else (256, 256)
        g_off.train()
        with torch.no_grad():
            for _ in range(3):
                ids = torch.tensor(cmap)[torch.randint(0, len(cmap), (args.batch, h // 16, w // 16))]
                ids = ids.repeat_interleave(16, 1).repeat_interleave(16, 2)
                onehot = F.one_hot(ids, opt.semantic_nc).permute(0, 3, 1, 2).float()
                g_off(onehot)
                d_off(torch.rand(args.batch, 3, h, w) * 2 - 1)
        g_off.eval()
        d_off.eval()
        with tempfile.TemporaryDirectory() as tmp:
            models = Path(tmp) / "checkpoints" / "run" / "models"
            models.mkdir(parents=True)
            torch.save(g_off.state_dict(), models / "latest_EMA.pth")
            torch.save(d_off.state_dict(), models / "latest_D.pth")
            export = import_official(models, dataset, Path(tmp) / "export")
            sampler = Sampler.from_checkpoint(export.parent)
            # same label maps: semsynth ids -> official channels through the channel map
            ours = torch.randint(0, len(cmap), (args.batch, h // 8, w // 8))
            ours = ours.repeat_interleave(8, 1).repeat_interleave(8, 2)
            off_ids = torch.tensor(cmap)[ours]
            onehot_off = F.one_hot(off_ids, opt.semantic_nc).permute(0, 3, 1, 2).float()
            torch.manual_seed(123)
            with torch.no_grad():
                img_off = g_off(onehot_off)  # draws z = randn(N, 64) internally
            torch.manual_seed(123)
            z = torch.randn(args.batch, 64)
            img_ours = sampler.generate(ours, z=z)
            from safetensors.torch import load_file

            d_state = load_file(str(export.parent / "discriminator.safetensors"))
            d_ours = OASISDiscriminator(sampler.config.model.discriminator, sampler.info.semantic_nc)
            d_ours.load_state_dict(d_state)
            d_ours.eval()
            x = torch.rand(args.batch, 3, h, w) * 2 - 1
            with torch.no_grad():
                lo_off, lo_ours = d_off(x), d_ours(x)
            rows = [0] + [1 + c for c in cmap]
            print(json.dumps({
                "dataset": dataset, "ch": args.ch, "G_params": sum(p.numel() for p in g_off.parameters()),
                "image_max_abs_diff": float((img_off - img_ours).abs().max()),
                "image_value_range": [float(img_off.min()), float(img_off.max())],
                "D_logits_max_abs_diff": float((lo_off[:, rows] - lo_ours).abs().max()),
            }))


if __name__ == "__main__":
    main()
