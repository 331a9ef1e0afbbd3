import pytest
from viz_trees import synthetic_tree


@pytest.fixture
def hostile_tree_path(tmp_path):
    path = tmp_path / "tree.json"
    synthetic_tree(60).save(path)
    return path
