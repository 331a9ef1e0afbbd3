import pytest
import torch

# Tests that start processes or engines (torchrun ranks, vLLM, a browser, the SmolLM2 GGUF), or
# run every training stage or arm end to end:
# marked ``long``, so that ``pytest -m "not slow and not long"`` is the fast tier.
LONG_MODULES = (
    "tests/train/test_distributed.py",
    "tests/vllm_backend/",
    "tests/cola_models/test_smollm2.py",
    "tests/viz/test_viz_browser.py",
    "tests/train/test_pipeline.py",  # every stage end to end, several times
    "tests/train/test_rl.py",  # every RL arm killed and resumed
)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` run where torch sees a GPU and are skipped elsewhere (CI); the
    process-starting ones are marked ``long``."""
    for item in items:
        path = item.nodeid.split("::")[0]
        if path.startswith(LONG_MODULES) or "torchrun" in item.name:
            item.add_marker(pytest.mark.long)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def gguf_cache(tmp_path_factory):
    """GGUF backbones convert once per test session into a cache of its own, not the user's."""
    import os

    from cola_models.backbone import GGUF_CACHE_ENV

    old = os.environ.get(GGUF_CACHE_ENV)
    os.environ[GGUF_CACHE_ENV] = str(tmp_path_factory.mktemp("model-cache"))
    yield
    if old is None:
        os.environ.pop(GGUF_CACHE_ENV, None)
    else:
        os.environ[GGUF_CACHE_ENV] = old


@pytest.fixture(scope="session")
def tiny_cola():
    import cola_models

    return cola_models.build_model("tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_arith():
    """The bundled model (loaded once per session: loading is most of a test's time)."""
    import cola_models

    return cola_models.load_model("tiny-arith")


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)
