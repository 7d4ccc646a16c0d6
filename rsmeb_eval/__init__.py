"""RSMEB: the remote-sensing multimodal embedding benchmark (our reconstruction), and its evaluation harness.

    from rsmeb_eval import evaluate, get_tasks
    from rsmeb_eval.encoders import SentenceTransformerEncoder
    results = evaluate(SentenceTransformerEncoder("out/nano"), "out/rsmeb-lite")
"""

from rsmeb_eval.evaluator import evaluate
from rsmeb_eval.registry import get_task, get_tasks

__all__ = ["evaluate", "get_task", "get_tasks"]
