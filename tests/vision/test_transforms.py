"""fastgrad.vision.transforms against torchvision's definitions (checked with torch's own
ops where torch is installed) on numpy images and Tensors."""

import numpy as np
import pytest

import fastgrad
from fastgrad.vision import transforms as T


def _img(h=5, w=7, c=None, seed=0):
    shape = (h, w) if c is None else (h, w, c)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_to_tensor_scales_uint8_and_moves_channels_first():
    hwc = _img(c=3)
    t = T.ToTensor()(hwc)
    assert isinstance(t, fastgrad.Tensor) and t.shape == (3, 5, 7) and t.dtype == np.float32
    np.testing.assert_allclose(t.data, hwc.transpose(2, 0, 1) / 255.0, rtol=1e-6)
    assert T.ToTensor()(_img()).shape == (1, 5, 7)
    f = np.full((2, 2, 1), 3.0, dtype=np.float64)
    assert T.ToTensor()(f).dtype == np.float64 and float(T.ToTensor()(f).data.max()) == 3.0  # not scaled
    with pytest.raises(TypeError):
        T.ToTensor()(t)


def test_normalize_per_channel_and_checks():
    t = T.ToTensor()(_img(c=3))
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)
    out = T.Normalize(mean, std)(t)
    np.testing.assert_allclose(
        out.data, (t.data - np.array(mean)[:, None, None]) / np.array(std)[:, None, None], rtol=1e-6, atol=1e-6
    )
    assert out is not t
    same = T.Normalize(mean, std, inplace=True)(t)
    assert same is t
    with pytest.raises(ValueError, match="zero"):
        T.Normalize((0,), (0,))(t)
    with pytest.raises(ValueError):
        T.Normalize((0.1, 0.2), (1, 1))(t)
    with pytest.raises(TypeError):
        T.Normalize((0.1,), (1,))(_img())


@pytest.mark.parametrize("padding", [2, (1, 3), (1, 0, 2, 3)])
@pytest.mark.parametrize("mode", ["constant", "edge", "reflect", "symmetric"])
def test_pad_matches_torch(padding, mode):
    torch = pytest.importorskip("torch")
    tensor = T.ToTensor()(_img(c=2))
    got = T.Pad(padding, fill=0, padding_mode=mode)(tensor)
    left, top, right, bottom = {int: lambda p: (p,) * 4, tuple: lambda p: p if len(p) == 4 else p * 2}[type(padding)](
        padding
    )
    x = torch.from_numpy(tensor.data.copy())[None]
    if mode == "symmetric":  # torch has no symmetric mode: numpy's definition is torchvision's
        want = np.pad(tensor.data, ((0, 0), (top, bottom), (left, right)), mode="symmetric")
    else:
        tmode = {"constant": "constant", "edge": "replicate", "reflect": "reflect"}[mode]
        want = torch.nn.functional.pad(x, (left, right, top, bottom), mode=tmode)[0].numpy()
    np.testing.assert_array_equal(got.data, want)
    arr = T.Pad(padding, padding_mode=mode)(_img(c=2))  # the array form pads H and W of (H, W, C)
    assert isinstance(arr, np.ndarray) and arr.shape == (5 + top + bottom, 7 + left + right, 2)


def test_random_crop_is_a_window_of_the_padded_image_and_covers_all_offsets():
    img = _img(6, 6)
    padded = np.pad(img, 2)
    seen = set()
    crop = T.RandomCrop(6, padding=2)
    for _ in range(400):
        out = crop(img)
        assert out.shape == (6, 6)
        hits = [(i, j) for i in range(5) for j in range(5) if np.array_equal(padded[i : i + 6, j : j + 6], out)]
        assert hits
        seen.update(hits)
    assert len(seen) == 25
    t = T.RandomCrop((3, 4))(T.ToTensor()(_img(c=3)))
    assert t.shape == (3, 3, 4)
    with pytest.raises(ValueError, match="larger than input"):
        T.RandomCrop(9)(img)
    assert T.RandomCrop(9, pad_if_needed=True)(img).shape == (9, 9)


def test_random_crop_follows_manual_seed():
    img = _img(10, 10)
    fastgrad.manual_seed(3)
    a = [T.RandomCrop(4)(img) for _ in range(5)]
    fastgrad.manual_seed(3)
    b = [T.RandomCrop(4)(img) for _ in range(5)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_random_horizontal_flip():
    img = _img(c=3)
    np.testing.assert_array_equal(T.RandomHorizontalFlip(p=1.0)(img), img[:, ::-1])
    assert T.RandomHorizontalFlip(p=0.0)(img) is img
    t = T.ToTensor()(img)
    np.testing.assert_array_equal(T.RandomHorizontalFlip(p=1.0)(t).data, t.data[:, :, ::-1])
    flips = sum(not np.array_equal(T.RandomHorizontalFlip()(img), img) for _ in range(400))
    assert 140 < flips < 260


def test_compose_and_lambda():
    pipeline = T.Compose([T.Lambda(lambda x: x[:4, :4]), T.ToTensor(), T.Lambda(lambda t: t * 2)])
    out = pipeline(_img())
    np.testing.assert_allclose(out.data, _img()[None, :4, :4] / 255.0 * 2, rtol=1e-6)
    assert "Lambda" in repr(pipeline)
    with pytest.raises(TypeError):
        T.Lambda(3)
