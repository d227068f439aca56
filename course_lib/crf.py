"""Fully connected CRF post-processing (Krähenbühl & Koltun 2011), as DeepLab v1/v2 used it.

Energy over a labelling x of all N pixels:

    E(x) = Σ_i −log P_i(x_i)
         + Σ_{i<j} [x_i ≠ x_j] · ( w1 · exp(−|p_i−p_j|²/2θα² − |I_i−I_j|²/2θβ²)     appearance
                                 + w2 · exp(−|p_i−p_j|²/2θγ²) )                      smoothness

Mean-field inference approximates the posterior by independent per-pixel distributions Q_i
and updates them all at once, ``iterations`` times; the message passing is a Gaussian filter
in (x, y, r, g, b) space, which pydensecrf computes in O(N) with a permutohedral lattice.
Defaults are DeepLab's (w2 = 3, θγ = 3; w1, θα, θβ cross-validated per dataset).
"""

from __future__ import annotations

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor


MAX_ITERATIONS = 200  # DeepLab uses 10; mean field converges in a few dozen
MIN_THETA = 0.1  # pixels / intensity levels; below it pydensecrf's lattice overflows and crashes


def _as_numpy(x: ArrayLike) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _check_crf_inputs(img: np.ndarray, p: np.ndarray, iterations, w1: float, theta_alpha: float,
                      theta_beta: float, w2: float, theta_gamma: float) -> None:
    """Raise TypeError / ValueError, saying how to fix it, for anything pydensecrf would
    crash on (a segfault kills a Jupyter kernel without a message) or answer wrongly."""
    if img.dtype != np.uint8:
        raise TypeError(f"image must be uint8 [H, W, 3] in 0..255, got dtype {img.dtype}; "
                        "convert with (image * 255).round().astype(np.uint8) or image.permute(1, 2, 0).numpy().")
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"image must be [H, W, 3] (channels last), got shape {tuple(img.shape)}.")
    if p.ndim != 3:
        raise ValueError(f"probs must be float [C, H, W], got shape {tuple(p.shape)}.")
    if p.shape[1:] != img.shape[:2]:
        if p.shape[:2] == img.shape[:2]:
            raise ValueError(f"probs have shape {tuple(p.shape)}, which looks like [H, W, C] (channels "
                             f"last); pass [C, H, W]: probs.permute(2, 0, 1) (torch) or "
                             f"probs.transpose(2, 0, 1) (NumPy).")
        raise ValueError(f"probs are {p.shape[1]}×{p.shape[2]} but the image is {img.shape[0]}×{img.shape[1]}: "
                         "upsample the probabilities to the image size first.")
    if p.shape[0] < 2:
        raise ValueError(f"probs need at least 2 classes, got {p.shape[0]}.")
    if not np.issubdtype(p.dtype, np.floating):
        raise TypeError(f"probs must be floating point, got {p.dtype}.")
    if not np.isfinite(p).all() or p.min() < 0:
        raise ValueError("probs must be finite and ≥ 0: pass softmax probabilities, not logits.")
    sums = p.sum(0)
    if np.abs(sums - 1).max() > 1e-3:
        raise ValueError(f"probs must sum to 1 over classes at every pixel (found sums in "
                         f"[{sums.min():.3f}, {sums.max():.3f}]): apply softmax over dim 0 first.")
    if isinstance(iterations, bool) or not float(iterations).is_integer() or not 0 <= iterations <= MAX_ITERATIONS:
        raise ValueError(f"iterations must be a whole number in 0..{MAX_ITERATIONS}, got {iterations!r} "
                         f"(DeepLab uses 10).")
    for name, value in (("theta_alpha", theta_alpha), ("theta_beta", theta_beta), ("theta_gamma", theta_gamma)):
        if not (np.isfinite(value) and value >= MIN_THETA):
            raise ValueError(f"{name} must be a finite number ≥ {MIN_THETA} (a kernel width in pixels or "
                             f"intensity levels), got {value!r}; DeepLab's are θα ≈ 30-120, θβ ≈ 3-10, θγ = 3.")
    for name, value in (("w1", w1), ("w2", w2)):
        if not (np.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number ≥ 0 (a kernel weight), got {value!r}.")


def dense_crf(image: ArrayLike, probs: ArrayLike, iterations: int = 10, w1: float = 4.0,
              theta_alpha: float = 60.0, theta_beta: float = 5.0, w2: float = 3.0,
              theta_gamma: float = 3.0) -> np.ndarray:
    """Refine softmax probabilities with a fully connected CRF.

    image: uint8 [H, W, 3] (RGB, 0..255); probs: float [C, H, W], each pixel's C values ≥ 0
    summing to 1. Returns the refined probabilities, float32 [C, H, W] (sums to 1).
    θα, θγ are in pixels, θβ in intensity levels (0..255), each finite and ≥ 0.1; the
    weights w1, w2 finite and ≥ 0; ``iterations`` 0..200. Anything else raises ValueError
    (pydensecrf itself would crash the process on some of them).
    """
    import pydensecrf.densecrf as dcrf  # imported here so that the rest of the course works without it

    img, p = _as_numpy(image), _as_numpy(probs)
    _check_crf_inputs(img, p, iterations, w1, theta_alpha, theta_beta, w2, theta_gamma)
    c, h, w = p.shape
    crf = dcrf.DenseCRF2D(w, h, c)
    # unary = −log P (clipped so that a probability of 0 does not give infinite energy)
    unary = -np.log(np.clip(p.reshape(c, -1), 1e-8, 1.0)).astype(np.float32)
    crf.setUnaryEnergy(np.ascontiguousarray(unary))
    crf.addPairwiseGaussian(sxy=float(theta_gamma), compat=float(w2))
    crf.addPairwiseBilateral(sxy=float(theta_alpha), srgb=float(theta_beta), rgbim=np.ascontiguousarray(img),
                             compat=float(w1))
    q = np.array(crf.inference(int(iterations)), dtype=np.float32).reshape(c, h, w)
    return q


def mean_field(image: ArrayLike, probs: ArrayLike, iterations: int = 10, w1: float = 4.0,
               theta_alpha: float = 60.0, theta_beta: float = 5.0, w2: float = 3.0,
               theta_gamma: float = 3.0, max_pixels: int = 20_000) -> torch.Tensor:
    """Mean-field inference of the same CRF written out densely: O(N²) memory and time, for
    small images only (≤ ``max_pixels``). Same arguments as :func:`dense_crf`; returns float
    [C, H, W]. Follows pydensecrf's conventions (Potts compatibility, kernels normalised
    symmetrically: K ← D^-½ K D^-½ with D the row sums), so the two agree up to the
    permutohedral lattice's approximation of the Gaussian filter.
    """
    img_np, p_np = _as_numpy(image), _as_numpy(probs)
    _check_crf_inputs(img_np, p_np, iterations, w1, theta_alpha, theta_beta, w2, theta_gamma)
    img = torch.as_tensor(img_np).float()
    q = torch.as_tensor(p_np).float()
    c, h, w = q.shape
    if h * w > max_pixels:
        raise ValueError(f"mean_field is the O(N²) teaching version: {h}×{w} = {h * w} pixels is over "
                         f"max_pixels={max_pixels}; use dense_crf (pydensecrf) for full images.")
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    pos = torch.stack([xs, ys], -1).reshape(-1, 2)
    rgb = img.reshape(-1, 3)

    def kernel(features: torch.Tensor) -> torch.Tensor:
        k = torch.exp(-0.5 * torch.cdist(features, features).square())  # [N, N], k(i, i) = 1
        d = k.sum(1).rsqrt()
        return d[:, None] * k * d[None, :]

    appearance = kernel(torch.cat([pos / theta_alpha, rgb / theta_beta], 1))
    smoothness = kernel(pos / theta_gamma)
    pairwise = w1 * appearance + w2 * smoothness  # [N, N]
    unary = -torch.log(q.reshape(c, -1).clamp(1e-8, 1.0))  # [C, N]
    q = q.reshape(c, -1)
    for _ in range(int(iterations)):
        # Potts: a label is penalised by the (kernel-weighted) mass of the *other* labels around it,
        # which up to a per-pixel constant is a reward for the mass of the same label
        q = torch.softmax(-unary + q @ pairwise, dim=0)
    return q.reshape(c, h, w)


def grid_search(score, grid: dict[str, tuple[float, ...]], max_extensions: int = 3) -> tuple[dict, dict]:
    """Maximise ``score(**params)`` over the product of ``grid`` (name → increasing values),
    growing the grid until the best point is **inside** it: while the best value of a parameter
    is the first or last of its (≥ 2) values, one more value is added beyond it on the same
    geometric step (at most ``max_extensions`` times per side; never below ``MIN_THETA``).
    Each point is scored once. Returns (best params, {params tuple: score}) with tuples in
    ``grid``'s key order; the final grid is ``{k: sorted values seen}``."""
    names = list(grid)
    axes = {k: sorted(float(v) for v in grid[k]) for k in names}
    scores: dict[tuple, float] = {}
    grown = {(k, side): 0 for k in names for side in (0, 1)}
    while True:
        for point in _product([axes[k] for k in names]):
            if point not in scores:
                scores[point] = float(score(**dict(zip(names, point))))
        best = max(scores, key=scores.get)
        changed = False
        for i, k in enumerate(names):
            vals = axes[k]
            if len(vals) < 2:
                continue
            if best[i] == vals[-1] and grown[(k, 1)] < max_extensions:
                vals.append(vals[-1] * vals[-1] / vals[-2])
                grown[(k, 1)] += 1
                changed = True
            elif best[i] == vals[0] and grown[(k, 0)] < max_extensions and vals[0] * vals[0] / vals[1] >= MIN_THETA:
                vals.insert(0, vals[0] * vals[0] / vals[1])
                grown[(k, 0)] += 1
                changed = True
        if not changed:
            return dict(zip(names, best)), scores


def _product(lists: list[list[float]]) -> list[tuple]:
    out: list[tuple] = [()]
    for values in lists:
        out = [p + (v,) for p in out for v in values]
    return out


_SAMPLES: list | None = None  # the samples a forked worker of :func:`crf_labels` reads (inherited, not pickled)


def _crf_one(job: tuple) -> tuple[np.ndarray, float]:
    import time

    i, iterations, params = job
    img, p = _SAMPLES[i][0], _SAMPLES[i][1]
    t0 = time.perf_counter()
    labels = dense_crf(img, p, iterations, **params).argmax(0).astype(np.int16)
    return labels, time.perf_counter() - t0


def crf_labels(samples: list[tuple], iterations: int = 10, workers: int | None = None,
               **params) -> tuple[list[np.ndarray], list[float]]:
    """:func:`dense_crf` over ``samples`` of (image uint8 [H, W, 3], probabilities [C, H, W], ...):
    the labels (int16 [H, W]) of each and its seconds. pydensecrf uses one core, so the images
    are split over ``workers`` forked processes (default: every core; 1, or a platform without
    ``fork``: this process). The results are identical either way."""
    import multiprocessing as mp
    import os

    global _SAMPLES
    workers = min(workers or os.cpu_count() or 1, len(samples))
    jobs = [(i, iterations, params) for i in range(len(samples))]
    _SAMPLES = samples
    try:
        if workers <= 1 or "fork" not in mp.get_all_start_methods():
            out = [_crf_one(j) for j in jobs]
        else:
            with mp.get_context("fork").Pool(workers) as pool:
                out = pool.map(_crf_one, jobs, chunksize=max(1, len(jobs) // (4 * workers)))
    finally:
        _SAMPLES = None
    return [o[0] for o in out], [o[1] for o in out]


def crf_miou(samples: list[tuple[np.ndarray, np.ndarray, torch.Tensor]], num_classes: int,
             iterations: int = 10, workers: int | None = None, **params) -> float:
    """mIoU (void ignored) of ``dense_crf`` with ``params`` over ``samples`` of (image uint8
    [H, W, 3], probabilities [C, H, W], labels int [H, W] with 255 = void), one confusion
    matrix summed over all images: the score :func:`grid_search` maximises on validation.
    ``iterations`` = 0 scores the probabilities' own argmax (no CRF)."""
    from .metrics import confusion_matrix, mean_iou

    labels, _ = crf_labels(samples, iterations, workers, **params)
    cm = sum(confusion_matrix(torch.from_numpy(q.astype(np.int64)), y, num_classes)
             for q, (_, _, y) in zip(labels, samples))
    return float(mean_iou(cm))
