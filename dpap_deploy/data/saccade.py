"""N-MNIST-style event synthesis: any image set seen by a simulated event camera in saccades.

N-MNIST was recorded by moving an event camera (34 x 34 sensor) in three ~105 ms saccades over
MNIST digits on a screen; the image path is (0,0) -> (3.5,7) -> (7,0) -> (0,0) pixels. A pixel
emits an ON (OFF) event each time its log intensity rises (falls) by a contrast threshold
(~0.4) from the level at its last event. This module does the same numerically:

- the 28 x 28 image sits at the sensor's top-left on a 34 x 34 black canvas and moves along the
  path (linear within each saccade), rendered with bilinear sub-pixel shifts every ``dt_us``;
- log intensity ``log(eps + I)``; per pixel, ``floor(|L - L_ref| / C)`` events of the sign of
  the change are emitted at that step (time stamps spread evenly inside the step) and ``L_ref``
  moves by that many thresholds;
- events are written in the N-MNIST ``.bin`` layout (5 bytes: ``x``, ``y``,
  ``p << 7 | t[22:16]``, ``t[15:8]``, ``t[7:0]``, ``t`` in microseconds) under
  ``ROOT/NMNIST/{Train,Test}/<label>/<index>.bin``, which tonic's ``NMNIST`` class reads
  (``--dataset nmnist --data-root ROOT``).
Batched over images with torch; one image takes well under a millisecond of CPU.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..atomic import atomic_write_bytes

SENSOR = 34
SACCADE_US = 105_000
PATH = [(0.0, 0.0), (3.5, 7.0), (7.0, 0.0), (0.0, 0.0)]   # (dx, dy) pixels, per N-MNIST
DTYPE = np.dtype([("x", int), ("y", int), ("t", int), ("p", int)])


def _offsets(n_steps: int) -> np.ndarray:
    """(dx, dy) of the image at each of ``n_steps`` steps along the three saccades."""
    pts = np.array(PATH)
    s = np.linspace(0, len(PATH) - 1, n_steps)
    i = np.minimum(s.astype(int), len(PATH) - 2)
    f = (s - i)[:, None]
    return pts[i] * (1 - f) + pts[i + 1] * f


def _render(images: torch.Tensor, dx: float, dy: float) -> torch.Tensor:
    """``[B, 28, 28]`` images shifted by (dx, dy) on a black ``34 x 34`` canvas, bilinear."""
    b, h, w = images.shape
    canvas = torch.zeros(b, 1, SENSOR, SENSOR)
    canvas[:, 0, :h, :w] = images
    theta = torch.tensor([[1.0, 0.0, -2 * dx / SENSOR], [0.0, 1.0, -2 * dy / SENSOR]],
                         dtype=torch.float32).expand(b, 2, 3)
    grid = F.affine_grid(theta, canvas.shape, align_corners=False)
    return F.grid_sample(canvas, grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False)[:, 0]


@torch.no_grad()
def simulate(images: np.ndarray | torch.Tensor, dt_us: int = 1000, threshold: float = 0.4,
             eps: float = 0.1, seed: int = 0) -> list[np.ndarray]:
    """Event streams (structured arrays x, y, t [us], p) for ``[B, 28, 28]`` images in [0, 1]."""
    imgs = torch.as_tensor(np.asarray(images), dtype=torch.float32)
    n_steps = 3 * SACCADE_US // dt_us
    offs = _offsets(n_steps + 1)
    ref = torch.log(eps + _render(imgs, *offs[0]))
    rng = np.random.default_rng(seed)
    parts: list[tuple[np.ndarray, ...]] = []
    for k in range(1, n_steps + 1):
        level = torch.log(eps + _render(imgs, *offs[k]))
        diff = level - ref
        count = torch.floor(diff.abs() / threshold)
        ref = ref + torch.sign(diff) * count * threshold
        b, y, x = torch.nonzero(count, as_tuple=True)
        if len(b) == 0:
            continue
        reps = count[b, y, x].long().numpy()
        pol = (diff[b, y, x] > 0).long().numpy()
        bb, yy, xx, pp = (np.repeat(a, reps) for a in (b.numpy(), y.numpy(), x.numpy(), pol))
        parts.append((bb, xx, yy, (k - 1) * dt_us + rng.integers(0, dt_us, size=len(bb)), pp))
    if not parts:
        return [np.empty(0, dtype=DTYPE) for _ in range(len(imgs))]
    bb, xx, yy, tt, pp = (np.concatenate(a) for a in zip(*parts))
    order = np.lexsort((tt, bb))                       # by image, then by time
    ev = np.empty(len(order), dtype=DTYPE)
    ev["x"], ev["y"], ev["t"], ev["p"] = xx[order], yy[order], tt[order], pp[order]
    bounds = np.searchsorted(bb[order], np.arange(1, len(imgs)))
    return np.split(ev, bounds)


def encode_bin(events: np.ndarray) -> bytes:
    """N-MNIST ``.bin`` bytes of one event stream (``t`` < 2^23 us)."""
    t = events["t"].astype(np.uint32)
    if len(t) and int(t.max()) >= 1 << 23:
        raise ValueError("N-MNIST time stamps have 23 bits (< 8.39 s)")
    raw = np.empty((len(events), 5), dtype=np.uint8)
    raw[:, 0] = events["x"]
    raw[:, 1] = events["y"]
    raw[:, 2] = (events["p"].astype(np.uint32) << 7) | ((t >> 16) & 0x7F)
    raw[:, 3] = (t >> 8) & 0xFF
    raw[:, 4] = t & 0xFF
    return raw.tobytes()


def write_nmnist_tree(root: str | Path, split: str, images, labels, batch: int = 256,
                      progress: bool = True, **sim) -> int:
    """Synthesise and write ``ROOT/NMNIST/<Train|Test>/<label>/<index>.bin``; returns count."""
    folder = Path(root) / "NMNIST" / {"train": "Train", "test": "Test"}[split]
    images, labels = np.asarray(images), np.asarray(labels)
    n = 0
    for s in tqdm(range(0, len(images), batch), desc=f"events {split}", unit="batch",
                  disable=not progress):
        for j, ev in enumerate(simulate(images[s:s + batch], seed=s, **sim)):
            raw = encode_bin(ev)
            atomic_write_bytes(folder / str(int(labels[s + j])) / f"{s + j:05d}.bin",
                               lambda fh: fh.write(raw))
            n += 1
    return n


def synth_events(dataset: str, data_root: str | None, out: str | Path,
                 limit_train: int | None = None, limit_test: int | None = None,
                 progress: bool = True) -> dict[str, int]:
    """Event streams of the first ``limit_*`` images of ``dataset`` under ``out/NMNIST``
    (= ``dpap-deploy synth-events``); returns the counts per split."""
    from ..errors import ConfigError
    from ..lock import output_lock
    from ..validate import check_optional_count, check_out_dir
    from . import load_dataset
    limits = {"train": check_optional_count("limit_train", limit_train),
              "test": check_optional_count("limit_test", limit_test)}
    out = check_out_dir(out)
    d = load_dataset(dataset, data_root)
    if d.is_sequence or d.input_shape[0] != 1:
        raise ConfigError(f"synth-events needs single-channel images, {dataset!r} has "
                          f"input shape {d.input_shape}")
    if d.input_shape[1:] != (28, 28):
        resize = lambda x: F.interpolate(x, size=(28, 28), mode="bilinear")  # noqa: E731
        d.x_train, d.x_test = resize(d.x_train), resize(d.x_test)
    counts = {}
    with output_lock(out, "synth-events"):
        for split, x, y in (("train", d.x_train, d.y_train), ("test", d.x_test, d.y_test)):
            n = len(y) if limits[split] is None else min(limits[split], len(y))
            counts[split] = write_nmnist_tree(out, split, x[:n, 0].numpy(), y[:n].numpy(),
                                              progress=progress)
    return counts
