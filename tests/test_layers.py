"""The package is a clean stack of layers, and the code passes ruff (issue 19).

Layers, lowest first (a module may import from its own layer and those below it):

0. ``types``, ``fileio``, ``registry``, ``labels``, ``noise``, ``batch_shard``, ``config``,
   ``imageio`` — plain parts with no model or data knowledge;
1. ``nn``, ``losses`` — network and loss parts;
2. ``data`` — datasets, loaders, checks;
3. ``methods`` — the four methods and the painter;
4. ``model`` — building, checkpoints, exports, official importers;
5. ``train``, ``sample``; 6. ``eval``, ``web``; 7. ``cli``, ``__main__``.

Loading a model to sample, serve or evaluate never imports :mod:`semsynth.train`.
"""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "semsynth"
LAYERS = {
    "types": 0, "fileio": 0, "registry": 0, "labels": 0, "noise": 0, "batch_shard": 0, "config": 0, "imageio": 0,
    "__init__": 0, "nn": 1, "losses": 1, "data": 2, "methods": 3, "model": 4, "train": 5, "sample": 5,
    "eval": 6, "web": 6, "cli": 7, "__main__": 7,
}


def _imports(path: Path) -> set[str]:
    """Top-level semsynth packages/modules imported anywhere in ``path`` (lazy imports too)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for n in names:
            parts = n.split(".")
            if parts[0] == "semsynth" and len(parts) > 1:
                out.add(parts[1])
    return out


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC)
        top = rel.parts[0].removesuffix(".py")
        graph.setdefault(top, set()).update(_imports(path) - {top})
    return graph


def test_every_module_has_a_layer_and_imports_only_downwards():
    graph = _graph()
    assert set(graph) <= set(LAYERS), f"modules without a layer: {sorted(set(graph) - set(LAYERS))}"
    upward = [f"{a} (layer {LAYERS[a]}) imports {b} (layer {LAYERS[b]})"
              for a, deps in graph.items() for b in deps if LAYERS[b] > LAYERS[a]]
    assert not upward, upward


def test_sampling_serving_and_evaluation_never_import_train():
    """Checked on the import closure of the modules themselves, in a fresh interpreter."""
    code = ("import sys, semsynth.sample.sampler, semsynth.web.app, semsynth.eval.evaluate, semsynth.model.checkpoint; "
            "print(sorted(m for m in sys.modules if m.startswith('semsynth.train')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", out


def test_ruff_lint_and_import_order():
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    assert Path(ruff).exists(), "ruff is not installed: it is in the dev extra (pip install -e '.[dev]')"
    root = SRC.parents[1]
    res = subprocess.run([ruff, "check", "src", "tests", "benchmarks", "docs"], cwd=root, capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-1000:]
