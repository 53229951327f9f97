"""report.json / report.md for Loihi: the fixed-point layers of a netx export with a warning
per saturating layer, and the qat and chip sections rendered."""
import sys
from pathlib import Path

import torch

from dpap_deploy.exporters.base import ExportResult
from dpap_deploy.exporters.netx_export import write_netx
from dpap_deploy.graph import build_graph
from dpap_deploy.report.build import export_section
from dpap_deploy.report.markdown import _chip_lines, _qat_lines, _quant_lines

sys.path.insert(0, str(Path(__file__).parent))
from test_qat import T, _net  # noqa: E402


def test_a_clipped_bias_is_a_warning_and_the_layer_table_shows_it(tmp_path):
    model = _net()
    with torch.no_grad():
        model[4].bias[1] = 50.0                    # 50 x the threshold: beyond 13 bits
    x = torch.rand(8, 1, 6, 6)
    quant = write_netx(build_graph(model, x[:2]), x, tmp_path / "n.net", T)
    res = ExportResult("netx", ["n.net"], 0.5, {"agreement": 1.0, "n_samples": 8}, True,
                       {"quantization": quant})
    e = export_section(res).to_dict()
    (w,) = e["warnings"]
    assert w.startswith("netx layer 4 ('4') saturates: 1 biases clipped to 13 bits")
    assert "fine_tune=" in w
    rows = [l for l in _quant_lines(e) if l.startswith("| 4 |")]
    assert rows and rows[0].split("|")[7].strip() == "1"         # the biases clipped column
    quant["layers"][-1]["bias_clipped"] = 0                       # nothing saturates: no line
    assert export_section(ExportResult("netx", [], 0.5, {"agreement": 1.0, "n_samples": 8},
                                       True, {"quantization": quant})).warnings == []


def test_the_qat_and_chip_sections_render():
    q = {"target": "netx", "accuracy_float": 0.9, "accuracy_quantised": 0.85,
         "accuracy_fine_tuned": 0.91, "accuracy_fine_tuned_float": 0.91, "epochs": 2,
         "lr": 1e-4, "train_samples": 1400, "measured_on": "397 test samples", "loss": [0.3, 0.2]}
    text = "\n".join(_qat_lines(q))
    assert "float 90.00% -> post-training quantised 85.00% -> fine-tuned 91.00%" in text
    from dpap_deploy.chip import resources
    g = build_graph(_net(), torch.rand(2, 1, 6, 6))
    text = "\n".join(_chip_lines(resources(g, g)))
    assert "neuro-cores: 3 dense -> 3 compacted (saves 0)" in text and "**estimate**" in text
    assert "| 2 | maxpool | 36 -> 36 |" in text


def test_loihi_sim_fixed_point_layers_render_with_their_saturation():
    """The integers loihi-sim's fixed point runs (``exporters.lava_fixed``, no Lava run needed
    for the table): one row per synapse and per population, saturation counts beside them."""
    from dpap_deploy.exporters.nir_graph import to_nir
    from dpap_deploy.exporters.nir_to_lava import LavaNetwork
    from dpap_deploy.report.markdown import _fixed_lines
    x = torch.rand(6, 1, 6, 6)
    net = LavaNetwork(to_nir(build_graph(_net(), x[:2]), x[:2], T), T)
    fx, stats = net.fixed_point(x.numpy()), {}
    fx.run(x.numpy(), stats)
    lines = _fixed_lines({"fixed_point": {"layers": fx.layers, "saturation": stats}})
    rows = [l.split("|")[1:-1] for l in lines if l.startswith("| ") and "---" not in l][1:]
    assert len(rows) == len(fx.layers) >= 4
    kinds = [r[1].strip() for r in rows]
    assert kinds.count("neurons") >= 2 and "conv" in kinds and "dense" in kinds
    for r in rows:
        if r[1].strip() == "neurons":                   # threshold, decays and saturation shown
            assert ".." in r[5] and r[8].strip().isdigit() and r[9].strip().isdigit()
