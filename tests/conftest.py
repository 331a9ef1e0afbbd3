import pytest
import torch


@pytest.fixture(scope="session")
def tiny_cola():
    import cola_models

    return cola_models.build_model("tiny", seed=0)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)
