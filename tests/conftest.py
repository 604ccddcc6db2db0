"""Test-session settings: every cache (FID statistics, data-check manifests) lives in one
temporary folder per session, so no test depends on what an earlier session left in
``~/.cache/semsynth``."""

import pytest


@pytest.fixture(autouse=True, scope="session")
def _session_cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("SEMSYNTH_CACHE", str(tmp_path_factory.mktemp("semsynth_cache")))
    yield
    mp.undo()


from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: The smallest config of every registered method (tests and smoke runs; seconds on a CPU).
#: A new method adds its tiny config here and gets the contract tests of
#: ``tests/test_method_contract.py``.
TINY_CONFIGS = {
    "oasis": ROOT / "configs" / "oasis" / "tiny.yaml",
    "spade": ROOT / "configs" / "spade" / "tiny.yaml",
    "cc_fpse": ROOT / "configs" / "cc_fpse" / "tiny.yaml",
    "crn": ROOT / "configs" / "crn" / "tiny.yaml",
    "painter": ROOT / "configs" / "painter" / "camvid.yaml",
}
#: Extra ``--set`` overrides that make a tiny config tinier where it is not tiny already.
TINY_OVERRIDES = {"painter": ["data.height=48", "data.width=64"]}


@pytest.fixture
def tiny_config():
    """``tiny_config(method, *overrides) -> Config``: the method's tiny config loaded."""
    from semsynth.config import load_config

    def load(method: str, *overrides: str):
        return load_config(TINY_CONFIGS[method], [*TINY_OVERRIDES.get(method, []), *overrides])

    return load
