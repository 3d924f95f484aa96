"""Tests of the CIFAR-10-C corruptions: contract (shape, dtype, range, seeding), severity ordering, and
independent re-computations of the deterministic ones."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage
from sklearn.datasets import load_digits, load_sample_images

from geomlat.robustness import corruptions as C
from geomlat.robustness.corruptions import CORRUPTION_NAMES, NON_MONOTONE, RANDOM_CORRUPTIONS, SEVERITIES, corrupt


def structured(b: int, c: int, h: int, seed: int = 0) -> np.ndarray:
    """Random smooth images: per channel a sinusoidal gradient with random frequency and phase, in [0.1, 0.9]."""
    r = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, h), indexing="ij")
    out = np.empty((b, c, h, h))
    for i in range(b):
        fx, fy, ph = r.uniform(0.5, 3, 3)
        for k in range(c):
            out[i, k] = 0.5 + 0.4 * np.sin(2 * np.pi * (fx * xx + fy * yy) + ph + k)
    return out


def natural32(b: int = 24, seed: int = 0) -> np.ndarray:
    """32 x 32 crops of the two photographs bundled with scikit-learn, downsampled by 4."""
    r = np.random.default_rng(seed)
    crops = []
    for im in load_sample_images().images:
        small = np.asarray(Image.fromarray(im).resize((im.shape[1] // 4, im.shape[0] // 4), Image.BOX)) / 255.0
        for _ in range(b // 2):
            i, j = r.integers(0, small.shape[0] - 32), r.integers(0, small.shape[1] - 32)
            crops.append(small[i:i + 32, j:j + 32].transpose(2, 0, 1))
    return np.array(crops)


IMAGE_SETS = {
    "smooth8_gray": structured(24, 1, 8),
    "smooth32_rgb": structured(24, 3, 32, seed=1),
    "digits8": load_digits().images[:48, None] / 16.0,
    "natural32": natural32(),
}

# (corruption, image set) pairs measured non-monotone, explained in corruptions.NON_MONOTONE
EXPECTED_NON_MONOTONE = {
    ("glass_blur", "smooth32_rgb"), ("glass_blur", "natural32"),
    ("elastic_transform", "smooth8_gray"), ("elastic_transform", "smooth32_rgb"),
    ("elastic_transform", "digits8"), ("elastic_transform", "natural32"),
    ("frost", "smooth8_gray"), ("frost", "smooth32_rgb"), ("frost", "digits8"), ("frost", "natural32"),
    ("pixelate", "digits8"),
}


def mean_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(((a - b) ** 2).sum(axis=(1, 2, 3))).mean())


def test_registry_and_parameters():
    assert len(CORRUPTION_NAMES) == 15
    assert set(C.CIFAR10C_PARAMS) == set(CORRUPTION_NAMES)
    assert all(len(v) == 5 for v in C.CIFAR10C_PARAMS.values())
    # the values METHOD.md quotes from CIFAR-10-C
    assert C.CIFAR10C_PARAMS["gaussian_noise"] == (0.04, 0.06, 0.08, 0.09, 0.10)
    assert C.CIFAR10C_PARAMS["jpeg_compression"] == (80, 65, 58, 50, 40)
    assert C.CIFAR10C_PARAMS["contrast"] == (0.75, 0.5, 0.4, 0.3, 0.15)
    assert set(C.APPROXIMATIONS) <= set(CORRUPTION_NAMES) and "frost" in C.APPROXIMATIONS
    assert {name for name, _ in EXPECTED_NON_MONOTONE} == set(NON_MONOTONE)


@pytest.mark.parametrize("name", CORRUPTION_NAMES)
def test_contract(name):
    for x in (IMAGE_SETS["smooth8_gray"][:6], IMAGE_SETS["smooth32_rgb"][:4]):
        for severity in (1, 5):
            out = corrupt(x, name, severity, seed=3)
            assert out.shape == x.shape and out.dtype == x.dtype
            assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
            again = corrupt(x, name, severity, seed=3)
            np.testing.assert_array_equal(out, again)  # determinism given the seed
            if name in RANDOM_CORRUPTIONS:
                other = corrupt(x, name, severity, seed=4)
                assert np.abs(other - out).max() > 1e-6, "different seeds should give different corruptions"
            else:  # deterministic corruptions ignore the seed
                np.testing.assert_array_equal(out, corrupt(x, name, severity, seed=4))
    # torch in -> torch out, same dtype; float32 numpy too
    xt = torch.from_numpy(IMAGE_SETS["smooth8_gray"][:3]).float()
    out_t = corrupt(xt, name, 3, seed=0)
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.float32 and out_t.shape == xt.shape
    out_n = corrupt(xt.numpy(), name, 3, seed=0)
    np.testing.assert_allclose(out_t.numpy(), out_n, atol=0)
    # a non-square, 2-channel image works too
    odd = np.random.default_rng(0).random((2, 2, 12, 20))
    res = C.CORRUPTIONS[name](odd, 4, np.random.default_rng(0))
    assert res.shape == odd.shape and res.min() >= 0 and res.max() <= 1


@pytest.mark.parametrize("images", list(IMAGE_SETS))
@pytest.mark.parametrize("name", CORRUPTION_NAMES)
def test_severity_monotone_in_distance(name, images):
    x = IMAGE_SETS[images]
    d = np.array([mean_distance(corrupt(x, name, s, seed=1), x) for s in range(1, 6)])
    monotone = bool(np.all(np.diff(d) >= -1e-6))  # ties (e.g. identical 8 x 8 pixel sizes) allowed
    if (name, images) in EXPECTED_NON_MONOTONE:
        # pinned finding (corruptions.NON_MONOTONE): fails if it ever becomes monotone, so the doc stays true
        assert not monotone, f"{name} on {images} is now monotone: {d}; update NON_MONOTONE"
    else:
        assert monotone, f"{name} on {images}: distances {d} not non-decreasing"


def test_non_monotone_causes():
    x = IMAGE_SETS["natural32"]
    # elastic: affine part alone decreases with severity, elastic field alone increases
    affine, field = [], []
    for c in C.CIFAR10C_PARAMS["elastic_transform"]:
        affine.append(mean_distance(np.clip(C._elastic_transform(x, (0.0, 0.01, c[2]), np.random.default_rng(1), 1.0), 0, 1), x))
        field.append(mean_distance(np.clip(C._elastic_transform(x, (c[0], c[1], 0.0), np.random.default_rng(1), 1.0), 0, 1), x))
    assert np.all(np.diff(affine) < 0) and np.all(np.diff(field) > 0)
    # glass blur: with the same seed severities 1-3 differ only by sigma; sigma 0 (no smoothing) is farthest
    d = [mean_distance(np.clip(C._glass_blur(x, (sig, 1, 1), np.random.default_rng(1), 1.0), 0, 1), x) for sig in (0.0, 0.25, 0.4)]
    assert d[0] > d[1] > d[2]


def test_noise_levels_match_parameters():
    x = np.full((4, 3, 32, 32), 0.5)
    for s, sigma in enumerate(C.CIFAR10C_PARAMS["gaussian_noise"], start=1):
        out = corrupt(x, "gaussian_noise", s, seed=0)
        assert abs((out - 0.5).std() - sigma) < 0.05 * sigma
    for s, amount in enumerate(C.CIFAR10C_PARAMS["impulse_noise"], start=1):
        out = corrupt(x, "impulse_noise", s, seed=0)
        frac = np.mean((out == 0) | (out == 1))
        assert abs(frac - amount) < 4 * np.sqrt(amount / out.size) + 1e-3
    for s, lam in enumerate(C.CIFAR10C_PARAMS["shot_noise"], start=1):
        out = corrupt(x, "shot_noise", s, seed=0)
        np.testing.assert_allclose((out * lam).round(6) % 1, 0, atol=1e-5)  # multiples of 1 / lam
        assert abs(out.var() - 0.5 / lam) < 0.1 * 0.5 / lam  # Poisson variance lam * 0.5 / lam^2


def test_deterministic_corruptions_by_hand():
    x = IMAGE_SETS["smooth32_rgb"][:3]
    # contrast: per-image, per-channel mean preserved, deviations scaled by c
    out = corrupt(x, "contrast", 2, seed=0)
    m = x.mean(axis=(2, 3), keepdims=True)
    np.testing.assert_allclose(out, np.clip((x - m) * 0.5 + m, 0, 1), atol=1e-12)
    # brightness: HSV value + c via matplotlib's independent rgb<->hsv conversion
    from matplotlib.colors import hsv_to_rgb, rgb_to_hsv

    y = x.copy()
    y[0, :, :4, :4] = 0.0  # black pixels (v = 0)
    out = corrupt(y, "brightness", 3, seed=0)
    hsv = rgb_to_hsv(y.transpose(0, 2, 3, 1))
    hsv[..., 2] = np.clip(hsv[..., 2] + 0.15, 0, 1)
    np.testing.assert_allclose(out, hsv_to_rgb(hsv).transpose(0, 3, 1, 2), atol=1e-9)
    # JPEG: Pillow round trip of the 8-bit RGB image
    out = corrupt(x, "jpeg_compression", 4, seed=0)
    buf = io.BytesIO()
    Image.fromarray(np.rint(x[1] * 255).astype(np.uint8).transpose(1, 2, 0)).save(buf, "JPEG", quality=50)
    ref = np.asarray(Image.open(io.BytesIO(buf.getvalue())), dtype=np.float64).transpose(2, 0, 1) / 255
    np.testing.assert_allclose(out[1], ref, atol=1e-12)
    # pixelate: 32 -> int(32 * 0.65) = 20 -> 32 with BOX, per channel
    out = corrupt(x, "pixelate", 5, seed=0)
    ch = Image.fromarray(x[2, 1].astype(np.float32), mode="F").resize((20, 20), Image.BOX).resize((32, 32), Image.BOX)
    np.testing.assert_allclose(out[2, 1], np.asarray(ch), atol=1e-6)


def test_clipped_zoom_matches_scipy_zoom():
    r = np.random.default_rng(0)
    for h in (8, 17, 32):
        img = r.random((h, h, 2))
        for z in np.arange(1.0, 1.6, 0.01):
            ch = int(np.ceil(h / z))
            top = (h - ch) // 2
            ref = ndimage.zoom(img[top:top + ch, top:top + ch], (z, z, 1), order=1)
            t = (ref.shape[0] - h) // 2
            ref = ref[t:t + h, t:t + h]
            np.testing.assert_allclose(C._clipped_zoom(img.transpose(2, 0, 1), z).transpose(1, 2, 0), ref, atol=1e-10)


def test_defocus_kernel_and_scaling():
    # radius 1.5 disk at 32 x 32 covers the 3 x 3 block (x^2 + y^2 <= 2.25) before the alias blur
    k = C._disk(1.5, 1e-9)
    assert k.shape[0] >= 3 and abs(k.sum() - 1) < 1e-12
    mid = k.shape[0] // 2
    np.testing.assert_allclose(k[mid - 1:mid + 2, mid - 1:mid + 2], np.full((3, 3), 1 / 9), atol=1e-12)
    x = IMAGE_SETS["digits8"][:8]
    # documented consequence of the scaling rule: identity at 8 x 8, a real blur with 32-pixel parameters
    assert mean_distance(corrupt(x, "defocus_blur", 5, seed=0), x) < 1e-6
    assert mean_distance(corrupt(x, "defocus_blur", 5, seed=0, scale=1.0), x) > 0.3


def test_motion_blur_kernel():
    # angle 0: one-sided line to the right: out[x] = sum_i k_i img[min(x + i, W - 1)]
    img = np.zeros((1, 1, 9))
    img[0, 0, 4] = 1.0
    img = np.repeat(img, 3, axis=1)
    out = C._motion_blur(img, radius=2, sigma=1.0, angle=0.0)
    k = np.exp(-np.arange(5) ** 2 / 2.0)
    k /= k.sum()
    np.testing.assert_allclose(out[0, 1, :5], k[::-1], atol=1e-12)
    np.testing.assert_allclose(out[0, 1, 5:], 0, atol=1e-12)
    assert abs(out.sum() - img.sum()) < 1e-12  # mass preserved away from the border


def test_frost_texture_and_blend():
    tex = C.frost_texture(8, 8, 3, np.random.default_rng(0))
    assert tex.shape == (3, 8, 8) and tex.min() >= 0 and tex.max() <= 1
    assert np.all(tex[0] <= tex[2] + 1e-12)  # bluish tint
    x = IMAGE_SETS["smooth32_rgb"][:2]
    out = corrupt(x, "frost", 2, seed=5)
    # frost is c0 x + c1 texture with the texture drawn from the same stream
    r = np.random.default_rng(5)
    tex = np.stack([C.frost_texture(32, 32, 3, r, 1.0) for _ in range(2)])
    np.testing.assert_allclose(out, np.clip(x + 0.3 * tex, 0, 1), atol=1e-12)


def test_bad_inputs():
    x = IMAGE_SETS["smooth8_gray"][:2]
    with pytest.raises(KeyError, match="unknown corruption"):
        corrupt(x, "rain", 1)
    with pytest.raises(ValueError, match="severity"):
        corrupt(x, "fog", 6)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        corrupt(x * 2, "fog", 1)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        corrupt(x[0], "fog", 1)
    with pytest.raises(TypeError, match="floating"):
        corrupt((x * 255).astype(np.uint8), "fog", 1)
    with pytest.raises(ValueError, match="NaN"):
        corrupt(np.full_like(x, np.nan), "fog", 1)
    with pytest.raises(TypeError, match="rng"):
        C.CORRUPTIONS["fog"](x, 1, "seed")
    with pytest.raises(ValueError, match="scale"):
        corrupt(x, "fog", 1, scale=-1.0)


def test_to_uint8_stores_as_cifar10c():
    # CIFAR-10-C stores np.uint8(255 * clip(output)): truncation, even where the fraction is >= 0.5; the
    # corruptions whose reference output is already 8-bit (ImageMagick, Pillow) are rounded by those libraries
    levels = np.array([0.0, 3.6, 100.75, 200.99, 254.6, 255.0]) / 255.0
    x = np.concatenate([levels, [-0.2, 1.3]]).reshape(1, 1, 2, 4)
    want_trunc = np.array([0, 3, 100, 200, 254, 255, 0, 255])
    want_round = np.array([0, 4, 101, 201, 255, 255, 0, 255])
    for name in CORRUPTION_NAMES:
        want = want_round if C.STORAGE_ROUNDING[name] == "round" else want_trunc
        out = C.to_uint8(x, name)
        assert out.dtype == np.uint8 and out.shape == x.shape
        np.testing.assert_array_equal(out.ravel(), want)
        t = C.to_uint8(torch.from_numpy(x), name)
        assert t.dtype == torch.uint8 and np.array_equal(t.numpy(), out)
    assert {n for n, r in C.STORAGE_ROUNDING.items() if r == "round"} == {"motion_blur", "pixelate", "jpeg_compression"}
    # a JPEG output (already k / 255) is stored at its own level, not one below
    jpg = corrupt(IMAGE_SETS["smooth32_rgb"][:2], "jpeg_compression", 3, seed=0)
    np.testing.assert_allclose(C.to_uint8(jpg, "jpeg_compression") / 255.0, jpg, atol=1e-12)
    with pytest.raises(KeyError, match="unknown corruption"):
        C.to_uint8(x, "spatter")
    with pytest.raises(TypeError, match="floating-point"):
        C.to_uint8(x.astype(np.uint8), "contrast")


def test_snow_layer_requantized_after_motion_blur():
    # the reference decodes the motion-blurred snow layer from ImageMagick's 8-bit PNG (levels k / 255). On a
    # black image the output is (1 - blend) * 0.5 + layer + rot180(layer) wherever it is not clipped, so
    # 255 * (output - (1 - blend) * 0.5) must be an integer (a sum of two 8-bit levels)
    x = np.zeros((6, 1, 32, 32))
    for severity in SEVERITIES:
        blend = C.CIFAR10C_PARAMS["snow"][severity - 1][6]
        out = corrupt(x, "snow", severity, seed=severity)
        free = out < 1.0
        levels = 255.0 * (out[free] - (1 - blend) * 0.5)
        assert free.mean() > 0.5 and (levels > 0.5).mean() > 0.05  # snow is present
        np.testing.assert_allclose(levels, np.round(levels), atol=1e-6)
