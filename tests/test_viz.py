import numpy as np
import pytest
import torch

from course_lib import viz
from course_lib.engine import History


def test_colorize_and_overlay():
    mask = torch.tensor([[0, 1], [255, 1]])
    pal = [(10, 20, 30), (200, 100, 0)]
    col = viz.colorize(mask, pal)
    assert col.shape == (2, 2, 3) and col.dtype == np.uint8
    assert tuple(col[0, 0]) == (10, 20, 30) and tuple(col[1, 0]) == (0, 0, 0)
    img = torch.full((3, 2, 2), 100, dtype=torch.uint8)
    ov = viz.overlay(img, mask, pal, alpha=0.5)
    assert tuple(ov[1, 0]) == (100, 100, 100)  # void shows the plain image
    assert tuple(ov[0, 1]) == (150, 100, 50)


def test_to_numpy_image_formats():
    assert viz.to_numpy_image(torch.rand(1, 4, 5)).shape == (4, 5, 3)
    assert viz.to_numpy_image(np.zeros((4, 5), np.uint8)).shape == (4, 5, 3)
    assert len(viz.make_palette(30)) == 30


def test_figures_render():
    imgs = [torch.zeros(3, 8, 8, dtype=torch.uint8)] * 2
    masks = [torch.zeros(8, 8, dtype=torch.long)] * 2
    fig = viz.show_segmentation(imgs, masks, masks, palette=[(0, 0, 0), (1, 1, 1)], classes=["a", "b"])
    assert len(fig.axes) == 6
    fig = viz.show_segmentation(imgs, masks, {"A": masks, "B": masks, "C": masks}, palette=[(0, 0, 0), (1, 1, 1)])
    assert [a.get_title() for a in fig.axes[:5]] == ["image", "ground truth", "A", "B", "C"]
    ax = viz.plot_confusion_matrix(torch.eye(3, dtype=torch.long) * 5, ["a", "b", "c"])
    assert ax.get_xlabel() == "predicted"
    h = History([{"epoch": 1, "train_loss": 1.0, "val_miou": 0.2}, {"epoch": 2, "train_loss": 0.5, "val_miou": 0.4}])
    axes = viz.plot_history(h)
    assert list(axes[0].lines[0].get_ydata()) == [1.0, 0.5]
    viz.bar_per_class({"x": [0.1, 0.2]}, ["a", "b"])


def test_figure_format_png_for_plots_jpeg_for_photos():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    ax.imshow(np.zeros((11, 11)))  # a confusion matrix: small array, text on it
    assert viz.figure_format(fig) == "png"
    fig, ax = plt.subplots()
    ax.imshow(np.zeros((120, 160, 3), np.uint8))
    assert viz.figure_format(fig) == "jpeg"
    plt.close("all")


def test_camvid_palette_colours_are_distinct():
    from course_lib.data import CamVid

    pal = np.asarray(CamVid.palette, float)
    dist = np.sqrt(((pal[:, None] - pal[None]) ** 2).sum(-1))
    np.fill_diagonal(dist, np.inf)
    road, pavement, car = (CamVid.classes.index(c) for c in ("Road", "Pavement", "Car"))
    assert min(dist[road, pavement], dist[road, car], dist[pavement, car]) > 120
    assert dist.min() > 60


def test_plot_history_skips_epochs_without_validation_and_overlays_runs():
    import matplotlib.pyplot as plt

    from course_lib.engine import History
    from course_lib.viz import plot_history

    h = History()
    for e in (1, 2, 3, 4):
        h.append(epoch=e, train_loss=1.0 / e, **({"val_miou": 0.1 * e} if e % 2 == 0 else {}))
    axes = plot_history({"a": h, "b": h.records}, title="t")
    assert len(axes[0].lines) == 2 and list(axes[1].lines[0].get_xdata()) == [2, 4]
    assert [t.get_text() for t in axes[0].get_legend().get_texts()] == ["a", "b"]
    axes = plot_history(h)  # a single run: no legend
    assert axes[0].get_legend() is None and len(axes[0].lines[0].get_xdata()) == 4
    plt.close("all")


def test_plot_history_shows_scores_in_percent_and_losses_as_they_are():
    import matplotlib.pyplot as plt

    from course_lib.viz import plot_history

    records = [{"epoch": 1, "train_loss": 0.5, "val_dsb": 0.25, "val_AP50": 0.5, "val_miou": 0.3, "lr": 0.01}]
    keys = ("train_loss", "val_dsb", "val_AP50", "val_miou", "lr")
    axes = plot_history(records, keys)
    assert [float(ax.lines[0].get_ydata()[0]) for ax in axes] == pytest.approx([0.5, 25.0, 50.0, 30.0, 0.01])
    assert [ax.get_ylabel() for ax in axes[1:4]] == ["%"] * 3 and axes[0].get_ylabel() == "loss"
    plt.close("all")


def test_densest_window_is_the_window_with_most_points():
    from course_lib.viz import densest_window

    rng = np.random.default_rng(0)
    for trial in range(20):
        H, W = rng.integers(3, 15, size=2)
        points = rng.random((H, W)) < 0.3
        h, w = int(rng.integers(1, 18)), int(rng.integers(1, 18))
        rows, cols = densest_window(points, (h, w))
        hh, ww = min(h, H), min(w, W)
        assert (rows.stop - rows.start, cols.stop - cols.start) == (hh, ww)
        assert 0 <= rows.start and rows.stop <= H and 0 <= cols.start and cols.stop <= W
        best = max(points[r:r + hh, c:c + ww].sum() for r in range(H - hh + 1) for c in range(W - ww + 1))
        assert points[rows, cols].sum() == best
    # a single cluster near the bottom-right corner: the window reaches the edge and holds it all
    points = np.zeros((40, 50), bool)
    points[35:40, 44:50] = True
    rows, cols = densest_window(points, 16)
    assert points[rows, cols].sum() == points.sum() and rows.stop <= 40 and cols.stop <= 50
