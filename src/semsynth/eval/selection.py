"""Checkpoint selection during training: FID on a fixed subset of the **val** split.

Every ``eval.every`` steps the training loop calls the evaluator returned by
:func:`fid_evaluator`; the loop keeps ``checkpoints/best.pt`` with the lowest FID and logs
``eval_fid`` in ``stats.jsonl``. Val is the selection split: numbers reported as final
results must come from a split never used for selection.
"""

from __future__ import annotations

from typing import Callable

from semsynth.config import Config


def fid_evaluator(cfg: Config) -> Callable:
    """An evaluator ``f(trainer) -> {"fid": float}`` for :class:`semsynth.train.loop.Trainer`.

    It generates one image per label map for the first ``cfg.eval.num_images`` val label
    maps (sorted by name) with the EMA generator (BatchNorm already refreshed by the loop)
    and seeds ``cfg.eval.seed + i`` (a VAE generator's latent as ``eval.vae_latent`` says), and compares them with the cached statistics of the
    same real val images at the training resolution.
    """
    state: dict = {}

    def evaluate(trainer) -> dict:
        from semsynth.data import build_dataset
        from semsynth.eval.evaluate import fid_of, real_fid_stats, split_items
        from semsynth.sample.sampler import Sampler

        dev = trainer.device
        if "labels" not in state:
            ds = build_dataset(cfg.data, cfg.data.val_split, train=False, seed=cfg.seed)
            idx, real, labels, edges = split_items(ds, cfg.eval.num_images)
            state["labels"], state["idx"], state["edges"] = labels, idx, edges
            state["real"] = real if cfg.eval.vae_latent == "encode_real" else None
            state["stats"] = real_fid_stats(cfg, cfg.data.val_split, len(idx), dev)
        sampler = Sampler(trainer.ema, trainer.info, cfg.data.height, cfg.data.width, dev)
        seeds = [cfg.eval.seed + i for i in state["idx"]]
        z = sampler.posterior_latent(state["real"], seeds) if state["real"] is not None else None
        fake = sampler.generate(state["labels"].to(dev), seeds=None if z is not None else seeds, z=z,
                                edges=state["edges"])
        return {"fid": fid_of(fake, state["stats"], dev)}

    return evaluate
