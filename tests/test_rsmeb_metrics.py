"""RSMEB metrics: agreement with an independent implementation (ranx) and pessimistic ties."""

from __future__ import annotations

import numpy as np
import pytest

from rsmeb_eval.metrics import candidate_metrics, corpus_metrics, pessimistic_rank


def test_pessimistic_rank_counts_ties_against_the_model():
    scores = np.array([0.5, 0.5, 0.1])
    assert pessimistic_rank(scores, np.array([True, False, False])) == 2
    assert pessimistic_rank(np.array([0.9, 0.5, 0.1]), np.array([True, False, False])) == 1
    assert pessimistic_rank(np.array([0.1, 0.5, 0.9]), np.array([False, True, True])) == 1
    with pytest.raises(ValueError, match="positive"):
        pessimistic_rank(scores, np.array([False, False, False]))


def test_constant_embedder_scores_zero_not_chance():
    scores = [np.zeros(5) for _ in range(10)]
    positives = [np.eye(5, dtype=bool)[i % 5] for i in range(10)]
    result = candidate_metrics(scores, positives)
    assert result["p@1"] == 0.0 and result["chance_p@1"] == pytest.approx(0.2)
    flat = corpus_metrics(np.zeros((4, 6)), np.eye(4, 6, dtype=bool))
    assert flat["r@1"] == 0.0 and flat["r@5"] == 0.0 and flat["r@10"] == 1.0  # 6 items: top 10 holds all


def test_candidate_metrics_hand_computed():
    scores = [np.array([0.9, 0.2, 0.1]), np.array([0.3, 0.8, 0.1]), np.array([0.2, 0.2, 0.9])]
    positives = [np.array([1, 0, 0], bool), np.array([1, 0, 0], bool), np.array([0, 1, 0], bool)]
    result = candidate_metrics(scores, positives)
    assert result["p@1"] == pytest.approx(1 / 3)
    assert result["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)  # third: tie with a negative -> rank 3


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_corpus_metrics_agree_with_ranx(seed):
    from ranx import Qrels, Run, evaluate

    rng = np.random.default_rng(seed)
    n_queries, n_corpus = 40, 60
    scores = rng.normal(size=(n_queries, n_corpus))  # continuous: no ties, so tie policies cannot differ
    relevant = rng.random((n_queries, n_corpus)) < 0.05
    relevant[np.arange(n_queries), rng.integers(0, n_corpus, n_queries)] = True
    ours = corpus_metrics(scores, relevant)
    qrels = Qrels({f"q{i}": {f"d{j}": 1 for j in np.flatnonzero(relevant[i])} for i in range(n_queries)})
    run = Run({f"q{i}": {f"d{j}": float(scores[i, j]) for j in range(n_corpus)} for i in range(n_queries)})
    theirs = evaluate(qrels, run, ["hit_rate@1", "hit_rate@5", "hit_rate@10", "ndcg@10", "mrr"])
    assert ours["r@1"] == pytest.approx(theirs["hit_rate@1"])
    assert ours["r@5"] == pytest.approx(theirs["hit_rate@5"])
    assert ours["r@10"] == pytest.approx(theirs["hit_rate@10"])
    assert ours["ndcg@10"] == pytest.approx(theirs["ndcg@10"])
    assert ours["mrr"] == pytest.approx(theirs["mrr"])
    # The candidate protocol on the same data, with every corpus item a candidate: P@1 == R@1.
    cand = candidate_metrics(list(scores), list(relevant))
    assert cand["p@1"] == pytest.approx(ours["r@1"]) and cand["mrr"] == pytest.approx(ours["mrr"])


def test_chance_levels():
    relevant = np.zeros((1, 100), dtype=bool)
    relevant[0, 0] = True
    result = corpus_metrics(np.random.default_rng(0).normal(size=(1, 100)), relevant)
    assert result["chance_r@1"] == pytest.approx(0.01)
    assert result["chance_r@10"] == pytest.approx(0.10)


def test_shape_and_positive_errors():
    with pytest.raises(ValueError, match="shape"):
        corpus_metrics(np.zeros((2, 3)), np.zeros((2, 4), dtype=bool))
    with pytest.raises(ValueError, match="relevant"):
        corpus_metrics(np.zeros((2, 3)), np.zeros((2, 3), dtype=bool))


# --------------------------------------------------------------------------------------------------------
# 95% bootstrap intervals of P@1, checked against two independent computations


@pytest.mark.parametrize("n, hits", [(24, 5), (250, 61), (703, 540)])
def test_bootstrap_interval_agrees_with_scipy_and_the_exact_binomial_bootstrap(n, hits):
    from scipy import stats

    from rsmeb_eval.metrics import bootstrap_ci

    values = np.zeros(n)
    values[np.random.default_rng(n).choice(n, hits, replace=False)] = 1.0
    low, high = bootstrap_ci(values)
    assert low < hits / n < high
    # scipy's own percentile bootstrap (other code, other random stream): the same interval up to resampling noise.
    theirs = stats.bootstrap((values,), np.mean, confidence_level=0.95, n_resamples=10_000, method="percentile",
                             random_state=np.random.default_rng(12345)).confidence_interval
    assert low == pytest.approx(theirs.low, abs=1.5 / n + 0.005)
    assert high == pytest.approx(theirs.high, abs=1.5 / n + 0.005)
    # Exact: the mean of n draws with replacement from 0/1 values is Binomial(n, hits/n) / n, so the percentile
    # bootstrap's limits are that distribution's 2.5% and 97.5% quantiles.
    exact = stats.binom(n, hits / n)
    assert low == pytest.approx(exact.ppf(0.025) / n, abs=1.01 / n)
    assert high == pytest.approx(exact.ppf(0.975) / n, abs=1.01 / n)


def test_bootstrap_interval_is_deterministic_and_reported_with_p_at_1():
    from rsmeb_eval.metrics import bootstrap_ci

    rng = np.random.default_rng(0)
    scores = [rng.normal(size=5) for _ in range(200)]
    positives = [np.eye(5, dtype=bool)[i % 5] for i in range(200)]
    result = candidate_metrics(scores, positives)
    hits = [float(np.argmax(s) == i % 5) for i, s in enumerate(scores)]
    assert result["p@1"] == pytest.approx(np.mean(hits))
    assert result["p@1_ci95"] == list(bootstrap_ci(hits)) == list(bootstrap_ci(hits))
    low, high = result["p@1_ci95"]
    assert 0.1 < low < result["p@1"] < high < 0.3 and high - low == pytest.approx(0.11, abs=0.03)
    assert bootstrap_ci(np.ones(10)) == (1.0, 1.0)  # no variation: a point
    with pytest.raises(ValueError, match="at least one"):
        bootstrap_ci([])
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci([1.0, 0.0], confidence=95)
