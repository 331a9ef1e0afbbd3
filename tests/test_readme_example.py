"""The README's Python example is examples/search.py, verbatim, and it runs."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_shows_the_example_file_verbatim():
    code = (ROOT / "examples" / "search.py").read_text()
    body = code.split('"""', 2)[2].strip()
    assert f"```python\n{body}\n```" in (ROOT / "README.md").read_text()


def test_the_example_solves_its_problems():
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "search.py")],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 2 and all("\\boxed{7}" in line and "tokens)" in line for line in lines)


def test_the_engine_exports_its_public_names():
    import latent_search

    for name in latent_search.__all__:
        assert getattr(latent_search, name) is not None, name
