"""vislang.nn.Linear: the oneDNN inference path computes F.linear, and training still gets gradients."""

import pytest
import torch
import torch.nn.functional as F

import vislang.nn.linear as linear_mod
from vislang.nn import Linear, fast_linear
from vislang.nn.linear import PackedLinear


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


@pytest.mark.parametrize("rows", [1, 8, 37])
def test_packed_linear_matches_f_linear(rows):
    torch.manual_seed(0)
    plain = torch.nn.Linear(576, 960)
    packed = PackedLinear.of(plain)
    x = torch.randn(rows, 576)
    ref = F.linear(x.double(), plain.weight.double(), plain.bias.double())
    bound = 576 * 2.0**-24 * (x.abs().double() @ plain.weight.abs().double().T).max()
    with torch.inference_mode():
        got = packed(x[None])[0]  # [1, rows, 576]: any leading shape
    assert float((got.double() - ref).abs().max()) <= bound
    assert packed.state_dict() == {}  # an opaque layout is never saved


def test_fused_fp32_decoder_is_packed_and_predicts_the_same():
    from tiny import tiny_decoder
    from vislang.generation.quantize import quantize_decoder

    dec = tiny_decoder()
    ids = torch.randint(0, 300, (2, 12))
    with torch.inference_mode():
        ref = dec(input_ids=ids)
        quantize_decoder(dec, "fp32", fuse=True)
        got = dec(input_ids=ids)
    kinds = {type(m).__name__ for m in dec.modules() if isinstance(m, (torch.nn.Linear, PackedLinear))}
    if dec.fast_decode is None:  # no native step: oneDNN's layout for every layer but the tied head
        assert kinds == {"PackedLinear", "Linear"}
    else:  # the native step reads the plain fused rows
        assert kinds == {"Linear"}
    assert dec.lm_head.weight is dec.embed_tokens.weight
    assert torch.allclose(got, ref, atol=1e-4) and torch.equal(got.argmax(-1), ref.argmax(-1))


def test_caller_threads_run_single_threaded_and_restore():
    from vislang.generation import threads

    if threads._GOMP is None:
        pytest.fail("PyTorch here should run on GNU OpenMP (its Linux CPU wheels do)")
    before = threads._GOMP.omp_get_max_threads()
    with threads.single_threaded():
        assert threads._GOMP.omp_get_max_threads() == 1
        torch.ones(1 << 20).sum()  # a parallel op runs, on one thread
    assert threads._GOMP.omp_get_max_threads() == before
    assert threads.release_idle_workers()
    assert float(torch.ones(1 << 20).sum()) == 1 << 20  # a released pool comes back on demand
