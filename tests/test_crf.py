import numpy as np
import pytest
import torch

from course_lib.crf import dense_crf, mean_field

pytest.importorskip("pydensecrf.densecrf")


def _noisy_scene(seed=0, h=30, w=40, noise=1.0):
    """An image of three flat colour regions and noisy class probabilities for it."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((h, w), int)
    labels[:, w // 2:] = 1
    labels[h // 3: 2 * h // 3, 4: w // 3] = 2
    colours = np.array([(20, 20, 20), (200, 200, 200), (30, 200, 60)])
    image = np.clip(colours[labels] + rng.integers(-10, 10, (h, w, 3)), 0, 255).astype(np.uint8)
    logits = np.eye(3)[labels].transpose(2, 0, 1) + rng.normal(0, noise, (3, h, w))
    return image, torch.tensor(logits, dtype=torch.float32).softmax(0).numpy(), labels


def test_crf_returns_distributions_and_cleans_up_noise_along_image_edges():
    image, probs, labels = _noisy_scene()
    q = dense_crf(image, probs)
    assert q.shape == probs.shape and q.dtype == np.float32
    np.testing.assert_allclose(q.sum(0), 1, atol=1e-4)
    before, after = (probs.argmax(0) == labels).mean(), (q.argmax(0) == labels).mean()
    assert before < 0.7 and after > 0.98


def test_zero_iterations_and_zero_weights_leave_the_probabilities_alone():
    image, probs, _ = _noisy_scene(1)
    np.testing.assert_allclose(dense_crf(image, probs, iterations=0), probs, atol=1e-5)
    np.testing.assert_allclose(dense_crf(image, probs, w1=0, w2=0), probs, atol=1e-5)


def test_accepts_torch_tensors():
    image, probs, _ = _noisy_scene(2)
    q = dense_crf(torch.from_numpy(image), torch.from_numpy(probs), iterations=2)
    np.testing.assert_allclose(q, dense_crf(image, probs, iterations=2))


@pytest.mark.parametrize("iterations", [1, 5])
def test_dense_mean_field_agrees_with_pydensecrf(iterations):
    """The O(N²) mean field and pydensecrf's permutohedral lattice solve the same CRF."""
    image, probs, _ = _noisy_scene(3)
    kw = dict(iterations=iterations, w1=5.0, theta_alpha=20.0, theta_beta=10.0)
    q_lib, q_naive = dense_crf(image, probs, **kw), mean_field(image, probs, **kw).numpy()
    assert np.abs(q_lib - q_naive).mean() < 0.01
    assert (q_lib.argmax(0) == q_naive.argmax(0)).mean() > 0.99


def test_bad_input_is_explained():
    image, probs, _ = _noisy_scene(4)
    with pytest.raises(TypeError, match="uint8"):
        dense_crf(image.astype(np.float32) / 255, probs)
    with pytest.raises(ValueError, match="channels last"):
        dense_crf(image.transpose(2, 0, 1).copy(), probs)
    with pytest.raises(ValueError, match="upsample"):
        dense_crf(image, probs[:, :-1])
    with pytest.raises(ValueError, match="softmax"):
        dense_crf(image, np.log(probs))  # logits, not probabilities
    with pytest.raises(ValueError, match="sum to 1"):
        dense_crf(image, probs * 0.5)
    with pytest.raises(ValueError, match="C, H, W"):
        dense_crf(image, probs[0])
    with pytest.raises(ValueError, match="max_pixels"):
        mean_field(np.zeros((200, 200, 3), np.uint8), np.full((2, 200, 200), 0.5, np.float32))


# ---------------------------------------------------------------- reliability (issue 9)

@pytest.mark.parametrize("name", ["theta_alpha", "theta_beta", "theta_gamma"])
@pytest.mark.parametrize("value", [0.0, 1e-6, -1.0, float("nan"), float("inf")])
def test_bad_kernel_widths_are_refused_before_pydensecrf_sees_them(name, value):
    """θβ = 1e-6 crashes pydensecrf (SIGSEGV: a Jupyter kernel dies without a message)."""
    image, probs, _ = _noisy_scene(5)
    for fn in (dense_crf, mean_field):
        with pytest.raises(ValueError, match=rf"{name} must be a finite number ≥ 0\.1"):
            fn(image, probs, **{name: value})


@pytest.mark.parametrize("name", ["w1", "w2"])
@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf")])
def test_bad_weights_are_refused(name, value):
    image, probs, _ = _noisy_scene(5)
    for fn in (dense_crf, mean_field):
        with pytest.raises(ValueError, match=rf"{name} must be a finite number ≥ 0"):
            fn(image, probs, **{name: value})


@pytest.mark.parametrize("iterations", [-1, 10_000, 2.5])
def test_iterations_are_a_capped_whole_number(iterations):
    image, probs, _ = _noisy_scene(5)
    for fn in (dense_crf, mean_field):
        with pytest.raises(ValueError, match="iterations must be a whole number in 0..200"):
            fn(image, probs, iterations=iterations)


def test_crash_values_really_crash_pydensecrf_in_a_subprocess():
    """The oracle for the guard above: the raw library dies on θβ = 1e-6 (run in a child)."""
    import subprocess
    import sys

    code = (
        "import numpy as np, pydensecrf.densecrf as d\n"
        "h, w = 40, 50\n"
        "img = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)\n"
        "c = d.DenseCRF2D(w, h, 3)\n"
        "c.setUnaryEnergy(np.full((3, h * w), 1.0, np.float32))\n"
        "c.addPairwiseBilateral(sxy=60.0, srgb=1e-6, rgbim=img, compat=4.0)\n"
        "c.inference(5)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert r.returncode != 0  # a signal (negative) or an abort


def test_channels_last_probabilities_get_the_right_hint():
    image, probs, _ = _noisy_scene(6)
    for fn in (dense_crf, mean_field):
        with pytest.raises(ValueError, match=r"\[H, W, C\].*permute\(2, 0, 1\)"):
            fn(image, probs.transpose(1, 2, 0).copy())


def test_mean_field_validates_like_dense_crf():
    image, probs, _ = _noisy_scene(7)
    with pytest.raises(TypeError, match="uint8"):
        mean_field(image.astype(np.float32) / 255, probs)
    with pytest.raises(ValueError, match="softmax"):
        mean_field(image, np.log(probs))
    with pytest.raises(ValueError, match="channels last"):
        mean_field(image.transpose(2, 0, 1).copy(), probs)
    with pytest.raises(ValueError, match="C, H, W"):
        mean_field(image, probs[0])


def test_grid_search_grows_the_grid_until_the_best_point_is_inside():
    from course_lib.crf import grid_search

    calls = []

    def score(w1, theta_alpha):  # maximum at w1 = 8, theta_alpha = 10: outside the starting grid
        calls.append((w1, theta_alpha))
        return -(np.log(w1 / 8)) ** 2 - (np.log(theta_alpha / 10)) ** 2

    best, scores = grid_search(score, {"w1": (2, 4), "theta_alpha": (40, 80, 160)})
    assert best == {"w1": 8.0, "theta_alpha": 10.0}
    w1s = sorted({k[0] for k in scores}); tas = sorted({k[1] for k in scores})
    assert w1s[0] < best["w1"] < w1s[-1] and tas[0] < best["theta_alpha"] < tas[-1]  # inside, not on the edge
    assert len(calls) == len(set(calls)) == len(scores)  # each point scored once
    # a one-value axis is fixed; a bounded number of extensions stops a runaway optimum
    best, scores = grid_search(lambda w1, tb: w1 + 0 * tb, {"w1": (1, 2), "tb": (5,)}, max_extensions=2)
    assert best == {"w1": 8.0, "tb": 5.0} and {k[1] for k in scores} == {5.0}


def test_crf_miou_scores_a_labelling_against_pydensecrf_output():
    from course_lib.crf import crf_miou

    rng = np.random.default_rng(0)
    img = np.zeros((20, 24, 3), np.uint8); img[:, 12:] = 200
    label = torch.zeros(20, 24, dtype=torch.long); label[:, 12:] = 1
    p = np.full((2, 20, 24), 0.5, np.float32); p[1, :, 12:] = 0.7; p[0, :, 12:] = 0.3; p[0, :, :12] = 0.7; p[1, :, :12] = 0.3
    p += rng.uniform(-0.25, 0.25, p.shape).astype(np.float32); p = np.clip(p, 0.01, 1); p /= p.sum(0, keepdims=True)
    assert crf_miou([(img, p, label)], 2, iterations=0, w1=4, theta_alpha=10, theta_beta=5) < 1.0
    assert crf_miou([(img, p, label)], 2, iterations=10, w1=10, theta_alpha=10, theta_beta=5) == pytest.approx(1.0)


def test_crf_labels_in_worker_processes_equal_one_process():
    from course_lib.crf import crf_labels, crf_miou, dense_crf

    rng = np.random.default_rng(1)
    samples = []
    for _ in range(5):
        img = rng.integers(0, 255, (18, 22, 3), dtype=np.uint8)
        p = rng.dirichlet(np.ones(3), size=(18, 22)).transpose(2, 0, 1).astype(np.float32)
        samples.append((img, p, torch.from_numpy(rng.integers(0, 3, (18, 22)))))
    params = dict(w1=5.0, theta_alpha=8.0, theta_beta=20.0)
    one, secs = crf_labels(samples, 5, workers=1, **params)
    two, _ = crf_labels(samples, 5, workers=2, **params)
    assert len(one) == len(secs) == 5 and all(s >= 0 for s in secs)
    assert all(np.array_equal(a, b) for a, b in zip(one, two))
    assert np.array_equal(one[0], dense_crf(samples[0][0], samples[0][1], 5, **params).argmax(0))
    assert crf_miou(samples, 3, 5, workers=1, **params) == crf_miou(samples, 3, 5, workers=2, **params)
