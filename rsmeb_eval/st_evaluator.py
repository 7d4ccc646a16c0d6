"""RSMEB as a sentence-transformers evaluator, for evaluation during training (same tasks, same metrics)."""

from __future__ import annotations

import json
import os
from typing import Any

from sentence_transformers.base.evaluation.evaluator import BaseEvaluator

from rsmeb_eval.encoders import SentenceTransformerEncoder
from rsmeb_eval.evaluator import evaluate


class RSMEBEvaluator(BaseEvaluator):
    """Evaluate the model being trained on RSMEB tasks; primary metric: the mean of families (``overall``).

    Args:
        data_dir: an RSMEB dataset folder.
        tasks: task names (default: all in the folder).
        split: which split to evaluate ("test"; pass "train" only for debugging).
        batch_size: encoding batch size.
        name: metric prefix.
    """

    def __init__(self, data_dir: str | os.PathLike, tasks: list[str] | None = None, split: str = "test",
                 batch_size: int = 32, name: str = "rsmeb"):
        super().__init__()
        self.data_dir, self.tasks, self.split, self.batch_size, self.name = data_dir, tasks, split, batch_size, name
        self.primary_metric = "overall"
        self.greater_is_better = True

    def __call__(self, model, output_path: str | None = None, epoch: int = -1, steps: int = -1) -> dict[str, float]:
        was_training = model.training
        results = evaluate(SentenceTransformerEncoder(model, name="training"), self.data_dir, tasks=self.tasks,
                           split=self.split, batch_size=self.batch_size, show_progress_bar=False)
        model.train(was_training)
        metrics: dict[str, Any] = {"overall": results["overall"]}
        metrics.update({f"family_{f}": v for f, v in results["families"].items()})
        metrics.update({f"task_{t}": r["score"] for t, r in results["tasks"].items() if r["status"] == "ok"})
        if output_path is not None:
            os.makedirs(output_path, exist_ok=True)
            with open(os.path.join(output_path, f"rsmeb_{self.split}_epoch{epoch}_steps{steps}.json"), "w") as handle:
                json.dump(results, handle, indent=2)
        metrics = self.prefix_name_to_metrics(metrics, self.name)
        self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
        return metrics
