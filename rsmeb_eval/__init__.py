"""RSMEB: the remote-sensing multimodal embedding benchmark (our reconstruction), and its evaluation harness.

    from rsmeb_eval import evaluate, get_tasks
    from rsmeb_eval.encoders import SentenceTransformerEncoder
    results = evaluate(SentenceTransformerEncoder("out/nano"), "out/rsmeb-lite")
"""

__all__ = ["evaluate", "get_task", "get_tasks"]


def __getattr__(name):  # lazy: `rsmeb_eval.formats` (used by training converters) should not import the harness
    if name == "evaluate":
        from rsmeb_eval.evaluator import evaluate

        return evaluate
    if name in ("get_task", "get_tasks"):
        from rsmeb_eval import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'rsmeb_eval' has no attribute {name!r}")
