"""The example that writes a NIR file as another tool would and runs it in Lava."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_example_nir_file_to_lava_runs(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, str(ROOT / "examples/nir_file_to_lava.py"), str(tmp_path)],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    e = json.loads((tmp_path / "lava/report.json").read_text())["export"]
    assert e["passed"] and e["parity"]["identical_spike_trains"] == 1.0
    assert e["parity"]["n_samples"] == 50 and e["parity"]["output_spikes_reference"] > 50
    # the pool is its own stage: 4 channels x 3 x 3 ones on top of the file's weights
    assert e["synapses_lava"] == e["synapses_nir"] + 4 * 9
    assert {"CubaLIF", "IF", "SumPool2d", "LIF"} <= set(e["nodes"].values())
    assert (e["dt"], e["dt_source"]) == (1e-4, "the file's metadata")
    md = (tmp_path / "lava/report.md").read_text()
    assert "(36 more: each pool is its own stage, C x k x k weights)" in md
