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
