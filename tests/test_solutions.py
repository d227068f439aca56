"""The notebooks' hidden solutions pass their own checks, and typical wrong answers fail them.

How the exercises are marked up (cell metadata tags, which a student version can also use to
strip the solutions):

- ``exercise``: the stub a student fills in (it raises NotImplementedError);
- ``check``: a cell that calls ``check(...)`` (``course_lib.exercises.check``) on the stubs;
- ``exercise-context``: an earlier cell whose definitions a check needs (optional; most checks
  need only the notebook's first code cell, its imports and setup);
- ``solution``: the Markdown cell at the end holding the solutions in ```python fences.

For each notebook this test runs, in one namespace and in the ``smoke`` profile: the first code
cell, the ``exercise-context`` cells, the solution code, then every ``check`` cell. Each check
cell must call ``check`` at least once and every call must return True. Then, for each typical
wrong answer in ``WRONG`` below, it redefines that function, re-runs the check cells that mention
it and expects an AssertionError, so a check that accepts anything is caught too. Nothing of the
solutions is copied here: they are read from the notebooks. Stubs, demos and training cells are
not run, which keeps this to seconds per notebook.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from course_lib import exercises

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"

# A typical wrong answer per exercise function: (function name, source defining it).
WRONG: dict[str, list[tuple[str, str]]] = {
    "00_setup_and_data": [
        ("void_fraction", "def void_fraction(mask):\n    return float((mask == 255).sum())"),
        ("inverse_frequency_weights", "def inverse_frequency_weights(counts):\n    w = counts.sum() / counts\n    return w / w.sum()"),
        ("mislabelled_fraction",  # forgets to leave void out
         "def mislabelled_fraction(mask):\n    return float((mask != mask.flip(-1)).float().mean())"),
        ("same_geometry", "def same_geometry(out_mask, mask):\n    return torch.equal(out_mask, mask)"),
    ],
    "01_metrics": [
        ("pixel_accuracy_from_cm",  # mean recall instead of pixel accuracy
         "def pixel_accuracy_from_cm(cm):\n    return float((cm.diagonal() / cm.sum(1).clamp(min=1)).mean())"),
        ("iou_from_cm",  # forgets to subtract TP from the union
         "def iou_from_cm(cm):\n    cm = cm.double()\n    return (cm.diagonal() / (cm.sum(0) + cm.sum(1))).float()"),
        ("tolerance_px", "def tolerance_px(h, w):\n    return round(0.008 * (h * h + w * w) ** 0.5)"),
        ("thin_iou",  # uses dilation, i.e. the 'fat' prediction
         "def thin_iou(mask, px):\n    t = ndimage.binary_dilation(mask, iterations=px)\n"
         "    return float((t & mask).sum() / (t | mask).sum())"),
    ],
    "02_sliding_window": [
        ("fcn_output_size",  # whole 32×32 patches at stride 4
         "def fcn_output_size(h, w):\n    return ((h - 32) // 4 + 1, (w - 32) // 4 + 1)"),
        ("linear_to_conv",  # reshapes the weight in (H, W, C) order
         "def linear_to_conv(linear, channels, k):\n"
         "    conv = torch.nn.Conv2d(channels, linear.out_features, k)\n"
         "    with torch.no_grad():\n"
         "        conv.weight.copy_(linear.weight.view(-1, k, k, channels).permute(0, 3, 1, 2))\n"
         "        conv.bias.copy_(linear.bias)\n"
         "    return conv"),
        ("linear_to_conv",  # right weights, but it jumps k pixels: no longer one output per position
         "def linear_to_conv(linear, channels, k):\n"
         "    conv = torch.nn.Conv2d(channels, linear.out_features, k, stride=k)\n"
         "    with torch.no_grad():\n"
         "        conv.weight.copy_(linear.weight.view(-1, channels, k, k))\n"
         "        conv.bias.copy_(linear.bias)\n"
         "    return conv"),
    ],
    "03_fcn": [
        ("score_map_sizes",  # divides without padding first
         "def score_map_sizes(h, w):\n    return {s: (h // s, w // s) for s in (8, 16, 32)}"),
        ("fcn8s_head_parameters",  # forgets the BatchNorm of the stride-32 head
         "def fcn8s_head_parameters(C):\n    return 512 * 128 * 9 + (129 + 257 + 129) * C + 2 * C * 16"),
    ],
    "04_upsampling": [
        ("transposed_output_size",  # ignores dilation
         "def transposed_output_size(h, k, s=1, p=0, op=0, d=1):\n    return (h - 1) * s - 2 * p + (k - 1) + op + 1"),
        ("bed_of_nails",  # nearest-neighbour upsampling instead
         "def bed_of_nails(x, s):\n    return x.repeat_interleave(s, -2).repeat_interleave(s, -1)"),
        ("even_overlap", "def even_overlap(k, s):\n    return k >= s"),
    ],
    "05_unet_segnet": [
        ("unet_padded_size", "def unet_padded_size(h, w, depth=4):\n    m = 2 ** depth\n    return (h // m * m, w // m * m)"),
        ("soft_dice",  # averages over classes instead of returning one value per class
         "def soft_dice(probs, onehot):\n    d = 2 * (probs * onehot).sum(1) / (probs.sum(1) + onehot.sum(1))\n"
         "    return d.mean().expand(len(d))"),
    ],
    "06_atrous_and_crf": [
        ("dilate_kernel",  # spreads the taps by rate + 1
         "def dilate_kernel(weight, rate):\n    k = weight.shape[-1]\n    n = (k - 1) * (rate + 1) + 1\n"
         "    out = weight.new_zeros(*weight.shape[:2], n, n)\n    out[..., ::rate + 1, ::rate + 1] = weight\n    return out"),
        ("receptive_field_of",  # ignores the strides
         "def receptive_field_of(layers):\n    return 1 + sum((k - 1) * d for k, s, d in layers)"),
    ],
    "07_deeplab_v2_v3": [
        ("aspp_v3_params",  # forgets the projection's BatchNorm
         "def aspp_v3_params(c_in, c, n_rates, image_pooling):\n"
         "    n = 1 + n_rates + int(image_pooling)\n"
         "    return c_in * c * (1 + 9 * n_rates + int(image_pooling)) + n * 2 * c + n * c * c"),
    ],
    "08_deeplab_v3plus": [
        ("ksac_params",  # one kernel per rate, as in ASPP
         "def ksac_params(c_in, c, n_rates, image_pooling):\n"
         "    n = 1 + n_rates + int(image_pooling)\n"
         "    return c_in * c * (1 + 9 * n_rates + int(image_pooling)) + n * 2 * c + n * c * c + 2 * c"),
    ],
    "09_boundary_boosted": [
        ("class_edges",  # void treated as just another class: edges drawn against void
         "def class_edges(mask, k, radius):\n"
         "    from scipy.ndimage import distance_transform_edt\n"
         "    inside = mask == k\n"
         "    if not inside.any():\n"
         "        return np.zeros(mask.shape, bool)\n"
         "    total = distance_transform_edt(inside) + distance_transform_edt(~inside)\n"
         "    return (total > 0) & (total <= radius)"),
        ("class_edges",  # no case for a class that, with void, covers the whole image: EDT of all-True is finite
         "def class_edges(mask, k, radius):\n"
         "    from scipy.ndimage import distance_transform_edt\n"
         "    inside, void = mask == k, mask == 255\n"
         "    if not inside.any():\n"
         "        return np.zeros(mask.shape, bool)\n"
         "    total = distance_transform_edt(inside | void) + distance_transform_edt(~inside)\n"
         "    return (total > 0) & (total <= radius)"),
        ("pos_weight",  # no clamp: an image without edges divides by zero, a dense one goes below 1
         "def pos_weight(edges):\n"
         "    pos = int(edges.sum())\n"
         "    return (edges.numel() - pos) / max(pos, 1)"),
    ],
    "10_mask_rcnn": [
        ("box_iou",  # the old "+1 pixel" convention of integer boxes, on continuous coordinates
         "def box_iou(a, b):\n"
         "    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]) + 1)\n"
         "    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]) + 1)\n"
         "    inter = iw * ih\n"
         "    union = (a[2] - a[0] + 1) * (a[3] - a[1] + 1) + (b[2] - b[0] + 1) * (b[3] - b[1] + 1) - inter\n"
         "    return float(inter / union)"),
        ("box_iou",  # no clamp at 0: boxes apart in both x and y get a positive 'intersection'
         "def box_iou(a, b):\n"
         "    inter = (min(a[2], b[2]) - max(a[0], b[0])) * (min(a[3], b[3]) - max(a[1], b[1]))\n"
         "    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter\n"
         "    return float(inter / union)"),
        ("bilinear_at",  # the weights of x and y swapped
         "def bilinear_at(f, y, x):\n"
         "    H, W = f.shape\n"
         "    y0, x0 = min(int(y), H - 2), min(int(x), W - 2)\n"
         "    ly, lx = y - y0, x - x0\n"
         "    return float((1 - lx) * (1 - ly) * f[y0, x0] + (1 - lx) * ly * f[y0, x0 + 1]\n"
         "                 + lx * (1 - ly) * f[y0 + 1, x0] + lx * ly * f[y0 + 1, x0 + 1])"),
        ("bilinear_at",  # nearest neighbour instead of interpolation
         "def bilinear_at(f, y, x):\n    return float(f[int(round(y)), int(round(x))])"),
        ("dsb_toy",  # one threshold, IoU 0.5, instead of the mean over 0.50:0.05:0.95
         "def dsb_toy():\n    return 2 / 4"),
        ("dsb_toy",  # IoU ≥ t instead of IoU > t: nucleus 2 (IoU 0.6) also matched at t = 0.6
         "def dsb_toy():\n    return (3 * 2 / 4 + 7 * 1 / 5) / 10"),
    ],
    "11_basis_instance": [
        ("prototype_mask",  # not cropped to the box
         "def prototype_mask(prototypes, coefficients, box):\n"
         "    return torch.sigmoid(torch.einsum('k,khw->hw', coefficients, prototypes))"),
        ("prototype_mask",  # x2, y2 read as exclusive: the last column and row of the box are lost
         "def prototype_mask(prototypes, coefficients, box):\n"
         "    x1, y1, x2, y2 = (int(v) for v in box)\n"
         "    full = torch.sigmoid(torch.einsum('k,khw->hw', coefficients, prototypes))\n"
         "    out = torch.zeros_like(full)\n"
         "    out[y1:y2, x1:x2] = full[y1:y2, x1:x2]\n"
         "    return out"),
        ("boundary_target",  # the boundary of the merged foreground: the line between touching squares is lost
         "def boundary_target(masks):\n"
         "    lap = -np.ones((3, 3)); lap[1, 1] = 8\n"
         "    fg = masks.any(0).astype(float)\n"
         "    return (ndimage.convolve(fg, lap, mode='constant') > 0.1).astype(np.uint8)"),
        ("s_boundary",  # Σ bp + Σ bg instead of the sums of squares: wrong for soft maps
         "def s_boundary(bp, bg, eps=1.0):\n"
         "    return float((2 * (bp * bg).sum() + eps) / (bp.sum() + bg.sum() + eps))"),
        ("s_boundary",  # no ε: two empty maps give nan instead of 1
         "def s_boundary(bp, bg, eps=1.0):\n"
         "    return float(2 * (bp * bg).sum() / ((bp ** 2).sum() + (bg ** 2).sum()))"),
    ],
}


def tagged(nb: dict, tag: str) -> list[dict]:
    return [c for c in nb["cells"] if tag in c.get("metadata", {}).get("tags", [])]


def source(cell: dict) -> str:
    s = cell["source"]
    return s if isinstance(s, str) else "".join(s)


def solution_code(nb: dict) -> str:
    cells = tagged(nb, "solution")
    assert len(cells) == 1, "exactly one cell must be tagged 'solution'"
    blocks = re.findall(r"```python\n(.*?)```", source(cells[0]), flags=re.S)
    assert blocks, "the solution cell holds no ```python block"
    return "\n\n".join(blocks)


def notebooks_with_exercises() -> list[str]:
    return sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb") if tagged(json.loads(p.read_text()), "check"))


def test_every_notebook_with_exercises_is_marked_up():
    """Every 'Exercise N' that has a stub has a check and appears in WRONG with a wrong answer."""
    for p in sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = json.loads(p.read_text())
        stubs = [c for c in nb["cells"] if c["cell_type"] == "code" and "raise NotImplementedError" in source(c)]
        if not stubs:
            continue
        assert all("exercise" in c["metadata"].get("tags", []) for c in stubs), f"{p.name}: untagged stub"
        names = {n for c in stubs for n in re.findall(r"^def (\w+)\(", source(c), flags=re.M)}
        assert names == {n for n, _ in WRONG[p.stem]}, f"{p.name}: exercises {names} vs WRONG"
        checks = " ".join(source(c) for c in tagged(nb, "check"))
        assert all(n in checks for n in names), f"{p.name}: an exercise has no check"


@pytest.mark.parametrize("name", notebooks_with_exercises())
def test_solutions_pass_and_wrong_answers_fail(name, monkeypatch, capsys):
    monkeypatch.setenv("COURSE_PROFILE", "smoke")
    monkeypatch.chdir(NOTEBOOKS)
    monkeypatch.setattr(plt, "show", lambda *a, **k: plt.close("all"))
    nb = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())
    code_cells = [c for c in nb["cells"] if c["cell_type"] == "code"]
    ns: dict = {"__name__": f"notebook_{name}"}

    def run(src: str, label: str):
        exec(compile(src, f"<{name}: {label}>", "exec"), ns)

    run(source(code_cells[0]), "setup cell")
    for k, cell in enumerate(tagged(nb, "exercise-context")):
        run(source(cell), f"exercise-context {k}")
    results: list = []

    def recording_check(*args, **kwargs):
        results.append(exercises.check(*args, **kwargs))
        return results[-1]

    ns["check"] = recording_check
    solutions = solution_code(nb)
    run(solutions, "solutions")
    checks = tagged(nb, "check")
    for k, cell in enumerate(checks):
        before = len(results)
        run(source(cell), f"check cell {k}")
        assert len(results) > before, f"check cell {k} of {name} calls no check()"
    assert results and all(r is True for r in results), f"{name}: a solution fails its check ({results})"
    plt.close("all")

    for func, wrong in WRONG[name]:
        run(wrong, f"wrong {func}")
        cells = [c for c in checks if re.search(rf"\b{func}\b", source(c))]
        assert cells, f"no check cell mentions {func}"
        with pytest.raises(AssertionError):
            for cell in cells:
                run(source(cell), f"check of {func} (wrong answer)")
        run(solutions, "solutions again")
    plt.close("all")
