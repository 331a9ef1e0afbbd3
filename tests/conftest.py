import pytest
import torch


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` run where torch sees a GPU and are skipped elsewhere (CI)."""
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
