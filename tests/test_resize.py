"""semsynth.nn.resize: the same values and gradients as F.interpolate(mode="nearest")."""

import pytest
import torch
import torch.nn.functional as F

from semsynth.nn.resize import resize_nearest, upsample2x


@pytest.mark.parametrize("src,dst", [
    ((3, 4), (6, 8)),     # x2 (fast path: repeat)
    ((3, 5), (9, 5)),     # x3 rows only
    ((2, 2), (64, 64)),   # x32: the summed backward
    ((72, 96), (9, 12)),  # /8 (fast path: strided slice)
    ((8, 8), (8, 8)),     # unchanged
    ((5, 7), (8, 11)),    # non-integer: falls back to F.interpolate
    ((9, 12), (5, 6)),    # non-integer down
    ((4, 6), (8, 3)),     # up in one axis, down in the other
])
def test_values_and_gradients_equal_interpolate(src, dst):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, *src, generator=g, dtype=torch.float64)
    up = torch.randn(2, 3, *dst, generator=g, dtype=torch.float64)
    a = x.clone().requires_grad_(True)
    b = x.clone().requires_grad_(True)
    ya, yb = resize_nearest(a, dst), F.interpolate(b, size=dst, mode="nearest")
    assert ya.shape == (2, 3, *dst) and ya.is_contiguous()
    assert torch.equal(ya, yb)
    (ya * up).sum().backward()
    (yb * up).sum().backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=1e-12)


def test_upsample2x_by_hand_and_bad_input():
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    assert upsample2x(x)[0, 0].tolist() == [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]
    x.requires_grad_(True)
    (upsample2x(x) * torch.arange(16.0).view(1, 1, 4, 4)).sum().backward()
    # each input pixel's gradient: the sum of its 2x2 block of the upstream gradient
    assert x.grad[0, 0].tolist() == [[0 + 1 + 4 + 5, 2 + 3 + 6 + 7], [8 + 9 + 12 + 13, 10 + 11 + 14 + 15]]
    with pytest.raises(ValueError, match=r"\(N, C, H, W\).*\(3, 4\)"):
        resize_nearest(torch.zeros(3, 4), (6, 8))


@pytest.mark.parametrize("dst", [(12, 16), (3, 4), (5, 7)])
def test_channels_last_input_stays_channels_last_as_with_interpolate(dst):
    x = torch.randn(2, 5, 6, 8).contiguous(memory_format=torch.channels_last)
    y = resize_nearest(x, dst)
    ref = F.interpolate(x, size=dst, mode="nearest")
    assert torch.equal(y, ref)
    assert y.is_contiguous(memory_format=torch.channels_last) == ref.is_contiguous(memory_format=torch.channels_last)


def test_a_one_pixel_input_gives_a_writable_copy():
    x = torch.randn(1, 2, 1, 1)
    y = resize_nearest(x, (3, 4))
    assert 0 not in y.stride()
    y[0, 0, 0, 0] = 7.0  # writes one pixel only
    assert (y[0, 0] == 7.0).sum() == 1 and torch.equal(y[0, 1], x[0, 1].expand(3, 4))
