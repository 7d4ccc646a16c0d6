"""Sentence-transformers input module for VLM2GeoVec (remote code, copied into every checkpoint).

``SentenceTransformer(path, trust_remote_code=True).encode(items)`` takes the same items as the processor:
strings, images, dicts with ``image``/``text``/``bbox``/``coords`` and lists of parts. A *batch* is a list,
so a single part list is encoded as ``encode([[image, "text", {"bbox": box}]])``. ST prompts (``prompts``,
``encode_query``/``encode_document``) become the item's instruction.

The module holds the HF model and processor and saves them in the checkpoint root, so one folder serves
``AutoModel``/``AutoProcessor`` and ``SentenceTransformer`` alike, with identical embeddings.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import multiprocessing
import os
import pickle
import shutil
import weakref
from collections import deque
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sentence_transformers.base.modules.input_module import InputModule

try:  # as remote code, next to the other checkpoint files
    from .modeling_vlm2geovec import (
        MODEL_TYPE_FAMILIES, REPAIR, VLM2GeoVecModel, check_local_folder, fix_weight_file_modes, model_auto_map,
        read_json_file,
    )
    from .processing_vlm2geovec import (
        PROCESSOR_FILES, VLM2GeoVecProcessor, check_processor_folder, estimate_item_tokens,
    )
except ImportError:  # installed as top-level modules
    from modeling_vlm2geovec import (
        MODEL_TYPE_FAMILIES, REPAIR, VLM2GeoVecModel, check_local_folder, fix_weight_file_modes, model_auto_map,
        read_json_file,
    )
    from processing_vlm2geovec import (
        PROCESSOR_FILES, VLM2GeoVecProcessor, check_processor_folder, estimate_item_tokens,
    )

REMOTE_CODE_FILES = ("modeling_vlm2geovec.py", "processing_vlm2geovec.py", "st_vlm2geovec.py")
MODEL_AUTO_MAP = model_auto_map("qwen2_vl")  # Qwen2-VL's; each checkpoint gets its family's (`write_remote_code`)
PROCESSOR_AUTO_MAP = {"AutoProcessor": "processing_vlm2geovec.VLM2GeoVecProcessor"}
MODEL_INPUT_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids", "pixel_values", "image_grid_thw")
def check_processor_files(folder: str | os.PathLike) -> None:
    """Every file the processor loads from is present and valid JSON (`check_processor_folder`; the vocabulary gets
    a cheap look at both ends, a parse error there is named after the load), and so is this module's settings file."""
    check_processor_folder(folder)
    settings = os.path.join(folder, VLM2GeoVecEmbedder.config_file_name)
    if os.path.exists(settings):
        read_json_file(settings, VLM2GeoVecEmbedder.config_file_name)


def write_remote_code(output_path: str | os.PathLike) -> None:
    """Copy the three remote-code files beside a checkpoint and point its configs at them."""
    output_path = Path(output_path)
    source_dir = Path(__file__).resolve().parent
    for name in REMOTE_CODE_FILES:
        source = source_dir / name
        if not source.is_file():
            raise FileNotFoundError(f"remote-code file {source} is missing; cannot write a loadable checkpoint")
        if source.resolve() != (output_path / name).resolve():
            shutil.copyfile(source, output_path / name)
    config_path = output_path / "config.json"
    if config_path.is_file():  # absent for an unmerged adapter (a peft folder)
        model_type = json.loads(config_path.read_text(encoding="utf-8")).get("model_type")
        _merge_json(config_path, {"auto_map": model_auto_map(MODEL_TYPE_FAMILIES.get(model_type, "qwen2_vl"))})
    _merge_json(output_path / "processor_config.json", {"auto_map": PROCESSOR_AUTO_MAP})


def _merge_json(path: Path, update: dict[str, Any]) -> None:
    data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    data.update(update)
    path.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


class _TokenEstimate:
    def __init__(self, image_processor):
        self.image_processor = image_processor
        self.known: dict[int, int] = {}  # id(item) -> estimate, filled for the span of one look-ahead encode

    def __call__(self, sample: Any) -> int:
        known = self.known.get(id(sample))
        return known if known is not None else estimate_item_tokens(sample, self.image_processor)


class _CheckedEncode:
    """`SentenceTransformer.encode`, preceded by a check of all inputs and, where workers are enabled, with
    the batches it will form preprocessed ahead in threads so that the CPU work overlaps the forward passes.

    A class rather than a closure so the model stays picklable.
    """

    def __init__(self, model, embedder: "VLM2GeoVecEmbedder"):
        self.model = model
        self.embedder = embedder

    def __call__(self, inputs, *args, **kwargs):
        encode = type(self.model).encode
        batch = [inputs] if self.model.is_singular_input(inputs) else inputs
        if not isinstance(batch, (list, tuple)):
            return encode(self.model, inputs, *args, **kwargs)
        self.embedder.processor.check(batch, "inputs")  # every input, images decoded once: errors name the caller's index
        bound = inspect.signature(encode).bind_partial(self.model, inputs, *args, **kwargs).arguments
        workers = self.embedder.resolved_preprocess_workers(bound.get("device"))
        parallel = bound.get("pool") is not None or isinstance(bound.get("device"), list)
        if workers == 0 or parallel or len(batch) <= bound.get("batch_size", 32):
            return encode(self.model, inputs, *args, **kwargs)
        try:
            prompt = self.model._resolve_prompt(bound.get("prompt"), bound.get("prompt_name"))
        except Exception:  # a bad prompt name: let encode raise its own error
            return encode(self.model, inputs, *args, **kwargs)
        # The same order and batches as SentenceTransformer._inference forms (length-sorted, longest first).
        estimate = self.model._input_length
        lengths = [estimate(item) for item in batch]
        order = np.argsort([-length for length in lengths]).tolist()
        size = bound.get("batch_size", 32)
        batches = [[batch[i] for i in order[s : s + size]] for s in range(0, len(order), size)]
        # encode sorts by the same estimates: hand them over instead of computing each one twice (the items
        # stay referenced by `batch`, so their ids cannot be reused meanwhile)
        known = {id(item): length for item, length in zip(batch, lengths)} if isinstance(estimate, _TokenEstimate) else {}
        if known:
            estimate.known = known
        try:
            with _Prefetcher(self.embedder, batches, prompt or None, workers):
                return encode(self.model, inputs, *args, **kwargs)
        finally:
            if known:
                estimate.known = {}


PREPROCESS_BACKENDS = ("thread", "process")
_worker_processor: VLM2GeoVecProcessor | None = None  # set in each preprocessing process by its initializer


def _init_preprocess_process(processor_state: bytes) -> None:
    global _worker_processor
    torch.set_num_threads(1)  # one core per worker: the parent's forward keeps the rest
    _worker_processor = pickle.loads(processor_state)


def _preprocess_in_process(items: list[Any], instruction: str | None) -> dict[str, Any]:
    return dict(_worker_processor(items=items, instruction=instruction))


class _ProcessPool:
    """A spawn-context process pool kept across `encode` calls, rebuilt when the processor changes (its pickled
    state is the key, so e.g. a new `max_seq_length` reaches the workers). Spawned, not forked: forking a parent
    that holds CUDA, OpenMP or tokenizer threads can hang the child."""

    def __init__(self):
        self.key: tuple | None = None
        self.executor: ProcessPoolExecutor | None = None

    def get(self, processor: VLM2GeoVecProcessor, workers: int) -> ProcessPoolExecutor:
        state = pickle.dumps(processor)
        key = (workers, hashlib.sha256(state).hexdigest())
        if key != self.key:
            self.shutdown()
            self.executor = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                                initializer=_init_preprocess_process, initargs=(state,))
            self.key = key
        return self.executor

    def shutdown(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)
        self.executor, self.key = None, None


class _Prefetcher:
    """Preprocesses upcoming batches in worker threads or processes; `VLM2GeoVecEmbedder.preprocess` takes them
    when the requested batch is the expected one (same objects, same prompt) and computes directly otherwise."""

    def __init__(self, embedder: "VLM2GeoVecEmbedder", batches: list[list[Any]], prompt: str | None, workers: int):
        self.embedder, self.batches, self.prompt, self.workers = embedder, batches, prompt, workers
        self.pending: deque = deque()
        self.next_index = 0
        self.hits = 0  # batches served from the look-ahead (for tests and benchmarks)

    def __enter__(self):
        # the process pool outlives this call (its workers take seconds to start); a thread pool is ours to close
        self.owns_executor = self.embedder.preprocess_backend != "process"
        if self.owns_executor:
            self.executor: Executor = ThreadPoolExecutor(max_workers=self.workers,
                                                         thread_name_prefix="vlm2geovec-preprocess")
            self.preprocess = self._preprocess_in_thread
        else:
            self.executor = self.embedder._process_pool.get(self.embedder.processor, self.workers)
            self.preprocess = _preprocess_in_process
        for _ in range(2 * self.workers):  # bounded look-ahead keeps memory flat
            self._submit()
        self.embedder._prefetcher = self
        return self

    def __exit__(self, *exc):
        self.embedder._prefetcher = None
        for _, future in self.pending:
            future.cancel()
        if self.owns_executor:
            self.executor.shutdown(wait=True)
        return False

    def _preprocess_in_thread(self, items: list[Any], instruction: str | None) -> dict[str, Any]:
        return dict(self.embedder.processor(items=items, instruction=instruction))

    def _submit(self) -> None:
        if self.next_index < len(self.batches):
            items = self.batches[self.next_index]
            future = self.executor.submit(self.preprocess, items, self.prompt)
            self.pending.append((items, future))
            self.next_index += 1

    def take(self, inputs: list[Any], prompt: str | None):
        if not self.pending or prompt != self.prompt:
            return None
        items, future = self.pending[0]
        if len(items) != len(inputs) or any(a is not b for a, b in zip(items, inputs)):
            return None
        self.pending.popleft()
        self._submit()
        self.hits += 1
        return future.result()


class VLM2GeoVecEmbedder(InputModule):
    """Sentence-transformers module wrapping ``VLM2GeoVecModel`` + ``VLM2GeoVecProcessor``.

    Args:
        model: a loaded VLM2GeoVec model.
        processor: its processor.
    """

    config_file_name = "sentence_vlm2geovec_config.json"
    config_keys: list[str] = ["preprocess_workers", "preprocess_backend"]
    save_in_root = True

    def __init__(self, model: VLM2GeoVecModel, processor: VLM2GeoVecProcessor, preprocess_workers: int | None = None,
                 preprocess_backend: str = "thread"):
        super().__init__()
        check_same_family(model, processor)
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.preprocess_workers = preprocess_workers
        self.preprocess_backend = preprocess_backend
        self._prefetcher: _Prefetcher | None = None

    @property
    def preprocess_backend(self) -> str:
        """Where look-ahead preprocessing runs: ``"thread"`` (default; no start-up cost) or ``"process"`` (spawned
        worker processes, kept across calls: image decoding and resizing escape the GIL, at a few seconds of
        start-up; scripts then need the usual ``if __name__ == "__main__":`` guard)."""
        return self._preprocess_backend

    @preprocess_backend.setter
    def preprocess_backend(self, value: str) -> None:
        if value not in PREPROCESS_BACKENDS:
            raise ValueError(f"preprocess_backend must be one of {PREPROCESS_BACKENDS}; got {value!r}")
        self._preprocess_backend = value
        pool = self.__dict__.get("_process_pool_state")
        if value != "process" and pool is not None:
            pool.shutdown()

    @property
    def _process_pool(self) -> _ProcessPool:
        # Kept out of the module's state dict and attributes that deepcopy/pickle would try to copy.
        pool = self.__dict__.get("_process_pool_state")
        if pool is None:
            pool = self.__dict__["_process_pool_state"] = _ProcessPool()
            weakref.finalize(self, pool.shutdown)
        return pool

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__.copy()
        state = dict(state)
        state.pop("_process_pool_state", None)  # a pool of live processes cannot be copied
        return state

    def resolved_preprocess_workers(self, device: Any = None) -> int:
        """Threads that preprocess ahead during `encode`. ``None`` (default): on an accelerator, up to 8 (half
        the cores); on the CPU, 0, since the forward pass already uses every core there."""
        if self.preprocess_workers is not None:
            return max(0, int(self.preprocess_workers))
        device_type = torch.device(device).type if isinstance(device, (str, torch.device)) else self.model.device.type
        if device_type == "cpu":
            return 0
        return max(1, min(8, (os.cpu_count() or 2) // 2))

    @property
    def modalities(self) -> list:
        # "message" lets sentence-transformers pass mixed batches (text items beside image items) through;
        # our processor validates every item itself and rejects chat-style role/content dicts clearly.
        return ["text", "image", ("image", "text"), "message"]

    def on_model_ready(self, model) -> None:
        # ST sorts inputs by `BaseModel._input_length` before batching; for mixed image/text items a token
        # estimate groups much better than characters + pixels.
        model._input_length = _TokenEstimate(self.processor.image_processor)
        # ST preprocesses length-sorted batches, so a processor error would name a position in some batch.
        # Check every input first (image headers only), so errors name the caller's own index.
        if not isinstance(model.__dict__.get("encode"), _CheckedEncode):
            model.encode = _CheckedEncode(model, self)

    def preprocess(self, inputs: list[Any], prompt: str | None = None, **kwargs) -> dict[str, Any]:
        features = self._prefetcher.take(inputs, prompt or None) if self._prefetcher is not None else None
        if features is None:
            features = dict(self.processor(items=list(inputs), instruction=prompt or None))
        if "image_grid_thw" in features:
            # Lets sentence-transformers' GradCache slice pixel_values per sample (rows may hold 0..n images).
            vision_start = self.model.config.vision_start_token_id
            features["num_images_per_sample"] = (features["input_ids"] == vision_start).sum(dim=1)
        return features

    def forward(self, features: dict[str, Any], **kwargs) -> dict[str, Any]:
        model_inputs = {key: features[key] for key in MODEL_INPUT_KEYS if key in features}
        output = self.model(**model_inputs)
        features["sentence_embedding"] = output.embeddings.float()
        return features

    def get_embedding_dimension(self) -> int:
        config = self.model.config
        return config.embedding_dim or config.text_config.hidden_size

    get_sentence_embedding_dimension = get_embedding_dimension

    @property
    def max_seq_length(self) -> int | None:
        return self.processor.max_length

    @max_seq_length.setter
    def max_seq_length(self, value: int | None) -> None:
        self.processor.max_length = value

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        self.model.save_pretrained(output_path, safe_serialization=safe_serialization)
        self.processor.save_pretrained(output_path)
        self.save_config(output_path)
        write_remote_code(output_path)
        fix_weight_file_modes(output_path)  # also an unmerged adapter's adapter_model.safetensors

    @classmethod
    def load(
        cls,
        model_name_or_path: str,
        subfolder: str = "",
        token: bool | str | None = None,
        cache_folder: str | None = None,
        revision: str | None = None,
        local_files_only: bool = False,
        trust_remote_code: bool = False,
        model_kwargs: dict[str, Any] | None = None,
        processor_kwargs: dict[str, Any] | None = None,
        config_kwargs: dict[str, Any] | None = None,
        merge_adapter: bool | None = None,
        **kwargs,
    ) -> "VLM2GeoVecEmbedder":
        """Load a VLM2GeoVec checkpoint, or a LoRA adapter folder (one with ``adapter_config.json``).

        An adapter folder holds no base weights: the base model is loaded from the adapter's
        ``base_model_name_or_path`` (a relative path is resolved against the adapter folder first), the adapter
        is applied with ``peft.PeftModel.from_pretrained`` and, by default, merged into the weights for
        inference. Keep it unmerged (a trainable ``PeftModel``) with ``merge_adapter=False``, or from
        ``SentenceTransformer`` with ``model_kwargs={"merge_adapter": False}``; a Trainer checkpoint (a folder
        with ``trainer_state.json``) stays unmerged unless asked, so ``resume_from_checkpoint`` can load its
        state dict into the model being trained. Needs ``peft``.
        """
        check_local_folder(model_name_or_path)
        local_folder = os.path.join(os.fspath(model_name_or_path), subfolder)
        if os.path.isdir(local_folder):
            check_processor_files(local_folder)  # before minutes of weight loading, and named
        model_kwargs = dict(model_kwargs or {})
        requested_merge = model_kwargs.pop("merge_adapter", None)
        if merge_adapter is None:
            merge_adapter = requested_merge
        hub = dict(token=token, cache_dir=cache_folder, revision=revision, local_files_only=local_files_only)
        if subfolder:
            hub["subfolder"] = subfolder
        adapter_config = _find_adapter_config(model_name_or_path, hub)
        if adapter_config is not None and merge_adapter is None:
            # A Trainer checkpoint is reloaded to resume training: its state dict must keep the adapters.
            merge_adapter = not os.path.isfile(os.path.join(os.path.dirname(adapter_config), "trainer_state.json"))
        if adapter_config is None:
            # This file was loaded from the checkpoint, so its sibling classes are the checkpoint's own.
            model = VLM2GeoVecModel.from_pretrained(model_name_or_path, **hub, **(config_kwargs or {}), **model_kwargs)
        else:
            model = _load_adapter_model(model_name_or_path, adapter_config, hub, merge_adapter,
                                        {**(config_kwargs or {}), **model_kwargs})
        try:
            processor = VLM2GeoVecProcessor.from_pretrained(
                model_name_or_path, trust_remote_code=trust_remote_code, **hub, **(processor_kwargs or {})
            )
        except OSError:
            raise  # transformers' missing-file errors name the file
        except json.JSONDecodeError as error:  # the small files were parsed above: it is the vocabulary
            path = (os.path.join(local_folder, "tokenizer.json") if os.path.isdir(local_folder)
                    else model_name_or_path)
            raise ValueError(f"{path} is not valid JSON ({error.msg} at line {error.lineno}, column {error.colno}): "
                             f"{REPAIR}") from None
        except Exception as error:  # a tokenizer or image-processor file that parses but does not build
            raise ValueError(f"{model_name_or_path}: the processor files ({', '.join(PROCESSOR_FILES)}) could not "
                             f"be loaded ({type(error).__name__}: {error}): {REPAIR}") from error
        settings = cls.load_config(model_name_or_path, subfolder=subfolder, token=token, cache_folder=cache_folder,
                                   revision=revision, local_files_only=local_files_only)
        return cls(model, processor, preprocess_workers=settings.get("preprocess_workers"),
                   preprocess_backend=settings.get("preprocess_backend", "thread"))


ADAPTER_CONFIG_NAME = "adapter_config.json"


def check_same_family(model, processor) -> None:
    """A processor renders boxes and the chat for one backbone family; the model must be of that family."""
    config = getattr(model, "config", None)
    family = getattr(config, "backbone_family", None) or MODEL_TYPE_FAMILIES.get(getattr(config, "model_type", None))
    rendered = getattr(processor, "family_name", "qwen2_vl")
    if family is not None and family != rendered:
        raise ValueError(
            f"the processor renders items for the {rendered} backbone family but the model is {family}: their "
            f"vectors would be meaningless; save the processor with backbone_family={family!r} (or convert again)"
        )


def _find_adapter_config(model_name_or_path: str, hub: dict[str, Any]) -> str | None:
    """Path of the folder's ``adapter_config.json`` (local or downloaded from the Hub), or None."""
    if os.path.isdir(os.fspath(model_name_or_path)):
        path = os.path.join(os.fspath(model_name_or_path), hub.get("subfolder", ""), ADAPTER_CONFIG_NAME)
        return path if os.path.isfile(path) else None
    from transformers.utils import cached_file

    try:
        return cached_file(model_name_or_path, ADAPTER_CONFIG_NAME, _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False, **hub)
    except (OSError, ValueError):  # no such repository: let from_pretrained raise its own, clearer error
        return None


def _resolve_base(base: str, adapter_dir: str) -> str:
    """A relative ``base_model_name_or_path`` is tried against the adapter folder first, then used as given."""
    if not os.path.isabs(base):
        candidate = os.path.normpath(os.path.join(adapter_dir, base))
        if os.path.isdir(candidate):
            return candidate
    return base


def _load_adapter_model(model_name_or_path: str, adapter_config_file: str, hub: dict[str, Any], merge: bool,
                        model_kwargs: dict[str, Any]):
    try:
        from peft import PeftModel
    except ImportError as error:
        raise ImportError(
            f"{model_name_or_path} is a LoRA adapter checkpoint (it has {ADAPTER_CONFIG_NAME}); loading it needs "
            "peft: `pip install peft`. Or load the merged checkpoint written by vlm2geovec_train.lora.merge_and_save."
        ) from error
    with open(adapter_config_file, encoding="utf-8") as handle:
        base = json.load(handle).get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{adapter_config_file} names no base_model_name_or_path; cannot load the base model")
    base = _resolve_base(base, os.path.dirname(os.path.abspath(adapter_config_file)))
    # The base is another repository: the adapter's revision and subfolder do not apply to it.
    base_hub = {key: hub[key] for key in ("token", "cache_dir", "local_files_only")}
    model = VLM2GeoVecModel.from_pretrained(base, **base_hub, **model_kwargs)
    adapter_hub = {key: value for key, value in hub.items() if key != "local_files_only" and value is not None}
    model = PeftModel.from_pretrained(model, os.fspath(model_name_or_path), is_trainable=not merge, **adapter_hub)
    if merge:
        model = model.merge_and_unload()
    return model.eval() if merge else model


__all__ = ["VLM2GeoVecEmbedder", "check_processor_files", "check_same_family", "write_remote_code"]
