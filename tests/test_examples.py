"""Every script in examples/ runs to the end (each is meant to take under a minute on a CPU),
as ``python script.py FOLDER`` in its own process (conftest's ``cli``)."""
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.py"))


@pytest.mark.slow
@pytest.mark.parametrize("script", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs(script, tmp_path, cli):
    r = cli([tmp_path], script=script, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip(), "an example says what it did"
