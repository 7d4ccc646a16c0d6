"""Ranking metrics for RSMEB, with ties always counted against the model.

Candidate protocol (MMEB): each query scores its own candidate list; a hit at 1 needs the best positive to
score strictly above every negative. Corpus protocol: the query ranks the whole corpus; among equal scores
negatives are ranked first (pessimistic), so a constant embedder scores at or below chance, never above.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

CORPUS_KS = (1, 5, 10)


def pessimistic_rank(scores: np.ndarray, positive: np.ndarray) -> int:
    """1-based rank of the best positive when every tied negative is placed before it."""
    if not positive.any():
        raise ValueError("a query needs at least one positive")
    best = scores[positive].max()
    if not np.isfinite(best):
        raise ValueError("scores must be finite")
    return int((scores[~positive] >= best).sum()) + 1


def candidate_metrics(scores: Sequence[np.ndarray], positives: Sequence[np.ndarray]) -> dict[str, float]:
    """P@1 and MRR over per-query candidate lists.

    Args:
        scores: one 1-D array per query, the similarity of each of its candidates.
        positives: one boolean array per query, True where the candidate is relevant.
    """
    ranks = np.array([pessimistic_rank(np.asarray(s, dtype=np.float64), np.asarray(p, dtype=bool))
                      for s, p in zip(scores, positives, strict=True)])
    chance = np.mean([np.asarray(p).sum() / len(p) for p in positives])
    hits = (ranks == 1).astype(np.float64)
    low, high = bootstrap_ci(hits)
    return {"p@1": float(np.mean(hits)), "p@1_ci95": [low, high], "mrr": float(np.mean(1.0 / ranks)),
            "chance_p@1": float(chance)}


BOOTSTRAP_RESAMPLES = 10_000


def bootstrap_ci(values: Sequence[float] | np.ndarray, confidence: float = 0.95,
                 n_resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-query `values` (e.g. 0/1 hits at rank 1).

    Resamples the queries with replacement `n_resamples` times (a fixed `seed`: the same scores always give the
    same interval) and returns the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of the
    resampled means. It says how much the score could move with another test set of the same size and kind.
    """
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    chunk = max(1, 2_000_000 // values.size)  # bounded memory for large test sets
    for start in range(0, n_resamples, chunk):
        stop = min(n_resamples, start + chunk)
        means[start:stop] = values[rng.integers(0, values.size, (stop - start, values.size))].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


def _ranked_relevance(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """Relevance (0/1) in ranked order; ties broken with negatives first."""
    order = np.lexsort((relevant.astype(np.int8), -scores))  # by score desc, then non-relevant first
    return relevant[order]


def corpus_metrics(scores: np.ndarray, relevant: np.ndarray, ks: Sequence[int] = CORPUS_KS) -> dict[str, float]:
    """Full-corpus retrieval: R@k (share of queries with a relevant item in the top k), their mean, nDCG@10, MRR.

    Args:
        scores: ``(n_queries, n_corpus)`` similarities.
        relevant: ``(n_queries, n_corpus)`` booleans.
    """
    scores = np.asarray(scores, dtype=np.float64)
    relevant = np.asarray(relevant, dtype=bool)
    if scores.shape != relevant.shape:
        raise ValueError(f"scores {scores.shape} and relevant {relevant.shape} differ in shape")
    if not relevant.any(axis=1).all():
        raise ValueError("every query needs at least one relevant corpus item")
    hits = {k: [] for k in ks}
    ndcg, rr = [], []
    discounts = 1.0 / np.log2(np.arange(2, 12))
    for row_scores, row_relevant in zip(scores, relevant):
        ranked = _ranked_relevance(row_scores, row_relevant)
        first = int(np.argmax(ranked)) + 1
        rr.append(1.0 / first)
        for k in ks:
            hits[k].append(first <= k)
        gains = ranked[:10].astype(np.float64)
        ideal = np.sort(row_relevant.astype(np.float64))[::-1][:10]
        ndcg.append(float((gains * discounts[: len(gains)]).sum() / (ideal * discounts[: len(ideal)]).sum()))
    result = {f"r@{k}": float(np.mean(hits[k])) for k in ks}
    result["mean_recall"] = float(np.mean([result[f"r@{k}"] for k in ks]))
    result["ndcg@10"] = float(np.mean(ndcg))
    result["mrr"] = float(np.mean(rr))
    n_corpus = scores.shape[1]
    n_relevant = relevant.sum(axis=1)
    for k in ks:  # a random ranking's chance of a relevant item in the top k
        result[f"chance_r@{k}"] = float(np.mean([1 - _comb_ratio(n_corpus, int(r), k) for r in n_relevant]))
    return result


def _comb_ratio(n: int, r: int, k: int) -> float:
    """C(n - r, k) / C(n, k): probability that k random picks from n miss all r relevant items."""
    if k >= n:
        return 0.0
    if n - r < k:
        return 0.0
    return math.exp(math.lgamma(n - r + 1) - math.lgamma(n - r - k + 1) - math.lgamma(n + 1) + math.lgamma(n - k + 1))
