"""Figures for the notebooks: palettes, mask overlays, image/GT/prediction grids, confusion
matrices and training curves (matplotlib)."""

from __future__ import annotations

import math

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

VOID_COLOUR = (0, 0, 0)


def make_palette(n: int, seed: int = 0) -> np.ndarray:
    """``n`` distinct RGB colours uint8 [n, 3] (tab20, then seeded random) for instance ids."""
    base = (np.array(plt.get_cmap("tab20").colors) * 255).astype(np.uint8)
    if n <= len(base):
        return base[:n]
    extra = np.random.default_rng(seed).integers(40, 256, size=(n - len(base), 3), dtype=np.uint8)
    return np.concatenate([base, extra])


def to_numpy_image(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """Image [C, H, W] (uint8, or float in 0..1) or [H, W, C] → uint8 [H, W, 3]."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        if image.dim() == 3 and image.shape[0] in (1, 3):
            image = image.permute(1, 2, 0)
        image = image.numpy()
    if image.dtype != np.uint8:
        image = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    return image


def colorize(mask: torch.Tensor | np.ndarray, palette: Sequence[Sequence[int]],
             ignore_index: int = 255) -> np.ndarray:
    """Label map [H, W] → RGB uint8 [H, W, 3]; the ignore value is drawn black."""
    m = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    lut = np.zeros((256, 3), np.uint8)
    pal = np.asarray(palette, np.uint8)
    lut[: len(pal)] = pal
    lut[ignore_index] = VOID_COLOUR
    return lut[np.clip(m, 0, 255).astype(np.int64)]


def overlay(image, mask, palette, alpha: float = 0.5, ignore_index: int = 255) -> np.ndarray:
    """Image blended with its coloured label map (void pixels show the plain image)."""
    img = to_numpy_image(image).astype(np.float32)
    col = colorize(mask, palette, ignore_index).astype(np.float32)
    m = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    a = np.where((m == ignore_index)[..., None], 0.0, alpha)
    return (img * (1 - a) + col * a).round().astype(np.uint8)


def legend_handles(classes: Sequence[str], palette, with_void: bool = True) -> list[Patch]:
    handles = [Patch(color=np.asarray(c) / 255, label=n) for n, c in zip(classes, palette)]
    if with_void:
        handles.append(Patch(facecolor="black", edgecolor="grey", label="void (ignored)"))
    return handles


def show_segmentation(images, gts, preds=None, palette=None, classes=None, ignore_index: int = 255,
                      size: float = 3.0, legend: bool = True):
    """Grid with one row per example: image | ground truth | predictions.

    ``images``: list of images [C, H, W] (uint8, or float in 0..1); ``gts``: label maps [H, W];
    ``preds``: a list of label maps (one "prediction" column) or a dict ``{column title:
    list of label maps}`` for several models. Returns the figure.
    """
    columns = {} if preds is None else (dict(preds) if isinstance(preds, dict) else {"prediction": preds})
    titles = ["image", "ground truth", *columns]
    n, cols = len(images), 2 + len(columns)
    fig, axes = plt.subplots(n, cols, figsize=(size * cols * 4 / 3, size * n), squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(to_numpy_image(images[i]))
        axes[i, 1].imshow(colorize(gts[i], palette, ignore_index))
        for j, maps in enumerate(columns.values(), start=2):
            axes[i, j].imshow(colorize(maps[i], palette, ignore_index))
    for j, title in enumerate(titles):
        axes[0, j].set_title(title)
    for a in axes.flat:
        a.axis("off")
    if legend and classes is not None:
        fig.legend(handles=legend_handles(classes, palette), loc="lower center",
                   ncol=min(6, len(classes) + 1), fontsize=8, frameon=False)
        fig.tight_layout(rect=(0, 0.1 / n + 0.02, 1, 1))
    else:
        fig.tight_layout()
    return fig


def plot_confusion_matrix(cm: torch.Tensor, classes: Sequence[str], normalize: bool = True, ax=None,
                          title: str = "confusion matrix (rows: ground truth)"):
    """Heat map of a confusion matrix [C, C]; rows normalised to recall when ``normalize``."""
    cm = cm.detach().cpu().double()
    data = cm / cm.sum(1, keepdim=True).clamp(min=1) if normalize else cm
    if ax is None:
        _, ax = plt.subplots(figsize=(0.7 * len(classes) + 2.5, 0.7 * len(classes) + 2))
    im = ax.imshow(data.numpy(), cmap="Blues", vmin=0, vmax=1 if normalize else None)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=9)
    ax.set_yticks(range(len(classes)), classes, fontsize=9)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title(title)
    if len(classes) <= 12:
        for i in range(len(classes)):
            for j in range(len(classes)):
                v = data[i, j].item()
                if v >= 0.01 or not normalize:
                    ax.text(j, i, f"{v:.2f}" if normalize else int(v), ha="center", va="center",
                            fontsize=8, color="white" if normalize and v > 0.5 else "black")
    plt.colorbar(im, ax=ax, fraction=0.046)
    return ax


CURVE_TITLES = {"train_loss": "training loss", "val_miou": "val mIoU (%, scored at full resolution)",
                "val_pixel_acc": "val pixel accuracy (%)", "lr": "learning rate",
                "val_dsb": "val DSB score (%)", "val_AP50": "val mask AP50 (%)"}
SEED_STYLES = ("-", "--", ":", "-.")


def _percent(key: str) -> bool:
    """Scores stored in [0, 1] that the tables print in %: mIoU, accuracy, DSB score, AP."""
    last = key.rsplit("_", 1)[-1]
    return last in ("miou", "acc", "dsb") or last.startswith("AP")


def plot_history(histories, keys: Sequence[str] = ("train_loss", "val_miou"), axes=None, title: str | None = None,
                 colors: dict | None = None, labels: dict | None = None, styles: dict | None = None):
    """Training curves, one panel per key; mIoU and accuracy keys are shown in % (as the
    tables). Epochs without the key (between validations) are skipped, so a val curve joins
    the epochs where val was scored. ``histories``: one :class:`course_lib.engine.History`
    (or its list of per-epoch records), or a dict name → History/records for several runs on
    the same axes; ``colors`` / ``labels`` (None hides it) / ``styles`` (line style) by name."""
    if not isinstance(histories, dict):
        histories = {"": histories}
    if axes is None:
        _, axes = plt.subplots(1, len(keys), figsize=(4.8 * len(keys), 3.2), squeeze=False)
        axes = axes[0]
    for k, (name, h) in enumerate(histories.items()):
        records = getattr(h, "records", h)
        color = (colors or {}).get(name, f"C{k % 10}")
        label = (labels or {}).get(name, name) if name else None
        style = (styles or {}).get(name, "-")
        for ax, key in zip(axes, keys):
            scale = 100.0 if _percent(key) else 1.0
            pts = [(r["epoch"], scale * r[key]) for r in records
                   if r.get(key) is not None and not (isinstance(r[key], float) and math.isnan(r[key]))]
            if pts:
                ax.plot(*zip(*pts), marker="o", ls=style, ms=3, lw=1.2, color=color, label=label)
    for ax, key in zip(axes, keys):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(CURVE_TITLES.get(key, key.replace("_", " ")), fontsize=10)
        ax.set_ylabel("%" if _percent(key) else ("loss" if "loss" in key else key))
        ax.grid(alpha=0.3)
    if any(ax.get_legend_handles_labels()[1] for ax in axes):
        axes[0].legend(fontsize=8)
    if title:
        axes[0].figure.suptitle(title, fontsize=10)
        axes[0].figure.tight_layout()
    return axes


def bar_per_class(values: dict[str, Sequence[float]], classes: Sequence[str], ylabel: str = "IoU", ax=None):
    """Grouped bars: one group per class, one bar per entry of ``values`` (name → [C])."""
    if ax is None:
        _, ax = plt.subplots(figsize=(min(14, max(6, 0.5 * len(classes) * len(values))), 3.2))
    width = 0.8 / len(values)
    x = np.arange(len(classes))
    for k, (name, v) in enumerate(values.items()):
        ax.bar(x + k * width - 0.4 + width / 2, np.asarray(v, dtype=float), width, label=name)
    ax.set_xticks(x, classes, rotation=45, ha="right")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return ax


def _photo_pixels(fig) -> int:
    """Pixels of the largest image drawn with imshow in ``fig`` (0 for pure plots)."""
    sizes = [int(np.prod(im.get_array().shape[:2])) for ax in fig.axes for im in ax.get_images()
             if im.get_array() is not None]
    return max(sizes, default=0)


def figure_format(fig, photo_pixels: int = 64 * 64) -> str:
    """'jpeg' for figures showing a photo-sized image (larger than ``photo_pixels``), where PNG
    would be several times larger; 'png' for plots, matrices and small arrays, whose text and
    flat colours PNG keeps sharp at a fraction of the size."""
    return "jpeg" if _photo_pixels(fig) > photo_pixels else "png"


def notebook_style(dpi: int = 100, jpeg_quality: int = 90) -> None:
    """Inline figures for committed notebooks: ``dpi`` 100, PNG for plots and matrices (sharp
    text), JPEG at ``jpeg_quality`` for figures with photo-sized images (about six times smaller
    than PNG). Does nothing but set the dpi outside IPython."""
    plt.rcParams.update({"figure.dpi": dpi, "savefig.dpi": dpi})
    try:
        from IPython import get_ipython
        from IPython.core.pylabtools import print_figure
        from matplotlib.figure import Figure
        # Importing the inline backend registers its own (PNG) formatters; do it first so that
        # ours replace them rather than being replaced when matplotlib loads the backend lazily.
        import matplotlib_inline.backend_inline  # noqa: F401
    except ImportError:
        return
    shell = get_ipython()
    if shell is None:
        return
    formatters = shell.display_formatter.formatters
    for f in formatters.values():
        f.pop(Figure, None)

    def as_png(fig):
        return print_figure(fig, "png", base64=True) if figure_format(fig) == "png" else None

    def as_jpeg(fig):
        if figure_format(fig) != "jpeg":
            return None
        return print_figure(fig, "jpg", base64=True, pil_kwargs={"quality": jpeg_quality})

    formatters["image/png"].for_type(Figure, as_png)
    formatters["image/jpeg"].for_type(Figure, as_jpeg)


def densest_window(points, size: int | tuple[int, int]) -> tuple[slice, slice]:
    """The window of ``size`` (clipped to the image) that holds the most True pixels of
    ``points`` bool [H, W] → (row slice, column slice), for zooming a figure on, e.g., where
    nuclei touch. Ties go to the top-most, then left-most window."""
    points = np.asarray(points, dtype=np.int64)
    if points.ndim != 2:
        raise ValueError(f"densest_window takes a 2-D mask [H, W], got shape {points.shape}")
    H, W = points.shape
    h, w = (size, size) if isinstance(size, int) else size
    h, w = min(h, H), min(w, W)
    # summed-area table: the count in every h × w window at once
    table = np.pad(points.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    counts = table[h:, w:] - table[:-h, w:] - table[h:, :-w] + table[:-h, :-w]  # [H - h + 1, W - w + 1]
    r0, c0 = np.unravel_index(int(np.argmax(counts)), counts.shape)
    return slice(int(r0), int(r0) + h), slice(int(c0), int(c0) + w)
