"""Techniques beyond the reports, each on its own: schedules, optimizers, augmentation, dropout,
label smoothing, ensembles."""

import math

import numpy as np
import pytest

from klayer import layers
from klayer.network import Network, NetworkConfig, dropout_masks, loss_and_grads
from klayer.training import schedules as sch
from klayer.training.augment import Augmenter, colour_jitter, flip, resized_crop, translate
from klayer.training.optim import SGD, Adam, adam_update, make_optimizer, sgd_update


# -- schedules --------------------------------------------------------------------------------
def test_triangular2_halves_the_amplitude_every_cycle():
    lo, hi, n_s = 1e-4, 0.1, 50
    for c in range(4):
        assert sch.triangular2_eta(2 * n_s * c, lo, hi, n_s) == pytest.approx(lo, rel=1e-12)
        assert sch.triangular2_eta(2 * n_s * c + n_s, lo, hi, n_s) == pytest.approx(lo + (hi - lo) / 2**c, rel=1e-12)
    # linear in between, like the triangular policy within the first cycle
    assert sch.triangular2_eta(20, lo, hi, n_s) == pytest.approx(sch.cyclic_eta(20, lo, hi, n_s))


def test_exp_range_scales_the_amplitude_by_gamma_to_the_t():
    lo, hi, n_s, g = 1e-4, 0.1, 50, 0.99
    for t in (50, 150, 250, 75):
        tri = sch.cyclic_eta(t, lo, hi, n_s) - lo
        assert sch.exp_range_eta(t, lo, hi, n_s, g) == pytest.approx(lo + tri * g**t, rel=1e-12)
    assert sch.exp_range_eta(50, lo, hi, n_s, 1.0) == pytest.approx(hi)


def test_one_cycle_rises_to_eta_max_then_anneals_below_eta_min():
    lo, hi, T, w = 1e-3, 0.5, 1000, 0.3
    eta = np.array([sch.one_cycle_eta(t, lo, hi, T, w) for t in range(T + 1)])
    assert eta[0] == pytest.approx(lo) and eta[300] == pytest.approx(hi)
    assert np.all(np.diff(eta[:301]) > 0) and np.all(np.diff(eta[300:]) < 0)
    assert eta[-1] == pytest.approx(lo / 1e4)
    assert eta[150] == pytest.approx(lo + (hi - lo) / 2)  # cosine: half-way at half the warm-up
    assert eta[650] == pytest.approx(lo / 1e4 + (hi - lo / 1e4) / 2)


def test_cosine_warms_up_linearly_then_anneals_to_eta_min():
    lo, hi, T, w = 1e-4, 0.2, 1000, 0.1
    eta = np.array([sch.cosine_eta(t, lo, hi, T, w) for t in range(T + 1)])
    np.testing.assert_allclose(eta[:100], hi * np.arange(1, 101) / 100)
    assert eta[100] == pytest.approx(hi) and eta[-1] == pytest.approx(lo)
    assert eta[550] == pytest.approx(lo + (hi - lo) / 2)
    assert sch.cosine_eta(0, lo, hi, T) == pytest.approx(hi)  # no warm-up


def test_schedules_take_one_eta_range_per_network():
    lo, hi = np.array([1e-4, 1e-3]), np.array([0.1, 0.2])
    for f, args in [
        (sch.cyclic_eta, (7,)),
        (sch.triangular2_eta, (7,)),
        (sch.exp_range_eta, (7, 0.99)),
        (sch.one_cycle_eta, (100, 0.3)),
        (sch.cosine_eta, (100, 0.1)),
    ]:
        both = f(40, lo, hi, *args)
        assert both.shape == (2,)
        for i in range(2):
            assert both[i] == pytest.approx(float(f(40, lo[i], hi[i], *args)))


# -- optimizers -------------------------------------------------------------------------------
def _params(rng, K=2):
    return {"W1": rng.standard_normal((K, 3, 4)), "b1": rng.standard_normal((K, 3))}


def test_sgd_step_is_the_gradient_of_the_cost_with_its_l2_penalty(rng):
    """One step: W <- W - eta (dL/dW + 2 lam W); biases are not penalized."""
    p = _params(rng)
    g = {k: rng.standard_normal(v.shape) for k, v in p.items()}
    eta, lam = np.array([0.1, 0.05]), np.array([0.3, 0.01])
    expected = {
        "W1": p["W1"] - eta[:, None, None] * (g["W1"] + 2 * lam[:, None, None] * p["W1"]),
        "b1": p["b1"] - eta[:, None] * g["b1"],
    }
    scaled = {k: v * eta.reshape((-1,) + (1,) * (v.ndim - 1)) for k, v in g.items()}
    SGD().update(p, scaled, {}, eta, lam, 0)
    for k in p:
        np.testing.assert_allclose(p[k], expected[k], rtol=1e-12)


@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum_keeps_a_velocity(rng, nesterov):
    p = _params(rng, K=1)
    mu, eta, lam = 0.9, np.array([0.1]), np.array([0.02])
    opt = SGD(mu, nesterov)
    state = opt.init(p)
    ref = {k: v.copy() for k, v in p.items()}
    v = {k: np.zeros_like(a) for k, a in p.items()}
    for _ in range(3):
        g = {k: rng.standard_normal(a.shape) for k, a in p.items()}
        for k in ref:  # the textbook form, penalty gradient included for W
            gk = g[k] + (2 * lam[0] * ref[k] if k.startswith("W") else 0)
            v[k] = mu * v[k] - eta[0] * gk
            ref[k] = ref[k] + (mu * v[k] - eta[0] * gk if nesterov else v[k])
        opt.update(p, {k: eta[0] * a for k, a in g.items()}, state, eta, lam, 0)
        for k in p:
            np.testing.assert_allclose(p[k], ref[k], rtol=1e-12)
    assert np.abs(state["v.W1"]).max() > 0


def _torch_step(torch_opt, params, grads, steps):
    import torch

    tp = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in params.items()}
    opt = torch_opt(tp)
    for g in grads[:steps]:
        opt.zero_grad()
        for k in tp:
            tp[k].grad = torch.tensor(g[k])
        opt.step()
    return {k: v.detach().numpy() for k, v in tp.items()}


@pytest.mark.parametrize("kind", ["nesterov", "adam", "adamw"])
def test_optimizers_agree_with_pytorch(rng, kind):
    torch = pytest.importorskip("torch")
    p = {"W1": rng.standard_normal((3, 4)), "b1": rng.standard_normal(3)}
    grads = [{k: rng.standard_normal(v.shape) for k, v in p.items()} for _ in range(5)]
    eta, lam, wd = 0.01, 0.05, 0.1
    ours = {k: v[None].copy() for k, v in p.items()}
    if kind == "nesterov":
        opt, state = SGD(0.9, True), None

        def make(tp):
            return torch.optim.SGD(
                [{"params": [tp["W1"]], "weight_decay": 2 * lam}, {"params": [tp["b1"]], "weight_decay": 0}],
                lr=eta, momentum=0.9, nesterov=True,
            )  # fmt: skip
    elif kind == "adam":
        opt = Adam(0.9, 0.999, 1e-8)

        def make(tp):
            return torch.optim.Adam(
                [{"params": [tp["W1"]], "weight_decay": 2 * lam}, {"params": [tp["b1"]], "weight_decay": 0}], lr=eta
            )
    else:
        opt, lam = Adam(0.9, 0.999, 1e-8, weight_decay=wd), 0.0

        def make(tp):
            return torch.optim.AdamW(
                [{"params": [tp["W1"]], "weight_decay": wd}, {"params": [tp["b1"]], "weight_decay": 0}], lr=eta
            )

    state = opt.init(ours)
    for t, g in enumerate(grads):
        gg = {k: (eta * v if opt.prescaled else v)[None].copy() for k, v in g.items()}
        opt.update(ours, gg, state, np.array([eta]), np.array([lam]), t)
    theirs = _torch_step(make, p, grads, len(grads))
    for k in p:
        np.testing.assert_allclose(ours[k][0], theirs[k], rtol=1e-10, atol=1e-12)


def test_adam_bias_correction_makes_the_first_step_eta_times_the_sign(rng):
    p = {"W1": np.zeros((1, 2, 2))}
    g = {"W1": np.array([[[3.0, -0.5], [1e-3, -20.0]]])}
    state = Adam().init(p)
    adam_update(p, {"W1": g["W1"].copy()}, state, np.array([0.01]), np.array([0.0]), 0)
    np.testing.assert_allclose(p["W1"], -0.01 * np.sign(g["W1"]), rtol=1e-4)


def _torch_run(make, p, grads):
    """Our optimizer's result needs no K axis here: p and grads are (3, 4) / (3,) arrays."""
    return _torch_step(make, p, grads, len(grads))


@pytest.mark.parametrize("explicit", [False, True])
def test_default_hyperparameters_are_pytorchs(rng, explicit):
    """Adam() and adam_update's defaults are Kingma & Ba's (PyTorch's betas, eps, no decay); SGD(mu)
    and sgd_update(..., mu) are heavy-ball momentum (PyTorch's nesterov=False)."""
    torch = pytest.importorskip("torch")
    p = {"W1": rng.standard_normal((3, 4)), "b1": rng.standard_normal(3)}
    grads = [{k: rng.standard_normal(v.shape) for k, v in p.items()} for _ in range(5)]
    eta = 0.01
    for opt, make in [
        (Adam(), lambda tp: torch.optim.Adam(tp.values(), lr=eta)),
        (SGD(0.9), lambda tp: torch.optim.SGD(tp.values(), lr=eta, momentum=0.9)),
    ]:
        ours = {k: v[None].copy() for k, v in p.items()}
        state = opt.init(ours)
        for t, g in enumerate(grads):
            gg = {k: (eta * v if opt.prescaled else v)[None].copy() for k, v in g.items()}
            args = (ours, gg, state, np.array([eta]), np.array([0.0]))
            if not explicit:
                opt.update(*args, t)
            elif isinstance(opt, Adam):
                adam_update(*args, t)
            else:
                sgd_update(*args, 0.9)
        theirs = _torch_run(make, p, grads)
        for k in p:
            np.testing.assert_allclose(ours[k][0], theirs[k], rtol=1e-10, atol=1e-12, err_msg=f"{opt} {k}")


def test_plain_sgd_keeps_no_state_and_is_the_default(rng):
    p = _params(rng)
    assert SGD().init(p) == {} and SGD(0.0, False).init(p) == {}
    g = {k: rng.standard_normal(v.shape) for k, v in p.items()}
    eta, lam = np.array([0.1, 0.05]), np.array([0.3, 0.01])
    expected = {
        "W1": (1 - 2 * eta * lam)[:, None, None] * p["W1"] - eta[:, None, None] * g["W1"],
        "b1": p["b1"] - eta[:, None] * g["b1"],
    }
    sgd_update(p, {k: v * eta.reshape((-1,) + (1,) * (v.ndim - 1)) for k, v in g.items()}, {}, eta, lam)
    for k in p:
        np.testing.assert_allclose(p[k], expected[k], rtol=1e-12)
    m = SGD(0.5).init(p)
    assert sorted(m) == ["v.W1", "v.b1"] and not any(v.any() for v in m.values())
    a = Adam().init(p)
    assert sorted(a) == ["m.W1", "m.b1", "v.W1", "v.b1"] and not any(v.any() for v in a.values())


def test_float32_updates_are_float32_arithmetic(rng):
    """A float32 stack is updated in float32: W <- (1 - 2 eta lam) W - eta dL/dW with the factor
    rounded to float32 first (bitwise), not computed in float64 and rounded afterwards."""
    W = rng.standard_normal((2, 30, 40)).astype(np.float32)
    g = (rng.standard_normal((2, 30, 40)) * 0.01).astype(np.float32)
    eta, lam = np.array([0.1, 0.07]), np.array([0.3, 0.011])
    p = {"W1": W.copy()}
    sgd_update(p, {"W1": g.copy()}, {}, eta, lam)
    factor = (1 - 2 * eta * lam).astype(np.float32)[:, None, None]
    np.testing.assert_array_equal(p["W1"], W * factor - g)
    assert p["W1"].dtype == np.float32


def test_make_optimizer_follows_the_train_config():
    from klayer.config import TrainConfig

    assert make_optimizer(TrainConfig(optimizer="sgd")) == SGD(0.0, False)
    assert make_optimizer(TrainConfig(optimizer="sgd", momentum=0.8, nesterov=True)) == SGD(0.8, True)
    assert make_optimizer(TrainConfig(optimizer="sgd", momentum=0.8)) == SGD(0.8, False)
    adam = TrainConfig(optimizer="adam", beta1=0.8, beta2=0.99, adam_eps=1e-6)
    assert make_optimizer(adam) == Adam(0.8, 0.99, 1e-6, 0.0)
    adamw = TrainConfig(optimizer="adamw", beta1=0.8, beta2=0.99, adam_eps=1e-6, weight_decay=0.05)
    assert make_optimizer(adamw) == Adam(0.8, 0.99, 1e-6, 0.05)
    # the config's defaults are the optimizers' (and PyTorch's) defaults
    assert make_optimizer(TrainConfig(optimizer="adam")) == Adam()
    assert make_optimizer(TrainConfig(optimizer="sgd")) == SGD()


# -- augmentation ----------------------------------------------------------------------------
def images(rng, B=6, C=3, H=8, W=8):
    return rng.integers(0, 256, (B, C, H, W)).astype(np.uint8)


def test_flip_mirrors_exactly_the_chosen_images(rng):
    x = images(rng)
    which = np.array([True, False, True, False, False, True])
    out = flip(x.copy(), which)
    np.testing.assert_array_equal(out[which], x[which][..., ::-1])
    np.testing.assert_array_equal(out[~which], x[~which])


@pytest.mark.parametrize("padding,mode", [("zero", "constant"), ("reflect", "reflect"), ("edge", "edge")])
def test_translate_moves_each_image_by_its_own_shift(rng, padding, mode):
    x = images(rng)
    T = 3
    dy, dx = rng.integers(-T, T + 1, 6), rng.integers(-T, T + 1, 6)
    out = translate(x, dy, dx, T, padding)
    for b in range(6):
        p = np.pad(x[b], ((0, 0), (T, T), (T, T)), mode=mode)
        expected = p[:, T - dy[b] : T - dy[b] + 8, T - dx[b] : T - dx[b] + 8]
        np.testing.assert_array_equal(out[b], expected)
    # a positive dx moves the content right: what was at column 0 is now at column dx
    b = int(np.argmax(dx > 0)) if (dx > 0).any() else None
    if b is not None and dy[b] == 0:
        np.testing.assert_array_equal(out[b][:, :, dx[b]], x[b][:, :, 0])


def test_resized_crop_of_the_whole_image_is_the_image(rng):
    x = images(rng)
    np.testing.assert_array_equal(resized_crop(x, np.ones(6), rng), x)
    small = resized_crop(x, np.full(6, 0.25), np.random.default_rng(0))  # a 4x4 square, upsampled x2
    np.testing.assert_array_equal(small[..., ::2, ::2], small[..., 1::2, 1::2])


def test_colour_jitter_stays_in_range_and_zero_strength_is_identity(rng):
    x = images(rng)
    np.testing.assert_allclose(colour_jitter(x, 0.0, rng), x.astype(np.float32), atol=1e-3)
    out = colour_jitter(x, 0.8, rng)
    assert out.dtype == np.float32 and out.min() >= 0 and out.max() <= 255
    assert not np.allclose(out, x)


def test_augmenter_is_seeded_and_changes_rows_not_labels(rng):
    X = images(rng, B=50, H=32, W=32).reshape(50, -1)
    aug = Augmenter((3, 32, 32), flip=True, translate=4, padding="reflect")
    a = aug(X, np.random.default_rng(5))
    b = aug(X, np.random.default_rng(5))
    c = aug(X, np.random.default_rng(6))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and a.shape == X.shape and a.dtype == np.uint8
    assert not np.shares_memory(a, X)
    # every image keeps its pixel multiset when flipped only
    f = Augmenter((3, 32, 32), flip=True)(X, np.random.default_rng(1))
    np.testing.assert_array_equal(np.sort(f, axis=1), np.sort(X, axis=1))
    assert (f != X).any(axis=1).sum() in range(10, 41)  # about half of 50 flipped


def coordinate_images(B, C, H, W):
    """Images whose every pixel names where it came from: channel c, row i, column j hold
    ``1 + (c * H + i) * W + j`` (0 is left for padding)."""
    one = 1 + np.arange(C * H * W).reshape(C, H, W)
    return np.broadcast_to(one, (B, C, H, W)).copy()


def test_resized_crop_samples_a_square_of_the_asked_area_at_every_position():
    rng = np.random.default_rng(11)
    B, C, H, W = 500, 2, 10, 12  # not square: rows and columns must not be mixed up
    x = coordinate_images(B, C, H, W)
    area = rng.uniform(0.2, 1.0, B)
    out = resized_crop(x, area, rng)
    assert out.shape == x.shape
    src = out - 1
    np.testing.assert_array_equal(src[:, 1], src[:, 0] + H * W)  # the channels travel together
    i, j = src[:, 0] // W, src[:, 0] % W
    rows, cols = i[:, :, 0], j[:, 0, :]  # nearest neighbour: one source row per output row, ...
    assert (i == rows[:, :, None]).all() and (j == cols[:, None, :]).all()  # ... one column per column
    for b in range(B):
        h, w = len(set(rows[b])), len(set(cols[b]))
        # a square: the same fraction sqrt(area) of each side, up to rounding to whole pixels
        assert abs(h - np.sqrt(area[b]) * H) <= 0.5 and abs(w - np.sqrt(area[b]) * W) <= 0.5
        # consecutive source rows and columns, in order, each repeated H/h (W/w) times, +- 1
        np.testing.assert_array_equal(np.unique(rows[b]), np.arange(rows[b][0], rows[b][0] + h))
        np.testing.assert_array_equal(np.unique(cols[b]), np.arange(cols[b][0], cols[b][0] + w))
        assert (np.diff(rows[b]) >= 0).all() and (np.diff(cols[b]) >= 0).all()
        assert np.ptp(np.bincount(rows[b])[rows[b][0] :]) <= 1 and np.ptp(np.bincount(cols[b])[cols[b][0] :]) <= 1
    # the position: every place the square fits, and no other (a quarter of the area: 5 x 6 pixels)
    out = resized_crop(x, np.full(B, 0.25), rng)
    tops, lefts = (out[:, 0, 0, 0] - 1) // W, (out[:, 0, 0, 0] - 1) % W
    assert set(tops) == set(range(H - 5 + 1)) and set(lefts) == set(range(W - 6 + 1))


def test_resized_crop_of_a_tiny_area_keeps_one_pixel():
    x = coordinate_images(3, 1, 6, 6)
    out = resized_crop(x, np.full(3, 1e-6), np.random.default_rng(0))
    assert all(len(np.unique(out[b])) == 1 for b in range(3))  # one pixel, everywhere


def test_colour_jitter_is_brightness_then_contrast_then_saturation_in_range():
    """Each image's result is ``(c - g) f2 + g`` with ``c = (f0 x - m) f1 + m``, ``m`` the mean of
    ``f0 x`` over the image and ``g`` each pixel's channel mean of ``c``: the factors, recovered from
    the result, lie in [1 - s, 1 + s], differ between images and between the three, and fill the range."""
    rng = np.random.default_rng(12)
    B, s = 400, 0.3
    x = rng.integers(100, 156, (B, 3, 5, 6)).astype(np.uint8)  # far enough from 0 and 255 not to clip
    out = colour_jitter(x, s, rng)
    assert out.dtype == np.float32 and out.shape == x.shape
    out = out.astype(np.float64)
    xf = x.astype(np.float64)
    f0 = out.mean(axis=(1, 2, 3)) / xf.mean(axis=(1, 2, 3))  # contrast and saturation keep the mean
    grey_x, grey_out = xf.mean(axis=1), out.mean(axis=1)  # saturation keeps each pixel's grey
    m = f0[:, None, None] * xf.mean(axis=(1, 2, 3))[:, None, None]
    f1 = ((grey_out - m) * (f0[:, None, None] * grey_x - m)).sum(axis=(1, 2)) / (
        (f0[:, None, None] * grey_x - m) ** 2
    ).sum(axis=(1, 2))
    c = (f0[:, None, None, None] * xf - m[:, None]) * f1[:, None, None, None] + m[:, None]
    g = c.mean(axis=1, keepdims=True)
    f2 = ((out - g) * (c - g)).sum(axis=(1, 2, 3)) / ((c - g) ** 2).sum(axis=(1, 2, 3))
    model = (c - g) * f2[:, None, None, None] + g
    np.testing.assert_allclose(out, model, atol=2e-3)  # float32 arithmetic
    for f in (f0, f1, f2):
        assert f.min() >= 1 - s - 1e-5 and f.max() <= 1 + s + 1e-5
        assert f.min() < 1 - 0.9 * s and f.max() > 1 + 0.9 * s  # uniform over the whole range
        assert abs(np.mean(f) - 1) < 0.05
    assert abs(np.corrcoef(f0, f1)[0, 1]) < 0.2 and abs(np.corrcoef(f1, f2)[0, 1]) < 0.2  # independent draws


def test_colour_jitter_clips_to_the_pixel_range_at_both_ends():
    rng = np.random.default_rng(13)
    out = colour_jitter(rng.integers(0, 256, (50, 3, 6, 6)).astype(np.uint8), 0.8, rng)
    assert out.min() == 0 and out.max() == 255 and out.dtype == np.float32


@pytest.mark.parametrize("padding", ["zero", "reflect", "edge"])
def test_augmenter_translates_by_every_shift_in_range_independently_on_both_axes(padding):
    rng = np.random.default_rng(14)
    B, T, shape = 1500, 2, (1, 7, 9)
    X = coordinate_images(B, *shape).reshape(B, -1)
    out = Augmenter(shape, translate=T, padding=padding)(X, rng).reshape(B, *shape)
    centre = out[:, 0, 3, 4] - 1  # the centre pixel always comes from inside the image (T = 2)
    dy, dx = 3 - centre // 9, 4 - centre % 9
    np.testing.assert_array_equal(out, translate(X.reshape(B, *shape), dy, dx, T, padding))
    counts = np.zeros((2 * T + 1, 2 * T + 1), int)
    np.add.at(counts, (dy + T, dx + T), 1)
    expected = B / counts.size
    assert counts.min() > 0.5 * expected and counts.max() < 1.5 * expected  # uniform over {-T..T}^2


def test_translate_pads_with_zeros_by_default_and_keeps_the_dtype(rng):
    x = images(rng)
    out = translate(x, np.full(6, 1), np.full(6, -2), 2)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, translate(x, np.full(6, 1), np.full(6, -2), 2, "zero"))
    assert (out[:, :, 0, :] == 0).all() and (out[:, :, :, -2:] == 0).all()  # the uncovered border: black


def test_augmenter_crops_with_areas_from_crop_scale_to_one():
    rng = np.random.default_rng(15)
    B, scale, shape = 400, 0.3, (1, 20, 20)
    X = coordinate_images(B, *shape).reshape(B, -1)
    out = Augmenter(shape, crop_scale=scale)(X, rng).reshape(B, *shape)
    side = np.array([len(np.unique(o[0, :, 0])) for o in out])  # source rows used: the square's side
    assert side.min() >= round(np.sqrt(scale) * 20) and side.max() == 20
    assert side.min() <= round(np.sqrt(scale) * 20) + 1 and len(set(side)) >= 8  # the whole range


def test_augmenter_jitter_gives_float32_rows_and_none_when_everything_is_off():
    rng = np.random.default_rng(16)
    X = rng.integers(0, 256, (4, 3 * 4 * 4)).astype(np.uint8)
    out = Augmenter((3, 4, 4), jitter=0.5)(X, rng)
    assert out.dtype == np.float32 and out.shape == X.shape and out.flags.c_contiguous
    assert not np.allclose(out, X)

    class Off:
        flip, translate, padding, crop_scale, jitter = False, 0, "zero", 1.0, 0.0

    assert Augmenter.from_config(Off, (3, 4, 4)) is None
    for on in ({"flip": True}, {"translate": 1}, {"crop_scale": 0.5}, {"jitter": 0.1}):
        cfg = type("On", (Off,), on)
        aug = Augmenter.from_config(cfg, [3, 4, 4])
        assert aug == Augmenter(
            (3, 4, 4), **{k: getattr(cfg, k) for k in ("flip", "translate", "padding", "crop_scale", "jitter")}
        )
        with pytest.raises(ValueError, match=r"^augmentation needs image data \(the data set has no image shape\)$"):
            Augmenter.from_config(cfg, None)


# -- dropout and label smoothing -------------------------------------------------------------
def numerical_grad(f, p, h=1e-6):
    g = np.zeros_like(p)
    for i in range(p.size):
        old = p.flat[i]
        p.flat[i] = old + h
        fp = f()
        p.flat[i] = old - h
        fm = f()
        p.flat[i] = old
        g.flat[i] = (fp - fm) / (2 * h)
    return g


def test_dropout_layer_backward_with_a_random_upstream_gradient(rng):
    H = rng.standard_normal((5, 7))
    mask = layers.dropout_mask(H.shape, 0.4, rng)
    dout = rng.standard_normal(H.shape)
    num = numerical_grad(lambda: float((layers.dropout_forward(H, mask) * dout).sum()), H)
    np.testing.assert_allclose(layers.dropout_backward(dout, mask), num, rtol=1e-7, atol=1e-9)


def test_dropout_mask_keeps_the_expectation(rng):
    m = layers.dropout_mask((200, 500), 0.3, rng)
    np.testing.assert_allclose(np.unique(m), [0.0, 1 / 0.7])
    assert (m == 0).mean() == pytest.approx(0.3, abs=0.01) and m.mean() == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("batch_norm", [False, True])
def test_network_gradients_under_a_fixed_dropout_mask(rng, batch_norm):
    """Analytic gradients against centred differences, wherever no step crosses a ReLU kink.

    With zero biases, a sample whose hidden units are all dropped or dead puts the next layer's
    ReLU inputs exactly at 0 (no batch norm): a kink, where the analytic gradient is one-sided and
    the centred difference the average (for about half of all seeds). So the biases are moved off 0,
    and an entry whose step changes a ReLU's sign is left out, as ``klayer gradcheck`` does."""
    from klayer.gradcheck import centred_differences
    from klayer.network import forward

    cfg = NetworkConfig(6, (7, 5), 4, batch_norm=batch_norm, dropout=0.3, input_dropout=0.2)
    net = Network.init(cfg, rng)
    for l in (1, 2, 3):
        net.params[f"b{l}"] += 0.1 * rng.standard_normal(net.params[f"b{l}"].shape)
    X, y = rng.standard_normal((9, 6)), rng.integers(0, 4, 9)
    masks = dropout_masks(cfg, 9, rng)
    assert set(masks) == {"H0", "H1", "H2"}
    _, _, grads, _ = loss_and_grads(net.params, X, y, cfg, 0.1, masks=masks, smoothing=0.1)

    def f():  # the cost and the sign pattern of every ReLU input (the ReLU outputs' cache)
        cost = float(loss_and_grads(net.params, X, y, cfg, 0.1, masks=masks, smoothing=0.1)[0])
        caches = forward(net.params, X, cfg, masks=masks)[1]
        return cost, tuple(H > 0 for _, _, H, _ in caches[:-1])

    for name, p in net.params.items():
        num, kinked = centred_differences(f, p, range(p.size), 1e-6)
        assert (~kinked).sum() >= p.size - 2, name
        np.testing.assert_allclose(grads[name].ravel()[~kinked], num[~kinked], rtol=1e-5, atol=1e-8, err_msg=name)
    # the masks matter: without them the cost differs
    c_masked = loss_and_grads(net.params, X, y, cfg, 0.1, masks=masks)[0]
    assert c_masked != pytest.approx(loss_and_grads(net.params, X, y, cfg, 0.1)[0])


def test_dropout_masks_differ_per_network_and_match_alone():
    cfg = NetworkConfig(6, (7,), 3, dropout=0.5)
    alone = dropout_masks(cfg, 4, np.random.default_rng(1))
    stacked = dropout_masks(cfg, 4, np.random.default_rng(1), K=1)
    np.testing.assert_array_equal(stacked["H1"][0], alone["H1"])
    two = dropout_masks(cfg, 4, np.random.default_rng(1), K=2)
    assert two["H1"].shape == (2, 4, 7) and not np.array_equal(two["H1"][0], two["H1"][1])


def test_label_smoothing_loss_and_gradient(rng):
    S, y, s = rng.standard_normal((6, 5)), rng.integers(0, 5, 6), 0.2
    loss, dS = layers.softmax_cross_entropy(S, y, s)
    P = np.exp(S - S.max(1, keepdims=True))
    P /= P.sum(1, keepdims=True)
    T = np.full((6, 5), s / 5)
    T[np.arange(6), y] += 1 - s
    assert float(loss) == pytest.approx(-(T * np.log(P)).sum(1).mean(), rel=1e-12)
    np.testing.assert_allclose(dS, (P - T) / 6, rtol=1e-12)
    num = numerical_grad(lambda: float(layers.softmax_cross_entropy(S, y, s)[0]), S)
    np.testing.assert_allclose(dS, num, rtol=1e-6, atol=1e-9)
    assert float(layers.softmax_cross_entropy(S, y, 0.0)[0]) != pytest.approx(float(loss))


# -- ensembles --------------------------------------------------------------------------------
def test_ensemble_averages_member_probabilities(rng, tmp_path):
    from klayer import load_model, save_model
    from klayer.ensemble import evaluate_ensemble

    models = []
    for seed in range(3):
        net = Network.init(NetworkConfig(5, (6,), 3), np.random.default_rng(seed))
        save_model(tmp_path / f"{seed}.safetensors", net, np.full(5, 100.0), np.full(5, 50.0))
        models.append(load_model(tmp_path / f"{seed}.safetensors"))
    X, y = rng.uniform(0, 255, (40, 5)), rng.integers(0, 3, 40)
    r = evaluate_ensemble(models, X, y)
    P = np.mean([m.network.predict_proba((X - 100) / 50) for m in models], axis=0)
    np.testing.assert_allclose(r["probabilities"], P, rtol=1e-12)
    assert r["ensemble"]["accuracy"] == pytest.approx((P.argmax(1) == y).mean())
    assert r["ensemble"]["loss"] == pytest.approx(-np.log(P[np.arange(40), y]).mean())
    for m, member in zip(models, r["members"], strict=True):
        assert member["accuracy"] == pytest.approx((m.predict_proba(X).argmax(1) == y).mean())
    assert math.isfinite(r["ensemble"]["loss"])


# -- the techniques inside the training loop ---------------------------------------------------
def image_dataset(rng, n_train=240, n_val=60, n_test=60, C=3, shape=(3, 4, 4)):
    """Learnable tiny 'images': one random pattern per class plus noise, as uint8 pixels."""
    from klayer.data import Dataset

    d = int(np.prod(shape))
    centers = rng.uniform(40, 215, (C, d))

    def make(n):
        y = rng.integers(0, C, n)
        return np.clip(centers[y] + rng.normal(0, 30, (n, d)), 0, 255).astype(np.uint8), y

    (Xtr, ytr), (Xva, yva), (Xte, yte) = make(n_train), make(n_val), make(n_test)
    from klayer.data.prepare import feature_stats

    mean, std = feature_stats(Xtr)
    return Dataset(Xtr, ytr, Xva, yva, Xte, yte, mean, std, C, "images", ("a", "b", "c"), shape, "float64")


def technique_config(model=None, augment=None, **train):
    base = dict(lam=0.001, batch_size=20, n_s=24, n_cycles=2, eta_min=1e-4, eta_max=0.05, dtype="float64",
                checkpoint_every=0)  # fmt: skip
    base.update(train)
    d = {"name": "t", "model": {"hidden": [10, 8], "batch_norm": True, **(model or {})}, "train": base}
    if augment:
        d["augment"] = augment
    from klayer.config import from_dict

    return from_dict(d)


ALL_TECHNIQUES = dict(
    model={"dropout": 0.2, "input_dropout": 0.1},
    augment={"flip": True, "translate": 1, "padding": "reflect"},
    optimizer="adamw",
    weight_decay=0.01,
    eta_max=0.01,
    label_smoothing=0.1,
)


@pytest.mark.parametrize(
    "schedule,extra",
    [
        ("cyclic", {}),
        ("triangular2", {}),
        ("exp_range", {"exp_gamma": 0.99}),
        ("one_cycle", {"warmup": 0.3, "n_epochs": 3}),
        ("cosine", {"warmup": 0.1, "n_epochs": 3}),
    ],
)
def test_the_trainer_follows_each_schedule(rng, schedule, extra):
    from klayer.training import Trainer

    data = image_dataset(rng)
    cfg = technique_config(schedule=schedule, **extra)
    tr = Trainer([cfg], data)
    T = tr.total_steps
    assert T == (2 * 24 * 2 if schedule in sch.CYCLIC_SCHEDULES else 3 * (240 // 20))
    fn = {
        "cyclic": lambda t: sch.cyclic_eta(t, 1e-4, 0.05, 24),
        "triangular2": lambda t: sch.triangular2_eta(t, 1e-4, 0.05, 24),
        "exp_range": lambda t: sch.exp_range_eta(t, 1e-4, 0.05, 24, 0.99),
        "one_cycle": lambda t: sch.one_cycle_eta(t, 1e-4, 0.05, T, 0.3),
        "cosine": lambda t: sch.cosine_eta(t, 1e-4, 0.05, T, 0.1),
    }[schedule]
    for t in (0, 1, T // 3, T // 2, T - 1):
        assert tr.eta_at(t)[0] == pytest.approx(fn(t), rel=1e-12)


def test_lockstep_with_every_technique_equals_each_network_alone(rng):
    from klayer.runs import train, train_lockstep

    data = image_dataset(rng)
    configs = [technique_config(**ALL_TECHNIQUES, seed=s, shuffle_seed=7, lam=lam) for s, lam in ((0, 0.0), (1, 0.01))]
    together = train_lockstep(configs, data)
    for cfg, res in zip(configs, together, strict=True):
        alone = train(cfg, data).results
        assert res["final"]["val_loss"] == pytest.approx(alone["final"]["val_loss"], rel=1e-9)
        assert res["final"]["train_cost"] == pytest.approx(alone["final"]["train_cost"], rel=1e-9)


def test_augmentation_and_dropout_change_training_and_are_seeded(rng):
    from klayer.runs import train

    data = image_dataset(rng)
    plain = train(technique_config(), data).network.params["W1"]
    for kwargs in (
        {"augment": {"flip": True}},
        {"augment": {"translate": 1}},
        {"model": {"dropout": 0.3}},
        {"model": {"input_dropout": 0.3}},
        {"label_smoothing": 0.2},
        {"optimizer": "adam", "eta_max": 0.01},
        {"momentum": 0.9, "nesterov": True},
    ):
        a = train(technique_config(**kwargs), data).network.params["W1"]
        b = train(technique_config(**kwargs), data).network.params["W1"]
        np.testing.assert_array_equal(a, b)  # a seed fully determines the run
        assert not np.allclose(a, plain), kwargs  # and the technique is really used


def test_resume_is_bitwise_with_every_technique(tmp_path, rng, monkeypatch):
    from klayer.runs import train
    from klayer.training import Trainer

    data = image_dataset(rng)
    cfg = technique_config(**ALL_TECHNIQUES, checkpoint_every=9, snapshots=True)
    ref = train(cfg, data, out=tmp_path / "ref")
    real = Trainer.step

    def step(self):
        real(self)
        if self.t == 31:
            self._stop = True

    monkeypatch.setattr(Trainer, "step", step)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, data, out=tmp_path / "run")
    monkeypatch.setattr(Trainer, "step", real)
    again = train(cfg, data, out=tmp_path / "run", resume=True)
    for k in ref.network.params:
        np.testing.assert_array_equal(again.network.params[k], ref.network.params[k])
    assert again.history == ref.history


def test_snapshots_are_saved_each_cycle_and_ensembled(tmp_path, rng):
    from klayer import load_model
    from klayer.ensemble import evaluate_ensemble
    from klayer.runs import train

    data = image_dataset(rng)
    r = train(technique_config(n_cycles=3, snapshots=True), data, out=tmp_path / "run")
    snaps = sorted((tmp_path / "run" / "snapshots").glob("*.safetensors"))
    assert [p.name for p in snaps] == ["cycle1.safetensors", "cycle2.safetensors", "cycle3.safetensors"]
    models = [load_model(p) for p in snaps]
    assert [m.meta["step"] for m in models] == [48, 96, 144]
    for k in r.network.params:  # the last snapshot is the final model
        np.testing.assert_array_equal(models[-1].network.params[k], r.network.params[k])
    ens = evaluate_ensemble(models, data.X_test, data.y_test)
    se = r.results["snapshot_ensemble"]
    assert se["test_accuracy"] == pytest.approx(ens["ensemble"]["accuracy"])
    assert se["member_test_accuracy"] == pytest.approx([m["accuracy"] for m in ens["members"]])
    assert se["member_test_accuracy"][-1] == pytest.approx(r.results["test_accuracy"])


def test_lr_range_test_ramps_eta_and_suggests_bounds(rng):
    from klayer.training.lr_range import lr_range_test

    data = image_dataset(rng)
    res = lr_range_test(technique_config(), data, steps=60, eta_start=1e-4, eta_end=10.0, eval_every=3, n_val=60,
                        progress=False)  # fmt: skip
    etas = [r["eta"] for r in res["rows"]]
    assert etas[0] == pytest.approx(1e-4) and all(b > a for a, b in zip(etas, etas[1:], strict=False))
    if res["diverged_at_step"] is None:
        assert etas[-1] == pytest.approx(10.0)
    s = res["suggestion"]
    accs = [r["val_accuracy"] for r in res["rows"] if "val_accuracy" in r]
    assert s["peak_val_accuracy"] == max(accs)
    assert 1e-4 <= s["eta_min"] <= s["eta_max"] <= 10.0
    peak_row = next(r for r in res["rows"] if r.get("val_accuracy") == max(accs))
    assert s["eta_max"] == peak_row["eta"]


def test_cli_lr_range_writes_plot_and_summary(tmp_path, rng, capsys):
    import json

    from klayer.cli import main

    from .conftest import write_idx_data

    data = write_idx_data(tmp_path / "data", rng)
    exp = tmp_path / "e.toml"
    exp.write_text('name = "e"\n[model]\nhidden = [16]\nbatch_norm = true\n[data]\ndataset = "idx"\nn_val = 100\n'
                   '[train]\nbatch_size = 20\ndtype = "float64"\n')  # fmt: skip
    out = tmp_path / "lr"
    args = ["lr-range", str(exp), "--data", str(data), "--steps", "50", "--eval-every", "5", "--out", str(out)]
    assert main([*args, "--quiet"]) == 0
    said = capsys.readouterr().out
    res = json.loads((out / "lr_range.json").read_text())
    assert f"suggested eta_min {res['suggestion']['eta_min']:.3g}" in said
    assert (out / "lr_range.png").stat().st_size > 1000
    assert len(res["rows"]) <= 50 and res["rows"][0]["eta"] == pytest.approx(1e-5)
    with pytest.raises(SystemExit) as e:
        main([*args, "--steps", "2"])
    assert e.value.code == 2
    assert main([*args, "--eta-start", "1", "--eta-end", "0.1"]) == 2
    capsys.readouterr()
    # a loss that blows up at once: the message says so, not "increase --steps"
    assert main([*args, "--quiet", "--eta-start", "100", "--eta-end", "1000", "--out", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err.strip()
    assert "diverged at update" in err and "lower --eta-start" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x" / "lr_range.json").exists()
    with pytest.raises(SystemExit) as e:  # beyond any sensible learning rate
        main([*args, "--eta-end", "1e308"])
    assert e.value.code == 2


# -- ZCA whitening -----------------------------------------------------------------------------
def correlated_rows(rng, n=3000, d=12):
    A = rng.standard_normal((d, d))
    return rng.standard_normal((n, d)) @ A + 5.0


def test_zca_whitens_to_unit_mean_variance_and_decorrelates(rng):
    from klayer.data.prepare import feature_stats, standardize
    from klayer.data.whiten import zca_matrix

    X = correlated_rows(rng)
    mean, std = feature_stats(X)
    Xs = standardize(X, mean, std, "float64")
    Z = zca_matrix(Xs, 1e-8)
    np.testing.assert_allclose(Z, Z.T, atol=1e-12)
    W = Xs @ Z
    C = W.T @ W / len(W)
    assert np.trace(C) / C.shape[0] == pytest.approx(1.0, rel=1e-9)
    # whitened: identity covariance, but for what eps (relative to the mean eigenvalue) leaves of each
    # direction's variance, lam / (lam + eps), rescaled to mean 1: 1e-4 off in an ill-conditioned draw
    lam = np.linalg.eigvalsh(Xs.T @ Xs / len(Xs))
    kept = lam / (lam + 1e-8 * lam.mean())
    np.testing.assert_allclose(C, np.eye(12), atol=np.abs(kept / kept.mean() - 1).max() + 1e-9)
    # ZCA, not any whitening: the symmetric one, closest to the input (each feature stays in place)
    assert np.mean(np.diag(Xs.T @ W / len(W))) > 0.5


def test_zca_eps_is_relative_to_the_mean_eigenvalue(rng):
    from klayer.data.whiten import zca_matrix

    X = correlated_rows(rng)
    X = X - X.mean(0)
    Z1, Z2 = zca_matrix(X, 0.1), zca_matrix(7.0 * X, 0.1)
    np.testing.assert_allclose(X @ Z1, (7.0 * X) @ Z2, rtol=1e-9, atol=1e-9)
    C = (X @ Z1).T @ (X @ Z1) / len(X)
    assert not np.allclose(C, np.eye(12), atol=1e-3)  # eps regularizes: not a full whitening


def test_folding_the_whitening_into_the_first_layer_is_exact(rng):
    from klayer.data.whiten import fold_into, zca_matrix

    X = correlated_rows(rng, n=50, d=12)
    Z = zca_matrix(X - X.mean(0), 0.1)
    net = Network.init(NetworkConfig(12, (7,), 3, batch_norm=True), rng)
    folded = Network(net.config, fold_into(net.params, Z), net.bn_state)
    np.testing.assert_allclose(folded.forward(X), net.forward(X @ Z), rtol=1e-10, atol=1e-12)
    assert not np.allclose(folded.params["W1"], net.params["W1"])


def test_zca_of_float64_rows_is_float64_exact_and_of_float32_rows_close(rng):
    from klayer.data.whiten import zca_matrix

    X = correlated_rows(rng, n=500, d=12)
    X = (X - X.mean(0)) / X.std(0)
    C = X.T @ X / len(X)
    S, U = np.linalg.eigh(C)  # the definition, written out: U diag(1 / sqrt(S + eps mean(S))) U^T, scaled
    Z = (U / np.sqrt(S + 0.1 * S.mean())) @ U.T
    Z /= np.sqrt(np.trace(Z @ C @ Z) / 12)
    for chunk in (4096, 7, 500):  # in chunks of rows, or all at once: the same covariance
        np.testing.assert_allclose(zca_matrix(X, 0.1, chunk=chunk), Z, rtol=1e-12, atol=1e-12)
    Z32 = zca_matrix(X.astype(np.float32), 0.1)
    assert Z32.dtype == np.float64 and np.abs(Z32 - Z).max() < 1e-4 * np.abs(Z).max()


def test_zca_of_rank_deficient_rows_with_a_tiny_eps_is_finite(rng):
    from klayer.data.whiten import zca_matrix

    X = rng.standard_normal((40, 6))
    X = np.hstack([X, X, X[:, :3]])  # 15 features, rank 6: eigenvalues of 0 that round to +-1e-16
    for seed in range(5):  # row orders: some give a negative eigenvalue, which must not reach the root
        Z = zca_matrix(X[np.random.default_rng(seed).permutation(40)], 1e-300)
        assert np.isfinite(Z).all()


def test_folding_keeps_the_dtype_and_leaves_the_parameters_alone(rng):
    from klayer.data.whiten import fold_into

    Z = rng.standard_normal((12, 12))
    net = Network.init(NetworkConfig(12, (7,), 3, batch_norm=True, dtype="float32"), rng)
    before = {k: v.copy() for k, v in net.params.items()}
    out = fold_into(net.params, Z)
    assert out["W1"].dtype == np.float32
    np.testing.assert_allclose(out["W1"], net.params["W1"].astype(np.float64) @ Z, rtol=1e-6)
    for k in net.params:
        np.testing.assert_array_equal(net.params[k], before[k])
        if k != "W1":
            np.testing.assert_array_equal(out[k], net.params[k])
            assert not np.shares_memory(out[k], net.params[k])


def test_zca_of_constant_rows_names_the_source():
    from klayer.data.whiten import zca_matrix
    from klayer.errors import DataError

    with pytest.raises(DataError) as e:
        zca_matrix(np.zeros((10, 4)), 0.1, source="my-set")
    assert str(e.value).startswith("my-set: ZCA whitening cannot be computed: the training images have (near) zero")
    assert str(e.value).endswith("(mean eigenvalue of the covariance 0); use whiten = 'none'")
    with pytest.raises(DataError, match=r"^training data: ZCA whitening"):  # the source when none is named
        zca_matrix(np.zeros((6, 3)), 0.1)
    with pytest.raises(DataError, match="near"):  # round-off of constant features, variance 1e-16: still nothing
        zca_matrix(np.random.default_rng(0).standard_normal((10, 4)) * 1e-8, 0.1)
    zca_matrix(np.eye(10, 4)[:, :1] * np.sqrt(10) * 1e-5, 0.1)  # small but real variance (1e-10): whitened


def test_a_whitened_run_saves_a_model_for_raw_rows(tmp_path, rng):
    """Train on ZCA-whitened images; the saved model (whitening folded in) on raw test rows gives
    the run's own test accuracy, and so do its snapshots."""
    from klayer import load_model
    from klayer.data import RawData
    from klayer.data.prepare import prepare
    from klayer.runs import train

    shape = (3, 4, 4)
    centers = rng.uniform(40, 215, (3, 48))

    def make(n):
        y = rng.integers(0, 3, n)
        return np.clip(centers[y] + rng.normal(0, 40, (n, 48)), 0, 255).astype(np.uint8), y

    raw = RawData({"train": make(400), "test": make(100)}, "mem", "idx", 3, ("a", "b", "c"), shape)
    data = prepare(raw, "all", 80, "float64", whiten="zca", zca_eps=0.1)
    assert data.X_train.dtype == np.float64 and np.allclose(data.mean, 0) and data.input_map is not None
    m, s, Z, raw_test = data.input_map
    np.testing.assert_allclose(data.X_test, ((raw_test - m) / s) @ Z, rtol=1e-10, atol=1e-10)
    cfg = technique_config(augment={"flip": True, "translate": 1}, snapshots=True)
    r = train(cfg, data, out=tmp_path / "run")
    saved = load_model(tmp_path / "run" / "model.safetensors")
    acc = (saved.predict_proba(raw_test).argmax(1) == data.y_test).mean()
    assert acc == pytest.approx(r.results["test_accuracy"])
    P_run = r.network.predict_proba(data.X_test)
    np.testing.assert_allclose(saved.predict_proba(raw_test), P_run, rtol=1e-8, atol=1e-10)
    assert r.results["snapshot_ensemble"]["member_test_accuracy"][-1] == pytest.approx(acc)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("shape", [(3, 4), (301, 400)])
def test_sgd_momentum_with_scratch_arrays_is_bitwise_the_plain_expression(rng, dtype, nesterov, shape):
    """sgd_update's fast path (products into a reused scratch array, large matrices in blocks
    of rows) gives bit for bit the numbers of the plain expressions
    ``g += c * p; v = mu v - g; p += mu * v - g``."""
    from klayer.training.optim import _blocks, _per_model

    mu, eta, lam = 0.9, np.array([0.1, 0.03], dtype), np.array([0.02, 0.5], dtype)
    p = {"W1": rng.standard_normal((2, *shape)).astype(dtype), "b1": rng.standard_normal((2, shape[0])).astype(dtype)}
    assert (len(_blocks(p["W1"])) > 1) == (shape[0] > 3)
    state = SGD(mu, nesterov).init(p)
    ref_p = {k: v.copy() for k, v in p.items()}
    ref_v = {k: np.zeros_like(v) for k, v in p.items()}
    for _ in range(4):
        g = {k: rng.standard_normal(a.shape).astype(dtype) for k, a in p.items()}
        two_eta_lam = 2 * np.asarray(eta) * np.asarray(lam)
        for k in ref_p:
            gk = g[k].copy()
            if k.startswith("W"):
                gk += _per_model(two_eta_lam, ref_p[k]) * ref_p[k]
            ref_v[k] *= mu
            ref_v[k] -= gk
            if nesterov:
                ref_p[k] += mu * ref_v[k]
                ref_p[k] -= gk
            else:
                ref_p[k] += ref_v[k]
        SGD(mu, nesterov).update(p, {k: a.copy() for k, a in g.items()}, state, eta, lam, 0)
        for k in p:
            np.testing.assert_array_equal(p[k], ref_p[k])
            np.testing.assert_array_equal(state[f"v.{k}"], ref_v[k])


def test_a_translate_as_large_as_the_images_is_refused_in_one_line(tmp_path, rng, capsys):
    """augment.translate >= the images' height or width moved whole images out of the picture and
    trained on blanks without a word (translate = 12 on 8x8 images: test accuracy at chance);
    it is refused naming the field and the image size, before anything is written."""
    from klayer.cli import main
    from klayer.config import from_dict, load_experiment
    from klayer.errors import ConfigError
    from klayer.training import Trainer

    from .conftest import tiny_dataset, write_idx_data
    from .test_train import EXP

    data = write_idx_data(tmp_path / "data", rng, n_train=300)  # 1x8x8 images
    for T, code in ((8, 1), (12, 1), (7, 0)):
        exp = tmp_path / f"t{T}.toml"
        exp.write_text(EXP.format(n_s=5, ckpt=0) + f"[augment]\ntranslate = {T}\n")
        out = tmp_path / f"run{T}"
        assert main(["train", str(exp), "--data", str(data), "--out", str(out), "--quiet"]) == code
        err = capsys.readouterr().err
        if code:
            assert err == (
                f"klayer: error: augment: `translate` = {T} must be below the images' height and width (the data's "
                "images are 1x8x8, channels x height x width): a shift of 8 pixels or more moves the whole image out\n"
            )
            assert not out.exists()
    # an image folder's size is in the config: refused when the file is read
    exp = tmp_path / "images.toml"
    exp.write_text('[data]\ndataset = "images"\nimage_shape = [3, 16, 12]\n[augment]\ntranslate = 12\n')
    with pytest.raises(
        ConfigError, match=r"images.toml: augment.translate = 12 must be below .* data.image_shape = \[3, 16, 12\]"
    ):
        load_experiment(exp)
    exp.write_text('[data]\ndataset = "images"\nimage_shape = [3, 16, 12]\n[augment]\ntranslate = 11\n')
    load_experiment(exp)
    # rows that are no images at all: refused too
    config = from_dict({"augment": {"translate": 2}, "train": {"batch_size": 10}})
    with pytest.raises(
        ConfigError, match=r"^augment: augmentation needs image data \(the data set has no image shape\)$"
    ):
        Trainer([config], tiny_dataset(rng))
