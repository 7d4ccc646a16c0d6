"""Training losses: hand-checked values, multi-positive and hard-negative behaviour, GradCache equivalence."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import make_image
from vlm2geovec_train.losses import CachedMultimodalMNRLoss, MultimodalMNRLoss, info_nce


def reference_loss(anchors, candidates, temperature, positive_mask):
    """Straight from the definition: -log( sum_pos exp(s) / sum_all exp(s) ), averaged over anchors."""
    a = F.normalize(anchors.double(), dim=-1)
    pool = F.normalize(torch.cat(candidates).double(), dim=-1)
    logits = a @ pool.T / temperature
    losses = [-(torch.log(torch.exp(row[mask]).sum() / torch.exp(row).sum())) for row, mask in zip(logits, positive_mask)]
    return torch.stack(losses).mean()


def test_info_nce_matches_the_definition_single_and_multi_positive():
    g = torch.Generator().manual_seed(0)
    anchors, positives, negatives = (torch.randn(4, 8, generator=g) for _ in range(3))
    plain = info_nce(anchors, [positives, negatives], temperature=0.1)
    mask = torch.zeros(4, 8, dtype=torch.bool)
    mask[torch.arange(4), torch.arange(4)] = True
    assert plain.item() == pytest.approx(reference_loss(anchors, [positives, negatives], 0.1, mask).item(), rel=1e-5)
    # Rows 0 and 2 share a positive (same content id), and row 1's negative equals row 3's positive.
    ids = torch.tensor([[7, 100], [8, 11], [7, 101], [11, 102]])
    multi = info_nce(anchors, [positives, negatives], temperature=0.1, content_ids=ids)
    mask[0, 2] = mask[2, 0] = True
    mask[3, 4 + 1] = True  # pool index 4 + 1 is row 1's negative, whose content is row 3's positive
    assert multi.item() == pytest.approx(reference_loss(anchors, [positives, negatives], 0.1, mask).item(), rel=1e-5)
    with pytest.raises(ValueError, match="content ids of shape"):
        info_nce(anchors, [positives, negatives], 0.1, content_ids=torch.zeros(4, 3, dtype=torch.long))


def test_hard_negatives_change_the_loss_as_they_should():
    # Anchors are orthonormal and each positive is its anchor: the in-batch loss is ~0.
    anchors = torch.eye(3, 8)
    positives = anchors.clone()
    base = info_nce(anchors, [positives], 0.05)
    easy = info_nce(anchors, [positives, -anchors], 0.05)  # opposite of its anchor, orthogonal to the others
    hard = info_nce(anchors, [positives, anchors * 0.999 + 0.001], 0.05)  # near-copies of the anchors
    assert base.item() < 1e-6
    assert easy.item() == pytest.approx(base.item(), abs=1e-6)  # an easy negative changes (almost) nothing
    assert hard.item() > 0.6  # ~log 2: a negative as similar as the positive halves its probability


def test_temperature_must_be_positive(nano_dir):
    with pytest.raises(ValueError, match="temperature"):
        MultimodalMNRLoss(model=None, temperature=0.0)


@pytest.fixture(scope="module")
def st_model(nano_dir):
    from vlm2geovec import load_model

    return load_model(str(nano_dir), device="cpu")


def batch_features(model, images):
    """A mixed batch: anchors image+text, positives text/coords, one hard-negative column with an image."""
    anchors = [{"image": images[0], "text": "crown"}, "a lagoon", {"image": images[1]}, {"coords": (10.0, 20.0)},
               [images[2], "versus", images[0]], "dry river bed"]
    positives = ["a tree crown", {"image": images[2], "bbox": [0, 0, 100, 100]}, "a field", "a town",
                 {"image": images[1], "text": "pair"}, "a tree crown"]
    negatives = [{"image": images[1]}, "sea", "desert", {"coords": (-5.0, 60.0)}, "a forest", {"image": images[0]}]
    columns = [anchors, positives, negatives]
    features = [model.preprocess(column) for column in columns]
    labels = torch.tensor([[1, 90], [2, 91], [3, 92], [4, 93], [5, 94], [1, 95]])  # rows 0 and 5: same positive
    return features, labels


def grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.slow
def test_gradcache_gives_the_same_loss_and_gradients(st_model, images):
    torch.manual_seed(0)
    plain_model = copy.deepcopy(st_model).train()
    cached_model = copy.deepcopy(st_model).train()
    features, labels = batch_features(plain_model, images)

    plain = MultimodalMNRLoss(plain_model, temperature=0.02)
    loss_plain = plain([dict(f) for f in features], labels)
    loss_plain.backward()
    cached = CachedMultimodalMNRLoss(cached_model, temperature=0.02, mini_batch_size=2)
    loss_cached = cached([dict(f) for f in features], labels)
    loss_cached.backward()

    # Tolerance: float32 sums in a different order (mini-batches of 2 vs one batch of 6).
    assert loss_cached.item() == pytest.approx(loss_plain.item(), rel=1e-5, abs=1e-5)
    g_plain, g_cached = grads(plain_model), grads(cached_model)
    assert g_plain.keys() == g_cached.keys() and len(g_plain) > 40
    for name in g_plain:
        scale = g_plain[name].abs().max().item() + 1e-12
        assert (g_plain[name] - g_cached[name]).abs().max().item() <= 1e-4 * scale + 1e-7, name
