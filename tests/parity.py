"""Helpers shared by the parity tests: build a transformers model, save it, load it in vislang."""

import torch

import vislang


def save_and_load(hf_model, path):
    hf_model.save_pretrained(path)
    return hf_model.eval(), vislang.load(path)


def prompt_batch(counts, text_len=12, vocab=160, image_token=5, pad=0, seed=0):
    """Left-padded rows, row i holding one run of counts[i] image tokens after 3 text tokens."""
    g = torch.Generator().manual_seed(seed)
    T = max(counts) + text_len
    ids = torch.randint(6, vocab, (len(counts), T), generator=g)
    mask = torch.ones_like(ids)
    for r, n in enumerate(counts):
        start = T - text_len - n
        ids[r, :start], mask[r, :start] = pad, 0
        ids[r, start + 3 : start + 3 + n] = image_token
    return ids, mask


def max_diff_real(a, b, mask):
    """Largest |a - b| over the positions that hold real (not padding) tokens."""
    return float((a.detach() - b.detach())[mask.bool()].abs().max())


def greedy_pair(hf_model, vl_model, ids, mask, n=16, **images):
    gen = hf_model.generation_config
    theirs = hf_model.generate(
        input_ids=ids, attention_mask=mask, max_new_tokens=n, do_sample=False, **images
    )
    ours = vl_model.generate(
        ids, mask, max_new_tokens=n, eos_token_id=gen.eos_token_id, pad_token_id=gen.pad_token_id, **images
    )
    return theirs[:, ids.shape[1] :], ours
