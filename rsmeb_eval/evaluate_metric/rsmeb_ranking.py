"""RSMEB ranking metrics as a local `evaluate` module: ``evaluate.load("path/to/rsmeb_ranking.py")``.

The numbers come from `rsmeb_eval.metrics`, the same code the harness uses, so the two always agree.

Each example is one query: ``predictions`` are the similarity scores of its candidates and ``references``
the indices of the relevant candidates. Ties count against the model.

    >>> import evaluate
    >>> metric = evaluate.load("rsmeb_eval/evaluate_metric/rsmeb_ranking.py")
    >>> metric.compute(predictions=[[0.9, 0.1, 0.3], [0.2, 0.8]], references=[[0], [0]])
    {'p@1': 0.5, 'mrr': 0.75, 'chance_p@1': 0.41666666666666663, 'n_queries': 2}
"""

import datasets
import evaluate
import numpy as np

_CITATION = "VLM2GeoVec / RSMEB, arXiv:2512.11490 (benchmark reconstruction by the vlm2geovec project)."
_DESCRIPTION = "P@1 and MRR over per-query candidate lists (MMEB protocol), with ties counted against the model."
_KWARGS_DESCRIPTION = """
Args:
    predictions: list of lists of float, the scores of each query's candidates.
    references: list of lists of int, the indices of each query's relevant candidates.
Returns:
    p@1, mrr, chance_p@1 (what a random ranking scores), n_queries.
"""


class RsmebRanking(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("float64")),
                 "references": datasets.Sequence(datasets.Value("int64"))}
            ),
        )

    def _compute(self, predictions, references):
        from rsmeb_eval.metrics import candidate_metrics

        scores, positives = [], []
        for row, (candidate_scores, relevant) in enumerate(zip(predictions, references)):
            candidate_scores = np.asarray(candidate_scores, dtype=np.float64)
            mask = np.zeros(len(candidate_scores), dtype=bool)
            if not relevant or max(relevant) >= len(mask) or min(relevant) < 0:
                raise ValueError(f"example {row}: relevant indices {relevant} do not fit {len(mask)} candidates")
            mask[list(relevant)] = True
            scores.append(candidate_scores)
            positives.append(mask)
        return {**candidate_metrics(scores, positives), "n_queries": len(scores)}
