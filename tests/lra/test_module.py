"""The LightningModule pieces: schedule shape, two-document head."""

from __future__ import annotations

import math

import pytest
import torch

from lra.module import LRAModule, warmup_cosine


def test_warmup_cosine_endpoints_and_shape():
    kw = dict(warmup_steps=100, total_steps=1100, start_factor=0.1, end_factor=0.4)
    assert warmup_cosine(0, **kw) == pytest.approx(0.1)
    assert warmup_cosine(50, **kw) == pytest.approx(0.55)
    assert warmup_cosine(100, **kw) == pytest.approx(1.0)
    assert warmup_cosine(600, **kw) == pytest.approx(0.4 + 0.6 * 0.5 * (1 + math.cos(math.pi / 2)))
    assert warmup_cosine(1100, **kw) == pytest.approx(0.4)
    assert warmup_cosine(5000, **kw) == pytest.approx(0.4)  # stays at the floor
    values = [warmup_cosine(s, **kw) for s in range(100, 1101)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_dual_module_classifies_pairs_with_one_encoder():
    model = LRAModule(vocab_size=20, max_len=16, num_classes=2, dual=True, attention="softmax")
    ids = torch.randint(1, 20, (3, 2, 16))
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[0, 1, 10:] = False
    assert model(ids, mask).shape == (3, 2)
    assert model.head[0].in_features == 4 * 64
    # Swapping the documents changes u - v, so the logits are not symmetric in general.
    assert not torch.allclose(model(ids, mask), model(ids.flip(1), mask.flip(1)))


def test_encoder_rejects_input_longer_than_position_table():
    model = LRAModule(vocab_size=20, max_len=8, num_classes=2, attention="softmax")
    with pytest.raises(ValueError, match="longer than the position table"):
        model(torch.ones(1, 9, dtype=torch.long), torch.ones(1, 9, dtype=torch.bool))
