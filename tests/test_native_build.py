"""The executor's compiled kernels (C++ sources in ``executor/csrc``) are built only by a training
step: compaction, counting and NIR export of a zoo model run with every build refused, on the
torch path; the build folder is named by the compiler and the CPU."""
import pytest
import torch
import torch.nn.functional as F
from torch.utils import cpp_extension

from dpap_deploy.data import load_dataset
from dpap_deploy.executor import native
from dpap_deploy.zoo import build_model


@pytest.fixture
def refused(monkeypatch, tmp_path):
    """No compiled module in this process; every call of torch's extension loaders recorded and
    refused (as a machine without a compiler would); build folders under ``tmp_path``."""
    calls = []
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "extensions"))

    def refuse(*args, **kwargs):
        calls.append(kwargs.get("name"))
        raise RuntimeError("no compiling in this test")
    monkeypatch.setattr(native, "_module", None)
    monkeypatch.setattr(native, "error", None)
    monkeypatch.setattr(cpp_extension, "load", refuse)
    monkeypatch.setattr(cpp_extension, "load_inline", refuse)
    return calls


@pytest.fixture(scope="module")
def digits():
    d = load_dataset("digits")
    torch.manual_seed(0)
    model, kind = build_model("snn-digits", tuple(d.x_test.shape[1:]), d.n_classes)
    with torch.no_grad():             # firing from the first layer on: the kernels' cases run
        for p in model.parameters():
            p.mul_(2.0)
    return model, kind, d.x_test[:48], d.y_test[:48]


def test_compaction_counting_and_export_never_compile(refused, digits, tmp_path):
    from dpap_deploy.compaction.measure import compact_and_measure
    from dpap_deploy.exporters import ExportJob, export
    model, kind, x, y = digits
    m = compact_and_measure(model, kind, None, x, y, 8)
    assert m.verified_on == 48 and m.compact_ops.total("synops") > 0
    res = export("nir", ExportJob(m.result.model, kind, x, y, 8), tmp_path)
    assert res.passed and res.parity["identical_spike_trains"] == 1.0
    assert refused == [] and native.error is None


def test_a_training_step_asks_for_the_build(refused, digits, tmp_path):
    from dpap_deploy.executor import MultiStep
    from dpap_deploy.graph import build_graph
    model, _, x, y = digits
    ex = MultiStep(build_graph(model, x[:2]))
    model.train()
    loss = F.cross_entropy(ex.run(x[:8], 8).mean(0), y[:8])
    loss.backward()                  # the build refused: the torch path trains
    assert refused and set(refused) == {"dpap_deploy_native"}
    assert native.error.startswith("RuntimeError") and model[0].weight.grad.abs().sum() > 0
    assert all(p.name.startswith("dpap_deploy_native-") for p in tmp_path.joinpath("extensions").iterdir())
    model.zero_grad()


def test_build_folder_named_by_compiler_and_cpu(monkeypatch):
    key = native.build_key(native.FLAGS)
    assert key == native.build_key(native.FLAGS) and "-march=native" not in native.FLAGS
    monkeypatch.setattr(native, "_cpu", lambda: "another CPU")
    other_cpu = native.build_key(native.FLAGS)
    monkeypatch.setattr(native, "_compiler", lambda: "another compiler")
    assert len({key, other_cpu, native.build_key(native.FLAGS)}) == 3
