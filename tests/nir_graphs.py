"""NIR graphs written with ``nir``'s dataclasses the way other tools write them (shapes without
the batch, ``dt`` in the metadata or snnTorch's default), for the NIR -> Lava tests."""
import nir
import numpy as np

DT = 1e-4


def lif(shape, beta=0.8, vth=1.0):
    tau = np.full(shape, DT / (1 - beta), np.float32)
    return nir.LIF(tau=tau, r=(tau.astype(np.float64) / DT).astype(np.float32),
                   v_leak=np.zeros(shape, np.float32), v_threshold=np.full(shape, vth, np.float32),
                   v_reset=np.zeros(shape, np.float32))


def cuba(shape, alpha=0.6, beta=0.85, vth=1.0):
    ts, tm = DT / (1 - alpha), DT / (1 - beta)
    full = lambda v: np.full(shape, v, np.float32)  # noqa: E731
    return nir.CubaLIF(tau_syn=full(ts), tau_mem=full(tm), r=full(tm / DT), v_leak=full(0),
                       v_threshold=full(vth), v_reset=full(0), w_in=full(ts / DT))


def if_(shape, vth=1.0):
    return nir.IF(r=np.full(shape, 1 / DT, np.float32), v_threshold=np.full(shape, vth, np.float32),
                  v_reset=np.zeros(shape, np.float32))


def _w(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale / np.sqrt(np.prod(shape[1:]))).astype(np.float32)


def graph(nodes, edges, dt=DT):
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": dt})


def residual(rng):
    """Conv -> LIF -> (Conv -> LIF) + skip -> SumPool -> Flatten -> Affine -> LIF."""
    n = {"input": nir.Input(np.array([2, 8, 8])),
         "c1": nir.Conv2d(input_shape=(8, 8), weight=_w(rng, 4, 2, 3, 3, scale=3), stride=1,
                          padding=1, dilation=1, groups=1, bias=np.full(4, 0.1, np.float32)),
         "l1": lif((4, 8, 8), 0.7),
         "c2": nir.Conv2d(input_shape=(8, 8), weight=_w(rng, 4, 4, 3, 3, scale=3), stride=1,
                          padding=1, dilation=1, groups=1, bias=np.zeros(4, np.float32)),
         "l2": lif((4, 8, 8), 0.7),
         "pool": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                               padding=np.array([0, 0])),
         "flat": nir.Flatten(input_type={"input": np.array([4, 4, 4])}, start_dim=0, end_dim=-1),
         "fc": nir.Affine(weight=_w(rng, 5, 64, scale=3), bias=np.full(5, 0.05, np.float32)),
         "l3": lif((5,), 0.9),
         "output": nir.Output(np.array([5]))}
    e = [("input", "c1"), ("c1", "l1"), ("l1", "c2"), ("c2", "l2"), ("l1", "pool"), ("l2", "pool"),
         ("pool", "flat"), ("flat", "fc"), ("fc", "l3"), ("l3", "output")]
    return graph(n, e)


def cuba_if_avgpool(rng):
    """Conv -> CubaLIF -> AvgPool -> Conv -> IF -> Flatten -> Linear -> CubaLIF."""
    n = {"input": nir.Input(np.array([1, 8, 8])),
         "c1": nir.Conv2d(input_shape=(8, 8), weight=_w(rng, 3, 1, 3, 3, scale=2), stride=1,
                          padding=0, dilation=1, groups=1, bias=np.zeros(3, np.float32)),
         "n1": cuba((3, 6, 6)),
         "pool": nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                               padding=np.array([0, 0])),
         "c2": nir.Conv2d(input_shape=(3, 3), weight=_w(rng, 4, 3, 2, 2, scale=4), stride=1,
                          padding=0, dilation=1, groups=1, bias=np.full(4, 0.05, np.float32)),
         "n2": if_((4, 2, 2)),
         "flat": nir.Flatten(input_type={"input": np.array([4, 2, 2])}, start_dim=0, end_dim=-1),
         "fc": nir.Linear(weight=_w(rng, 3, 16, scale=4)),
         "n3": cuba((3,), 0.5, 0.8, 0.5),
         "output": nir.Output(np.array([3]))}
    e = [("input", "c1"), ("c1", "n1"), ("n1", "pool"), ("pool", "c2"), ("c2", "n2"), ("n2", "flat"),
         ("flat", "fc"), ("fc", "n3"), ("n3", "output")]
    return graph(n, e)


def conv1d_recurrent(rng):
    """Conv1d -> LIF -> Flatten -> Affine -> LIF with a recurrent Linear (snnTorch RLeaky as a
    nested subgraph, as snntorch.export_nir writes it) -> Linear -> LIF."""
    sub = nir.NIRGraph(nodes={"input": nir.Input(np.array([12])), "lif": lif((12,), 0.85),
                              "w_rec": nir.Linear(weight=_w(rng, 12, 12, scale=3)),
                              "output": nir.Output(np.array([12]))},
                       edges=[("input", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "output")])
    n = {"input": nir.Input(np.array([2, 16])),
         "c1": nir.Conv1d(input_shape=16, weight=np.abs(_w(rng, 3, 2, 3, scale=0.5)), stride=2, padding=1,
                          dilation=1, groups=1, bias=np.full(3, 0.1, np.float32)),
         "l1": lif((3, 8), 0.75),
         "flat": nir.Flatten(input_type={"input": np.array([3, 8])}, start_dim=0, end_dim=-1),
         "fc": nir.Affine(weight=_w(rng, 12, 24, scale=5), bias=np.full(12, 0.3, np.float32)),
         "rlif": sub,
         "fc2": nir.Linear(weight=_w(rng, 4, 12, scale=4)),
         "l3": lif((4,), 0.9),
         "output": nir.Output(np.array([4]))}
    e = [("input", "c1"), ("c1", "l1"), ("l1", "flat"), ("flat", "fc"), ("fc", "rlif"),
         ("rlif", "fc2"), ("fc2", "l3"), ("l3", "output")]
    return graph(n, e)
