"""Contrastive losses for VLM2GeoVec, for the sentence-transformers Trainer.

`MultimodalMNRLoss` is InfoNCE over in-batch candidates: every anchor (query column) is scored against the
positives of the whole batch and every hard-negative column, at temperature 0.02 (VLM2Vec's value). Two
things differ from sentence-transformers' MultipleNegativesRankingLoss:

* **multi-positive targets.** Templated captions and short answers repeat inside a batch; a candidate
  whose content equals an anchor's positive is also a positive, not a negative to push away. The dataset
  carries a ``label`` column: one content id per item column (positive first, then the negatives).
* **global batch under DDP.** Candidates are gathered from every rank (differentiably), so the contrastive
  batch is the global batch, as in the paper's recipe.

`CachedMultimodalMNRLoss` is the same loss through sentence-transformers' GradCache machinery
(`CachedLossMixin`): embeddings in mini-batches without graphs, the loss and its gradient w.r.t. the
embeddings, then a second pass that back-propagates mini-batch by mini-batch — memory flat in batch size.

Inputs (columns, in order): ``anchor``, ``positive``, then any number of ``negative_*`` columns; optional
``label``: int64 ``(batch, 1 + n_negatives)`` content ids. Output: a scalar loss.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from sentence_transformers.base.losses.gradcache import CachedLossMixin
from torch import Tensor, nn

VISION_START_TOKEN_ID = 151652


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _gather(tensor: Tensor) -> Tensor:
    """All ranks' rows, in rank order; gradients flow back to each rank's own rows."""
    rank, world = _world()
    if world == 1:
        return tensor
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(tensor.contiguous()), dim=0)


def _gather_ids(tensor: Tensor) -> Tensor:
    rank, world = _world()
    if world == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


def info_nce(
    anchors: Tensor,
    candidates: list[Tensor],
    temperature: float,
    content_ids: Tensor | None = None,
    gather_across_devices: bool = True,
) -> Tensor:
    """Multi-positive InfoNCE.

    Args:
        anchors: ``(b, d)`` local anchor embeddings.
        candidates: ``[(b, d) positives, (b, d) negatives_1, ...]`` local candidate embeddings.
        temperature: softmax temperature (logits = cosine / temperature).
        content_ids: ``(b, len(candidates))`` content id per candidate item, or None (only the own positive counts).
    """
    b = anchors.shape[0]
    rank, world = _world() if gather_across_devices else (0, 1)
    anchors = F.normalize(anchors.float(), dim=-1)
    columns = [F.normalize(c.float(), dim=-1) for c in candidates]
    if world > 1:
        columns = [_gather(c) for c in columns]
    pool = torch.cat(columns, dim=0)  # (len(candidates) * b * world, d): column-major, rank order inside
    logits = anchors @ pool.T / temperature
    own = torch.arange(b, device=anchors.device) + rank * b
    positive = torch.zeros_like(logits, dtype=torch.bool)
    positive[torch.arange(b), own] = True
    if content_ids is not None:
        ids = content_ids.to(anchors.device)
        if ids.shape != (b, len(candidates)):
            raise ValueError(f"label: expected content ids of shape {(b, len(candidates))}, got {tuple(ids.shape)}")
        all_ids = _gather_ids(ids) if world > 1 else ids  # (b * world, n_columns)
        pool_ids = all_ids.T.reshape(-1)  # column-major, like `pool`
        positive |= ids[:, :1] == pool_ids[None, :]
    positive_logits = logits.masked_fill(~positive, float("-inf"))
    return (torch.logsumexp(logits, dim=1) - torch.logsumexp(positive_logits, dim=1)).mean()


class MultimodalMNRLoss(nn.Module):
    """InfoNCE with in-batch and hard negatives, multi-positive aware, global batch under DDP.

    Args:
        model: the SentenceTransformer being trained.
        temperature: logits are cosine similarities divided by this (default 0.02).
        gather_across_devices: use every rank's candidates as negatives (default True; no-op on one process).
    """

    def __init__(self, model, temperature: float = 0.02, gather_across_devices: bool = True):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.model = model
        self.temperature = temperature
        self.gather_across_devices = gather_across_devices

    def loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor | None) -> Tensor:
        if len(embeddings) < 2:
            raise ValueError("the loss needs an anchor column and a positive column")
        return info_nce(embeddings[0], embeddings[1:], self.temperature, labels, self.gather_across_devices)

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> Tensor:
        embeddings = [self.model(features)["sentence_embedding"] for features in sentence_features]
        return self.loss_from_embeddings(embeddings, labels)

    def get_config_dict(self) -> dict:
        return {"temperature": self.temperature, "gather_across_devices": self.gather_across_devices}

    @property
    def citation(self) -> str:
        return "@article{vlm2vec, title={VLM2Vec}, journal={arXiv:2410.05160}, year={2024}}"


class CachedMultimodalMNRLoss(CachedLossMixin, MultimodalMNRLoss):
    """`MultimodalMNRLoss` through GradCache: same loss and gradients, memory bounded by ``mini_batch_size``.

    Args:
        model, temperature, gather_across_devices: as `MultimodalMNRLoss`.
        mini_batch_size: items embedded at once in both passes.
    """

    def __init__(self, model, temperature: float = 0.02, mini_batch_size: int = 8, gather_across_devices: bool = True,
                 show_progress_bar: bool = False):
        super().__init__(model, temperature, gather_across_devices)
        self.mini_batch_size = mini_batch_size
        self.show_progress_bar = show_progress_bar

    def calculate_loss(self, reps: list[list[Tensor]], labels: Tensor | None = None, *, with_backward: bool = False) -> Tensor:
        loss = self.loss_from_embeddings([torch.cat(column) for column in reps], labels)
        if with_backward:
            loss.backward()
            loss = loss.detach()
        return loss

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> Tensor:
        return self.forward_cached(sentence_features, labels)

    def get_config_dict(self) -> dict:
        return {**super().get_config_dict(), "mini_batch_size": self.mini_batch_size}
