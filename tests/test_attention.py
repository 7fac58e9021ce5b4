import pytest
import torch

from ca2vdm.config import ChunkLayout
from ca2vdm.models import attention as A


def test_block_causal_mask_layout():
    mask = A.block_causal_mask(ChunkLayout(2, True), 0, 5)
    # chunks: [0], [1, 2], [3, 4]
    expected = torch.tensor([[1, 0, 0, 0, 0],
                             [1, 1, 1, 0, 0],
                             [1, 1, 1, 0, 0],
                             [1, 1, 1, 1, 1],
                             [1, 1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(mask, expected)
    frame_causal = A.block_causal_mask(ChunkLayout(1, False), 0, 4)
    assert torch.equal(frame_causal, torch.ones(4, 4, dtype=torch.bool).tril())


def test_mask_with_offset_matches_slice_of_full_mask():
    full = A.block_causal_mask(ChunkLayout(2, True), 0, 11)
    assert torch.equal(A.block_causal_mask(ChunkLayout(2, True), 3, 8), full[3:, 3:])


def test_periodic_rope_scores_depend_only_on_distance():
    cos, sin = A.rope_table(16, period=9)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)

    def score(a, b):
        qa = A.apply_rope(q, cos[a % 9][None], sin[a % 9][None])
        kb = A.apply_rope(k, cos[b % 9][None], sin[b % 9][None])
        return (qa * kb).sum()

    for shift in (1, 9, 40, 1000):
        assert torch.allclose(score(5, 2), score(5 + shift, 2 + shift), atol=1e-5)
    assert not torch.allclose(score(5, 2), score(5, 3), atol=1e-3)  # positions do matter


def test_sdpa_backend_and_errors():
    q = torch.randn(2, 5, 2, 8)
    out = A.attention(q, q, q, backend="sdpa")
    assert out.shape == q.shape
    assert A.resolve_backend("auto", "cpu") == "sdpa"
    with pytest.raises(ValueError, match="flash"):
        A.resolve_backend("flash", "cpu")
    with pytest.raises(ValueError, match="attention_backend"):
        A.resolve_backend("xformers", "cpu")


@pytest.mark.parametrize("lq, lk, masked", [(4, 13, False), (13, 13, True), (1, 1, False), (9, 30, False)])
def test_matmul_attention_matches_sdpa(lq, lk, masked):
    q, k, v = torch.randn(6, lq, 3, 8), torch.randn(6, lk, 3, 8), torch.randn(6, lk, 3, 8)
    mask = A.block_causal_mask(ChunkLayout(2, True), lk - lq, lk)[-lq:] if masked else None
    sdpa = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                            attn_mask=mask).transpose(1, 2)
    assert torch.allclose(A.matmul_attention(q, k, v, mask), sdpa, atol=1e-5)
    assert torch.allclose(A.attention(q, k, v, mask), sdpa, atol=1e-5)  # short keys on CPU take this path


def test_matmul_attention_gradients_match_sdpa():
    q, k, v = (torch.randn(2, 5, 2, 4, requires_grad=True) for _ in range(3))
    mask = A.block_causal_mask(ChunkLayout(2, True), 0, 5)
    A.matmul_attention(q, k, v, mask).square().sum().backward()
    grads = [a.grad.clone() for a in (q, k, v)]
    for a in (q, k, v):
        a.grad = None
    torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                     attn_mask=mask).square().sum().backward()
    assert all(torch.allclose(g, a.grad, atol=1e-5) for g, a in zip(grads, (q, k, v)))


@pytest.mark.skipif(not torch.cuda.is_available() or A.flash_attn_func is None, reason="needs CUDA and flash-attn")
def test_flash_matches_sdpa():
    q, k, v = (torch.randn(4, 37, 4, 64, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    flash = A.attention(q, k, v, backend="flash")
    sdpa = A.attention(q, k, v, backend="sdpa")
    assert (flash.float() - sdpa.float()).abs().max() < 2e-2
