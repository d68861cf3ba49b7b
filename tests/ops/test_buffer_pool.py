"""The buffer pool (fastgrad/ops/buffer_pool.py): an array is handed out again only once
nobody refers to it; a training step in steady state makes no new large array; results
are bit-identical to the plain path's (numpy.empty everywhere)."""

import numpy as np
import pytest

import fastgrad
import fastgrad.nn.functional as F
from fastgrad import nn
from fastgrad.ops import buffer_pool

SHAPE = (64, 1024)  # 256 KiB of float32: pooled


def test_a_referenced_array_is_never_handed_out_again():
    a = buffer_pool.empty(SHAPE, np.float32)
    view = a[3:]
    del a
    b = buffer_pool.empty(SHAPE, np.float32)
    assert b.base is None and not np.shares_memory(b, view)
    held = memoryview(b)  # a buffer export holds the array too
    c = buffer_pool.empty(SHAPE, np.float32)
    assert not np.shares_memory(c, b)
    del held


def test_a_dropped_array_is_reused_and_small_ones_are_not_pooled():
    a = buffer_pool.empty(SHAPE, np.float32)
    a[...] = 1
    first = a.__array_interface__["data"][0]
    del a
    b = buffer_pool.empty(SHAPE, np.float32)
    assert b.__array_interface__["data"][0] == first  # the same array came back
    before = buffer_pool.pooled_bytes()
    buffer_pool.empty((8,), np.float32)
    assert buffer_pool.pooled_bytes() == before


def test_a_tensor_keeps_its_array():
    x = fastgrad.randn(64, 1024)
    y = F.relu(x)
    kept = y.data.copy()
    for _ in range(3):
        F.relu(fastgrad.randn(64, 1024))  # made and dropped: reuses only free arrays
    np.testing.assert_array_equal(y.data, kept)


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(8 * 16 * 16, 10)

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        h = F.relu(self.conv2(h) + h)
        return self.fc(self.drop(fastgrad.flatten(F.max_pool2d(h, 2), 1)))


def train(steps, pooled, seed=0, made=None):
    fastgrad.manual_seed(seed)
    model = Block()
    opt = fastgrad.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    rng = np.random.default_rng(seed)
    xs = [fastgrad.from_numpy(rng.standard_normal((16, 3, 32, 32)).astype(np.float32)) for _ in range(3)]
    ys = [fastgrad.from_numpy(rng.integers(0, 10, 16)) for _ in range(3)]
    sizes = []
    with buffer_pool.disabled() if not pooled else _nothing():
        for i in range(steps):
            opt.zero_grad()
            loss = F.cross_entropy(model(xs[i % 3]), ys[i % 3])
            loss.backward()
            opt.step()
            sizes.append(buffer_pool.pooled_bytes())
            if made is not None:
                made.append(buffer_pool.arrays_made())
    return model, loss.item(), sizes


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_pooled_training_is_bit_identical_to_the_plain_path():
    a, loss_a, _ = train(6, pooled=True)
    b, loss_b, _ = train(6, pooled=False)
    assert loss_a == loss_b
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        np.testing.assert_array_equal(pa.data, pb.data, err_msg=name)
    for (name, ba), bb in zip(a.named_buffers(), b.buffers()):
        np.testing.assert_array_equal(ba.data, bb.data, err_msg=name)


def test_a_step_in_steady_state_makes_no_new_large_array():
    buffer_pool.clear()
    made = []
    _, _, sizes = train(8, pooled=True, made=made)
    assert sizes[2] > 0 and made[2] > 0
    assert sizes[-1] == sizes[2]  # from the third step on, every large array was reused
    assert made[-1] == made[2]


def test_one_array_serves_every_shape_of_its_size():
    a = buffer_pool.empty((64, 16, 1024), np.float32)
    del a
    b = buffer_pool.empty((64, 16, 32, 32), np.float32)
    assert b.shape == (64, 16, 32, 32) and b.base is None
    made = buffer_pool.arrays_made()
    del b
    c = buffer_pool.empty((64, 16 * 1024), np.float32)
    assert c.shape == (64, 16 * 1024) and buffer_pool.arrays_made() == made


@pytest.mark.parametrize("dtypes", [(np.float32, np.float32), (np.float64, np.float64), (np.float32, np.float64)])
def test_add_is_a_copy_with_the_second_added_into_it(dtypes):
    rng = np.random.default_rng(4)
    a = rng.standard_normal((64, 300)).astype(dtypes[0])  # 75 KiB in float32: pooled
    b = rng.standard_normal((64, 300)).astype(dtypes[1])
    want = buffer_pool.copy(a)
    fastgrad.kernels.accumulate(want, np.ascontiguousarray(b, dtype=a.dtype))
    got = buffer_pool.add(a, b)
    assert got.dtype == a.dtype and got.flags.c_contiguous
    np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match=r"accumulate: src has shape \(300,\), but dst has \(64, 300\)"):
        buffer_pool.add(a, b[0])  # numpy would broadcast it
