"""vislang.nn.Linear: the oneDNN inference path computes F.linear, and training still gets gradients."""

import pytest
import torch
import torch.nn.functional as F

import vislang.nn.linear as linear_mod
from vislang.nn import Linear, fast_linear


@pytest.mark.parametrize("shape", [(1, 576), (8, 576), (2, 3, 576), (300, 576), (1, 1, 576)])
@pytest.mark.parametrize("bias", [True, False])
def test_inference_path_matches_f_linear(shape, bias):
    torch.manual_seed(0)
    w, b, x = torch.randn(960, 576), torch.randn(960) if bias else None, torch.randn(shape)
    ref = F.linear(x.double(), w.double(), None if b is None else b.double())
    with torch.inference_mode():
        got = fast_linear(x, w, b)
    # the textbook bound on fp32 rounding of a length-K dot product: K * 2^-24 * sum |x_k w_k|
    bound = 576 * 2.0**-24 * (x.abs().double() @ w.abs().double().T).max()
    assert got.shape == ref.shape and got.dtype == torch.float32
    assert float((got.double() - ref).abs().max()) <= bound


def test_non_contiguous_input_and_weight():
    torch.manual_seed(0)
    w, x = torch.randn(576, 64), torch.randn(6, 4, 64)[:, ::2]  # a strided view
    with torch.no_grad():
        assert torch.allclose(fast_linear(x, w), F.linear(x, w), atol=1e-5)
        assert torch.allclose(fast_linear(x, w.t().contiguous().t()), F.linear(x, w), atol=1e-5)


def test_onednn_path_is_taken_when_available(monkeypatch):
    """With the path on, inference goes through oneDNN's op; with it off, through F.linear."""
    if not linear_mod.ONEDNN:
        pytest.fail("this PyTorch build has no oneDNN linear: the fast decode path is off")
    calls = []
    real = torch.ops.mkldnn._linear_pointwise

    class Spy:
        def __call__(self, *args):
            calls.append(args[0].shape)
            return real(*args)

    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", Spy())
    layer = Linear(16, 8)
    with torch.inference_mode():
        layer(torch.randn(1, 16))
    assert calls == [torch.Size([1, 16])]
    monkeypatch.setattr(linear_mod, "ONEDNN", False)
    with torch.inference_mode():
        layer(torch.randn(1, 16))
    assert len(calls) == 1


def test_training_gets_gradients_like_nn_linear():
    torch.manual_seed(0)
    ours, ref = Linear(32, 16), torch.nn.Linear(32, 16)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(4, 32, requires_grad=True)
    ours(x).square().sum().backward()
    gx = x.grad.clone()
    x.grad = None
    ref(x).square().sum().backward()
    assert torch.allclose(gx, x.grad) and torch.allclose(ours.weight.grad, ref.weight.grad)
    assert list(ours.state_dict()) == ["weight", "bias"]
