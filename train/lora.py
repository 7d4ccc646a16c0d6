"""LoRA / DoRA fine-tuning of VLM2GeoVec through peft (VLM2Vec's recipe: r=16, alpha=64, dropout 0.1).

    from vlm2geovec import load_model
    from vlm2geovec_train.lora import LoraSettings, apply_lora, save_adapter, merge_and_save

    st = load_model("out/nano")                      # a SentenceTransformer holding a VLM2GeoVecEmbedder
    apply_lora(st, LoraSettings())                   # st[0].model is now a peft.PeftModel; only LoRA trains
    ...train st (sentence-transformers Trainer or a plain loop)...
    save_adapter(st, "out/nano-lora", base_path="out/nano")   # small adapter folder
    merge_and_save(st, "out/nano-merged")            # a normal VLM2GeoVec checkpoint (same layout as nano)

An adapter folder loads like any checkpoint: ``SentenceTransformer(folder, trust_remote_code=True)`` (the
module's ``load`` sees ``adapter_config.json``, loads the base and merges the adapter), or, for plain
transformers users, ``load_adapter_model(folder)`` + ``AutoProcessor.from_pretrained(folder, trust_remote_code=True)``.

peft is used directly (``peft.get_peft_model``), never through transformers' ``model.add_adapter``: that path
needs peft >= 0.22 with transformers 5.24, which is not on PyPI (shared/notes/platform.md, trap 4).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

LANGUAGE_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# Vision blocks per backbone family: fused attention qkv + output proj, and the MLP (Qwen2-VL: fc1/fc2; Qwen2.5-VL:
# gated gate/up/down; Qwen3-VL: linear_fc1/linear_fc2). The patch mergers are not adapted.
VISION_TARGETS_BY_FAMILY = {
    "qwen2_vl": ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"),
    "qwen2_5_vl": ("attn.qkv", "attn.proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"),
    "qwen3_vl": ("attn.qkv", "attn.proj", "mlp.linear_fc1", "mlp.linear_fc2"),
}
# Each name exists only in its own family's blocks, so one pattern serves every family.
VISION_TARGETS = tuple(dict.fromkeys(name for names in VISION_TARGETS_BY_FAMILY.values() for name in names))


@dataclass
class LoraSettings:
    """Which layers get low-rank adapters, and how big.

    Args:
        r: adapter rank.
        alpha: LoRA scaling numerator (the update is ``alpha / r * B @ A``).
        dropout: dropout on the adapter's input during training.
        use_dora: weight-decomposed LoRA (DoRA): adds a trainable magnitude vector per adapted layer.
        target_modules: leaf names of the language model's linear layers to adapt. Only modules under
            ``language_model.layers.*`` match, so the vision tower is untouched by default.
        include_vision: also adapt the vision blocks' attention (``attn.qkv``, ``attn.proj``) and MLP linear layers
            (named per family: `VISION_TARGETS_BY_FAMILY`).
    """

    r: int = 16
    alpha: int = 64
    dropout: float = 0.1
    use_dora: bool = False
    target_modules: tuple[str, ...] = LANGUAGE_TARGETS
    include_vision: bool = False

    def target_regex(self) -> str:
        """The peft ``target_modules`` regex (peft full-matches it against module names of the model)."""
        if not self.target_modules:
            raise ValueError("LoraSettings.target_modules is empty")
        names = "|".join(re.escape(name) for name in self.target_modules)
        patterns = [rf"language_model\.layers\.\d+\.(?:self_attn|mlp)\.(?:{names})"]
        if self.include_vision:
            vision = "|".join(re.escape(name) for name in VISION_TARGETS)
            patterns.append(rf"visual\.blocks\.\d+\.(?:{vision})")
        return "^(?:" + "|".join(patterns) + ")$"

    def lora_config(self):
        from peft import LoraConfig

        # task_type=None gives a plain PeftModel whose forward passes every keyword straight to the
        # VLM2GeoVec model (FEATURE_EXTRACTION's wrapper would inject return_dict/output_attentions).
        return LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            use_dora=self.use_dora,
            target_modules=self.target_regex(),
            bias="none",
            task_type=None,
        )


def _is_embedder(obj) -> bool:
    # By name: loaded as remote code, the class lives in transformers_modules.*, not in st_vlm2geovec.
    return any(cls.__name__ == "VLM2GeoVecEmbedder" for cls in type(obj).__mro__)


def _embedder(obj):
    """The VLM2GeoVecEmbedder inside a SentenceTransformer, or the embedder itself; None for a bare model."""
    if _is_embedder(obj):
        return obj
    from sentence_transformers import SentenceTransformer

    if isinstance(obj, SentenceTransformer) and len(obj) and _is_embedder(obj[0]):
        return obj[0]
    if isinstance(obj, SentenceTransformer):
        raise TypeError(f"the SentenceTransformer's first module is {type(obj[0]).__name__}, not VLM2GeoVecEmbedder")
    return None


def _is_peft(model) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def apply_lora(model, settings: LoraSettings | None = None):
    """Wrap a VLM2GeoVec model with LoRA adapters (``peft.get_peft_model``); only adapter weights stay trainable.

    ``model`` is a SentenceTransformer (its first module, a ``VLM2GeoVecEmbedder``, gets ``.model`` replaced
    by the ``PeftModel``, in place; the SentenceTransformer is returned), a ``VLM2GeoVecEmbedder`` (same, the
    embedder is returned) or a bare ``VLM2GeoVecModel`` (the ``PeftModel`` is returned). Calling the
    ``PeftModel`` returns the same ``VLM2GeoVecOutput`` (``.embeddings``); with B initialised at zero the
    embeddings are unchanged until the first optimiser step. Enable gradient checkpointing before this call:
    peft then makes the (frozen) input embeddings' outputs require grad so the graph reaches the adapters.
    """
    from peft import get_peft_model

    settings = settings or LoraSettings()
    embedder = _embedder(model)
    base = embedder.model if embedder is not None else model
    if _is_peft(base):
        raise ValueError("the model already carries peft adapters; merge_and_save() or reload the base first")
    with warnings.catch_warnings():  # peft 0.21 reads the deprecated alias; nothing for the caller to fix
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        peft_model = get_peft_model(base, settings.lora_config())
    trainable, total = count_parameters(peft_model)
    logger.info("LoRA (r=%d, alpha=%d, dora=%s, vision=%s): %d trainable of %d parameters (%.3f%%)",
                settings.r, settings.alpha, settings.use_dora, settings.include_vision, trainable, total,
                100.0 * trainable / max(total, 1))
    if embedder is None:
        return peft_model
    embedder.model = peft_model
    return model


def _require_peft_embedder(st_model):
    embedder = _embedder(st_model)
    if embedder is None:
        raise TypeError("expected a SentenceTransformer (or VLM2GeoVecEmbedder) holding a VLM2GeoVec model")
    if not _is_peft(embedder.model):
        raise ValueError("the model holds no peft adapter: call apply_lora() first")
    return embedder


def save_adapter(st_model, out_dir: str | os.PathLike, base_path: str | os.PathLike) -> Path:
    """Write an adapter checkpoint: the peft adapter plus everything SentenceTransformer/AutoProcessor need.

    ``base_path`` is stored as ``base_model_name_or_path`` exactly as given: a Hub id, an absolute path, or a
    path relative to the adapter folder (``"../vlm2geovec-nano"``; loaders resolve it against the folder first).
    The folder holds no ``config.json``/``model.safetensors``: the base model's weights are not copied.

    Layout: ``adapter_config.json``, ``adapter_model.safetensors``, ``README.md`` (peft's card), processor
    files (``processor_config.json`` with its ``auto_map``, ``tokenizer.json``, ``tokenizer_config.json``,
    ``chat_template.jinja``), ``sentence_vlm2geovec_config.json``, ``modules.json``,
    ``config_sentence_transformers.json`` and the three remote-code files.
    """
    from sentence_transformers import SentenceTransformer

    embedder = _require_peft_embedder(st_model)
    if not isinstance(st_model, SentenceTransformer) or len(st_model) != 1:
        raise TypeError("save_adapter needs the SentenceTransformer itself, holding only the VLM2GeoVecEmbedder")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    peft_model = embedder.model
    # 1. The adapter. save_embedding_layers=False: "auto" would look the base up (on the Hub for an id).
    peft_model.save_pretrained(str(out_dir), safe_serialization=True, save_embedding_layers=False)
    # safetensors writes 0600; the module's own helper gives the adapter the mode every other file has
    sys.modules[type(embedder).__module__].fix_weight_file_modes(out_dir)
    adapter_config_path = out_dir / "adapter_config.json"
    adapter_config = json.loads(adapter_config_path.read_text(encoding="utf-8"))
    adapter_config["base_model_name_or_path"] = str(base_path)
    adapter_config_path.write_text(json.dumps(adapter_config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    # 2. Processor and module settings, as the module's own save writes them.
    embedder.processor.save_pretrained(str(out_dir))
    embedder.save_config(str(out_dir))
    # 3. Remote code and the processor's auto_map, by the module's own writer: the files come from where the
    # running module class was loaded (the package, or a checkpoint's remote-code copy). No config.json here.
    sys.modules[type(embedder).__module__].write_remote_code(out_dir)
    # 4. SentenceTransformer's files, written as its own save() writes them.
    model_config = st_model._get_model_config()  # prompts, similarity function, versions
    (out_dir / "config_sentence_transformers.json").write_text(json.dumps(model_config, indent=2, sort_keys=True),
                                                                encoding="utf-8")
    modules = [{"idx": 0, "name": "0", "path": "", "type": "st_vlm2geovec.VLM2GeoVecEmbedder"}]
    (out_dir / "modules.json").write_text(json.dumps(modules, indent=2), encoding="utf-8")
    return out_dir


def merge_and_save(st_model, out_dir: str | os.PathLike, create_model_card: bool = False) -> Path:
    """Merge the adapters into the base weights (``merge_and_unload``) and save a normal VLM2GeoVec checkpoint.

    In place: afterwards the SentenceTransformer holds the merged plain ``VLM2GeoVecModel`` (save the adapter
    first if you also want it). The folder has the same layout as ``vlm2geovec nano``.
    """
    embedder = _require_peft_embedder(st_model)
    merged = embedder.model.merge_and_unload()
    for parameter in merged.parameters():
        parameter.requires_grad_(True)
    embedder.model = merged
    out_dir = Path(out_dir)
    st_model.save(str(out_dir), create_model_card=create_model_card)
    return out_dir


def resolve_base_path(base: str, adapter_dir: str | os.PathLike | None) -> str:
    """``base_model_name_or_path`` of an adapter: a relative path is taken relative to the adapter folder when
    that folder exists there; otherwise the value is returned unchanged (a Hub id, or a path from the CWD)."""
    if adapter_dir is not None and not os.path.isabs(base):
        candidate = os.path.normpath(os.path.join(os.fspath(adapter_dir), base))
        if os.path.isdir(candidate):
            return candidate
    return base


def load_adapter_model(path: str | os.PathLike, merge: bool = False, **model_kwargs: Any):
    """Plain transformers: ``AutoModel`` of the adapter's base (remote code) + ``peft.PeftModel.from_pretrained``.

    Returns the ``PeftModel`` (``merge=False``) or the merged ``VLM2GeoVecModel`` (``merge=True``), in eval mode.
    The processor loads from the adapter folder: ``AutoProcessor.from_pretrained(path, trust_remote_code=True)``.
    """
    from peft import PeftModel
    from transformers import AutoModel

    path = os.fspath(path)
    adapter_config = json.loads((Path(path) / "adapter_config.json").read_text(encoding="utf-8"))
    base = resolve_base_path(adapter_config["base_model_name_or_path"], path)
    model_kwargs.setdefault("trust_remote_code", True)
    base_model = AutoModel.from_pretrained(base, **model_kwargs)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        model = PeftModel.from_pretrained(base_model, path)
    if merge:
        model = model.merge_and_unload()
    return model.eval()


__all__ = [
    "LoraSettings",
    "apply_lora",
    "count_parameters",
    "load_adapter_model",
    "merge_and_save",
    "resolve_base_path",
    "save_adapter",
]
