"""VLM2GeoVec: one embedding for interleaved images, text, boxes and coordinates.

A Qwen-VL backbone (Qwen2-VL, Qwen2.5-VL or Qwen3-VL: transformers' own model classes, wrapped, not copied) whose
last-token hidden state, L2-normalised, is the embedding.
This file is self-contained: it is copied into every checkpoint and runs as remote code
(``AutoModel.from_pretrained(path, trust_remote_code=True)``). It holds no loss and no distributed code.

Reads top to bottom: checks, output dataclass, configs, pooling, the embedding and loading mixins, one model class per
backbone family.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, PretrainedConfig
from transformers.conversion_mapping import get_checkpoint_conversion_mapping, register_checkpoint_conversion_mapping
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLConfig
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLModel
from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLConfig
from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLModel
from transformers.models.qwen3_vl.configuration_qwen3_vl import Qwen3VLConfig
from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLModel
from transformers.utils import ModelOutput

try:  # as remote code, next to the other checkpoint files
    from .processing_vlm2geovec import REPAIR, read_json_file
except ImportError:  # installed as top-level modules
    from processing_vlm2geovec import REPAIR, read_json_file

POOLING_MODES = ("last", "mean")

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
# Our model_type per backbone family ("vlm2geovec" is Qwen2-VL: checkpoints written before other families existed).
FAMILY_MODEL_TYPES = {"qwen2_vl": "vlm2geovec", "qwen2_5_vl": "vlm2geovec_qwen2_5_vl", "qwen3_vl": "vlm2geovec_qwen3_vl"}
MODEL_TYPE_FAMILIES = {model_type: family for family, model_type in FAMILY_MODEL_TYPES.items()}
# config.json model types the model classes load: our checkpoints, and the backbones (`vlm2geovec convert`).
LOADABLE_MODEL_TYPES = tuple(FAMILY_MODEL_TYPES.values()) + tuple(FAMILY_MODEL_TYPES)
MAKE_A_CHECKPOINT = "build one with `vlm2geovec nano` or `vlm2geovec convert`"
INVALID_CONFIG = "invalid VLM2GeoVec configuration"
_SHOWN_KEYS = 5  # keys quoted in a load error; the count says how many more


# ---------------------------------------------------------------------------------------------------------------
# Checks before and after loading. Here rather than in the package so the file stays self-contained remote code.


def looks_like_local_path(name: str | os.PathLike) -> bool:
    """Whether ``name`` can only mean a local folder, never a Hub repository id.

    A Hub id is ``NAME`` or ``ORG/NAME``. A string is taken as a local path when it is an ``os.PathLike``,
    starts with ``.``, ``/`` or ``~``, is absolute, contains a backslash, has more than one ``/``, or when its
    first component (``out`` of ``out/nano``) exists as a local folder. Anything else may be a Hub id and is
    left to the Hub (or its offline cache).
    """
    if not isinstance(name, str):
        return True
    if name.startswith((".", "/", "~")) or os.path.isabs(name) or "\\" in name or name.count("/") > 1:
        return True
    return "/" in name and os.path.isdir(os.path.expanduser(name.split("/", 1)[0]))


def check_local_folder(name: str | os.PathLike, allow_file: bool = False) -> None:
    """Refuse at once a local-looking path (see `looks_like_local_path`) that is not a folder, instead of
    letting the Hub client retry a repository that cannot exist (minutes without a network). ``allow_file``
    accepts an existing file too (a config may be loaded from its JSON file)."""
    path = os.path.expanduser(os.fspath(name))
    if os.path.isdir(path) or (allow_file and os.path.isfile(path)) or not looks_like_local_path(name):
        return
    if os.path.exists(path):
        raise NotADirectoryError(
            f"{name}: is a file, not a checkpoint folder (pass the folder that holds {CONFIG_NAME})"
        )
    raise FileNotFoundError(
        f"{name}: no such local folder (a Hub id looks like ORG/NAME; create a local model with "
        f"`vlm2geovec nano --out {name}`)"
    )


def check_config_dict(config: dict, source: str) -> None:
    """``config.json`` contents must describe a model this class can load."""
    if not isinstance(config, dict):
        raise ValueError(f"{source} holds a JSON {type(config).__name__}, not an object: {REPAIR}")
    model_type = config.get("model_type")
    if model_type not in LOADABLE_MODEL_TYPES:
        raise ValueError(
            f"{source}: model_type {model_type!r} is not a VLM2GeoVec checkpoint (expected one of "
            f"{list(FAMILY_MODEL_TYPES.values())}, or {list(FAMILY_MODEL_TYPES)} for a backbone); {MAKE_A_CHECKPOINT}"
        )


def check_config_file(folder: str) -> None:
    """``folder/config.json`` exists, is JSON and names a loadable model type."""
    path = os.path.join(folder, CONFIG_NAME)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: this folder is not a VLM2GeoVec checkpoint; {MAKE_A_CHECKPOINT}")
    check_config_dict(read_json_file(path, CONFIG_NAME), path)


def check_safetensors_file(path: str) -> None:
    """Read only the header of a ``.safetensors`` file and check that it describes exactly the bytes on disk, so a
    truncated or garbage file is named here instead of failing deep in the reader."""

    def damaged(reason: str) -> ValueError:
        return ValueError(f"{path} is not a complete safetensors file ({reason}): {REPAIR}")

    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise damaged(f"{size} bytes, shorter than the 8-byte header length")
        header_length = int.from_bytes(prefix, "little")
        if header_length > size - 8:
            raise damaged(f"its header claims {header_length} bytes, the whole file has {size}")
        raw = handle.read(header_length)
    try:
        header = json.loads(raw.decode("utf-8"))
        ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
    except (UnicodeDecodeError, ValueError, TypeError, KeyError, IndexError, AttributeError):
        raise damaged("its header is not a safetensors header") from None
    expected = 8 + header_length + max(ends, default=0)
    if expected != size:
        raise damaged(f"{size} bytes on disk, its header describes {expected}")


def check_weight_files(folder: str) -> None:
    """The folder's weights exist and every ``.safetensors`` file is complete (a sharded index is followed)."""
    single, index = os.path.join(folder, WEIGHTS_NAME), os.path.join(folder, WEIGHTS_INDEX_NAME)
    if os.path.isfile(single):
        check_safetensors_file(single)
    elif os.path.isfile(index):
        weight_map = read_json_file(index, WEIGHTS_INDEX_NAME).get("weight_map")
        if not isinstance(weight_map, dict):
            raise ValueError(f"{index} has no weight_map object: {REPAIR}")
        for shard in sorted(set(weight_map.values())):
            shard_path = os.path.join(folder, str(shard))
            if not os.path.isfile(shard_path):
                raise FileNotFoundError(f"{shard_path} not found (listed in {index}): {REPAIR}")
            check_safetensors_file(shard_path)
    elif not any(os.path.isfile(os.path.join(folder, name))
                 for name in ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        raise FileNotFoundError(f"{single} not found: the checkpoint has no weights; {REPAIR}")


def _weights(count: int) -> str:
    return f"{count} weight" + ("" if count == 1 else "s")


def _quote_keys(keys) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:_SHOWN_KEYS])
    return shown + (f", ... ({len(keys) - _SHOWN_KEYS} more)" if len(keys) > _SHOWN_KEYS else "")


def describe_load_problems(info: dict, allow_missing: bool, allow_mismatched: bool) -> list[str]:
    """The parts of a transformers loading report that would leave weights random or unused, as sentences."""
    problems = []
    if not allow_missing:
        missing, unexpected = info.get("missing_keys") or (), info.get("unexpected_keys") or ()
        if missing:
            problems.append(f"missing from the file: {_weights(len(missing))} ({_quote_keys(missing)})")
        if unexpected:
            problems.append(f"not used by the model: {_weights(len(unexpected))} ({_quote_keys(unexpected)})")
    mismatched = info.get("mismatched_keys") or ()
    if mismatched and not allow_mismatched:
        shapes = sorted(f"{key} (file {tuple(file_shape)}, model {tuple(model_shape)})"
                        for key, file_shape, model_shape in mismatched)
        problems.append(f"another shape in the file: {_weights(len(mismatched))} ({_quote_keys(shapes)})")
    if not allow_missing and info.get("error_msgs"):
        problems.append("errors: " + "; ".join(map(str, info["error_msgs"][:_SHOWN_KEYS])))
    return problems


def _loaded_from_sentence_transformers_fallback() -> bool:
    """Whether sentence-transformers is building its generic Transformer + pooling modules (what it does for a
    folder without ``modules.json``): that wrapper cannot run this model and would not pool it the right way."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "_load_default_modules" and str(frame.f_globals.get("__name__", "")).startswith(
            "sentence_transformers"
        ):
            return True
        frame = frame.f_back
    return False


def _default_file_mode() -> int:
    """What ``open()`` gives a new file under this process's umask (0644 under the usual 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def fix_weight_file_modes(folder: str | os.PathLike) -> None:
    """safetensors writes through a private temporary file, so weights come out 0600 while every other file of a
    checkpoint is 0644; give ``*.safetensors`` files in ``folder`` the mode any new file gets under the umask."""
    mode = _default_file_mode()
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if name.endswith(".safetensors") and os.path.isfile(path):
            os.chmod(path, mode)


@dataclass
class VLM2GeoVecOutput(ModelOutput):
    """
    Args:
        embeddings (`torch.FloatTensor` of shape `(batch_size, dim)`):
            Pooled (and, with ``config.normalize``, L2-normalised) embeddings; ``dim`` is
            ``config.embedding_dim`` (Matryoshka truncation) or the backbone's hidden size.
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, sequence_length, hidden_size)`, *optional*):
            Backbone token states, returned with ``output_hidden_states=True``.
    """

    embeddings: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None


class _EmbeddingConfigMixin:
    r"""What every family's config adds to its backbone's config: the embedding fields (declared on each family's
    class), and checks on load and on those fields.

    Args:
        pooling (`str`, *optional*, defaults to `"last"`):
            ``"last"``: hidden state of the last attended token (the processor ends every item with the token to
            pool); ``"mean"``: mean over attended tokens.
        normalize (`bool`, *optional*, defaults to `True`):
            L2-normalise the embedding.
        embedding_dim (`int`, *optional*):
            Keep only the first ``embedding_dim`` dimensions (Matryoshka), before normalising.
        input_format_version (`int`, *optional*, defaults to 1):
            Version of the processor's rendering of boxes and coordinates the weights were trained with.
    """

    @classmethod
    def get_config_dict(cls, pretrained_model_name_or_path, **kwargs):
        config_dict, unused = super().get_config_dict(pretrained_model_name_or_path, **kwargs)
        name = os.fspath(pretrained_model_name_or_path)
        where = name if os.path.isfile(name) else os.path.join(name, kwargs.get("subfolder") or "", CONFIG_NAME)
        # transformers returns {} for a repository or folder without config.json, and this class would then build
        # 72B-sized defaults (killed for memory before any weight is read).
        if not config_dict:
            raise FileNotFoundError(f"{where} not found: this is not a VLM2GeoVec checkpoint; {MAKE_A_CHECKPOINT}")
        check_config_dict(config_dict, where)
        family = MODEL_TYPE_FAMILIES.get(config_dict.get("model_type"), config_dict.get("model_type"))
        if family != cls.backbone_family:
            raise ValueError(
                f"{where}: a {family} checkpoint, but {cls.__name__} is the {cls.backbone_family} class; load it with "
                f"AutoModel/AutoConfig (trust_remote_code=True) or {FAMILY_CLASS_NAMES.get(family, ('?',))[0]}"
            )
        return config_dict, unused

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        check_local_folder(pretrained_model_name_or_path, allow_file=True)
        name = os.fspath(pretrained_model_name_or_path)
        folder = os.path.join(name, kwargs.get("subfolder") or "")
        if os.path.isdir(folder):
            check_config_file(folder)
        path = name if os.path.isfile(name) else os.path.join(folder, CONFIG_NAME)
        try:
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        except (ValueError, TypeError) as error:
            # A field that fails validation (e.g. num_hidden_layers without matching layer_types): name the file.
            if path in str(error):
                raise
            message = str(error) if str(error).startswith(INVALID_CONFIG) else f"{INVALID_CONFIG}: {error}"
            raise ValueError(f"{path}: {message}. Fix the file or re-save the checkpoint") from error

    def __post_init__(self, **kwargs):
        if self.pooling not in POOLING_MODES:
            raise ValueError(f"pooling must be one of {POOLING_MODES}, got {self.pooling!r}")
        try:
            super().__post_init__(**kwargs)
        except ValueError:
            raise
        except Exception as error:  # huggingface_hub's strict-dataclass validation errors are no ValueError
            raise ValueError(f"{INVALID_CONFIG} (config.json): {error}") from error
        if self.embedding_dim is not None and not 0 < self.embedding_dim <= self.text_config.hidden_size:
            raise ValueError(
                f"embedding_dim must lie in [1, {self.text_config.hidden_size}], got {self.embedding_dim}"
            )


class VLM2GeoVecConfig(_EmbeddingConfigMixin, Qwen2VLConfig):
    r"""Qwen2-VL hyperparameters plus what changes the embedding (``backbone_family = "qwen2_vl"``; the embedding
    fields are documented in `_EmbeddingConfigMixin`).

    Example:

    ```python
    >>> config = VLM2GeoVecConfig(pooling="last", normalize=True, embedding_dim=512)
    ```
    """

    model_type = "vlm2geovec"
    backbone_family = "qwen2_vl"

    # transformers turns every config class into its own dataclass: each family's class declares the embedding
    # fields itself (a plain mixin's annotations would not become fields).
    pooling: str = "last"
    normalize: bool = True
    embedding_dim: int | None = None
    input_format_version: int = 1


class VLM2GeoVecQwen2_5VLConfig(_EmbeddingConfigMixin, Qwen2_5_VLConfig):
    r"""Qwen2.5-VL hyperparameters plus what changes the embedding (``backbone_family = "qwen2_5_vl"``; the
    embedding fields as in `VLM2GeoVecConfig`)."""

    model_type = "vlm2geovec_qwen2_5_vl"
    backbone_family = "qwen2_5_vl"

    pooling: str = "last"
    normalize: bool = True
    embedding_dim: int | None = None
    input_format_version: int = 1


class VLM2GeoVecQwen3VLConfig(_EmbeddingConfigMixin, Qwen3VLConfig):
    r"""Qwen3-VL hyperparameters plus what changes the embedding (``backbone_family = "qwen3_vl"``; the embedding
    fields as in `VLM2GeoVecConfig`); also the family of Qwen3-VL-Embedding checkpoints."""

    model_type = "vlm2geovec_qwen3_vl"
    backbone_family = "qwen3_vl"

    pooling: str = "last"
    normalize: bool = True
    embedding_dim: int | None = None
    input_format_version: int = 1


def last_token_indices(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last attended token per row; correct for left padding, right padding and none."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (attention_mask.long() * (positions + 1)).argmax(dim=1)


def pool_embeddings(
    hidden: torch.Tensor,
    attention_mask: torch.Tensor,
    pooling: str = "last",
    normalize: bool = True,
    dim: int | None = None,
) -> torch.Tensor:
    """Pool ``(batch, seq, hidden)`` states into ``(batch, dim)`` embeddings."""
    if pooling == "last":
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        pooled = hidden[rows, last_token_indices(attention_mask)]
    elif pooling == "mean":
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
    else:
        raise ValueError(f"pooling must be one of {POOLING_MODES}, got {pooling!r}")
    if dim is not None:
        pooled = pooled[:, :dim]
    if normalize:
        # Normalise in float32: bf16 norms of 1536-d vectors are visibly off.
        pooled = F.normalize(pooled.float(), p=2, dim=-1).to(hidden.dtype)
    return pooled


class VLM2GeoVecEmbeddingMixin:
    """Turns any Qwen-VL backbone's forward into an embedding forward. A new backbone (e.g. Qwen2.5-VL) is
    ``class X(VLM2GeoVecEmbeddingMixin, Qwen2_5_VLModel)`` with a matching config; nothing else changes."""

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_grid_thw: torch.LongTensor | None = None,
        mm_token_type_ids: torch.IntTensor | None = None,
        embedding_dim: int | None = None,
        output_hidden_states: bool = False,
        packed: bool = False,
        **kwargs,
    ) -> VLM2GeoVecOutput:
        r"""
        Args:
            input_ids, attention_mask, pixel_values, image_grid_thw, mm_token_type_ids:
                As returned by ``VLM2GeoVecProcessor``.
            embedding_dim (`int`, *optional*):
                Matryoshka truncation for this call; overrides ``config.embedding_dim``.
            output_hidden_states (`bool`, *optional*, defaults to `False`):
                Also return the backbone's last hidden state.
            packed (`bool`, *optional*, defaults to `False`):
                Run the language model on one packed sequence of the batch's real tokens (no padding computed;
                see `pack_language_model`). Same vectors as the padded forward, up to float rounding.
        """
        if attention_mask is None:
            if input_ids is None:
                raise ValueError("VLM2GeoVec needs input_ids or an attention_mask to find the last token")
            attention_mask = torch.ones_like(input_ids)
        if pixel_values is not None and mm_token_type_ids is None and input_ids is not None:
            # Multimodal RoPE needs to know which tokens are image tokens.
            mm_token_type_ids = (input_ids == self.config.image_token_id).to(torch.int32)
        # Each batch is a fresh set of sequences: never reuse rope deltas cached by an earlier call.
        self.rope_deltas = None
        with pack_language_model(self, attention_mask) if packed else contextlib.nullcontext():
            outputs = super().forward(
                input_ids=input_ids,
                attention_mask=attention_mask,
                pixel_values=pixel_values,
                image_grid_thw=image_grid_thw,
                mm_token_type_ids=mm_token_type_ids,
                use_cache=False,
                return_dict=True,
                **kwargs,
            )
        hidden = outputs.last_hidden_state
        dim = embedding_dim if embedding_dim is not None else self.config.embedding_dim
        embeddings = pool_embeddings(hidden, attention_mask, self.config.pooling, self.config.normalize, dim)
        return VLM2GeoVecOutput(embeddings=embeddings, last_hidden_state=hidden if output_hidden_states else None)


# ---------------------------------------------------------------------------------------------------------------
# Packed language model (opt-in, ``model(..., packed=True)``): no padding token is computed. The backbone's own
# forward still runs unchanged (vision tower, placeholder scatter, M-RoPE index, Qwen3-VL deepstack); two hooks on its
# language model turn the padded (batch, seq) inputs into one packed (1, real tokens) sequence and back. Attention
# stays inside each item through transformers' packed-sequence support: text positions that restart at 0 per item
# (the first of four position rows) give a block-diagonal causal mask (SDPA, eager, FlexAttention) or varlen
# flash-attention; the M-RoPE rows are each item's own rope index, as the padded forward computes it. Where the
# language model runs SDPA, the packed call runs it item by item instead (`varlen_sdpa_attention`): one dense
# block-diagonal mask over the whole pack would cost (sum of lengths)^2 per layer, more than the padding saved.

VARLEN_SDPA = "vlm2geovec_varlen_sdpa"


def varlen_sdpa_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """transformers' SDPA attention on each item of a packed (1, heads, tokens, head_dim) sequence, causal inside
    the item and nothing across items; the item bounds are ``cu_seq_lens_q`` (as flash-attention's varlen takes
    them). Without them (an unpacked call) it is plain SDPA."""
    bounds = kwargs.get("cu_seq_lens_q")
    if bounds is None or query.shape[0] != 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    pieces = []
    for start, end in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        piece, _ = sdpa_attention_forward(module, query[:, :, start:end], key[:, :, start:end],
                                          value[:, :, start:end], None, dropout=dropout, scaling=scaling,
                                          is_causal=True)
        pieces.append(piece)
    return torch.cat(pieces, dim=1), None  # (1, tokens, heads, head_dim), as SDPA returns it


AttentionInterface.register(VARLEN_SDPA, varlen_sdpa_attention)


def pack_language_model_inputs(kwargs: dict, attention_mask: torch.Tensor) -> dict:
    """The language model's padded keyword inputs as one packed sequence of the attended tokens."""
    keep = attention_mask.bool()
    embeds = kwargs["inputs_embeds"]
    if tuple(keep.shape) != tuple(embeds.shape[:2]):
        raise ValueError(f"packed forward: attention_mask has shape {tuple(keep.shape)}, the inputs "
                         f"{tuple(embeds.shape[:2])}")
    keep = keep.to(embeds.device)
    text_positions = keep.long().cumsum(-1) - 1  # restart at 0 in every item: marks where items begin
    rope_positions = kwargs.get("position_ids")
    if rope_positions is None:  # text-only batch: the model would use 0..seq-1 on all three M-RoPE axes
        rope_positions = text_positions.unsqueeze(0).expand(3, -1, -1)
    elif rope_positions.ndim == 2:
        rope_positions = rope_positions.unsqueeze(0).expand(3, -1, -1)
    elif rope_positions.shape[0] == 4:
        text_positions, rope_positions = rope_positions[0], rope_positions[1:]
    packed = dict(kwargs)
    packed["inputs_embeds"] = embeds[keep].unsqueeze(0)
    packed["position_ids"] = torch.cat([text_positions[keep].unsqueeze(0), rope_positions[:, keep]]).unsqueeze(1)
    packed["attention_mask"] = None  # with packed positions, transformers builds the per-item causal mask
    bounds = F.pad(keep.sum(1).cumsum(0), (1, 0)).to(torch.int32)  # item bounds in the pack, for varlen kernels
    packed["cu_seq_lens_q"] = packed["cu_seq_lens_k"] = bounds
    packed["max_length_q"] = packed["max_length_k"] = int(keep.sum(1).max())
    if kwargs.get("visual_pos_masks") is not None:  # Qwen3-VL deepstack: same tokens, same order
        packed["visual_pos_masks"] = kwargs["visual_pos_masks"].to(keep.device)[keep].unsqueeze(0)
    return packed


class pack_language_model:  # noqa: N801 - used as a context manager, like torch.no_grad
    """Within this context, ``model``'s language model runs the attended tokens of ``attention_mask`` (batch, seq)
    as one packed sequence and hands back padded (batch, seq, hidden) states (zeros at padding). A language model
    on SDPA runs `varlen_sdpa_attention` meanwhile; flash-attention takes the pack as varlen, eager a dense mask."""

    def __init__(self, model, attention_mask: torch.Tensor):
        self.language_model, self.attention_mask, self.handles = model.language_model, attention_mask, []
        self.text_config, self.attention = self.language_model.config, None

    def _pack(self, module, args, kwargs):
        if args:
            raise TypeError("packed forward: the language model must be called with keyword arguments")
        return args, pack_language_model_inputs(kwargs, self.attention_mask)

    def _unpack(self, module, args, kwargs, output):
        packed = output.last_hidden_state
        keep = self.attention_mask.bool().to(packed.device)
        padded = packed.new_zeros(*keep.shape, packed.shape[-1])
        padded[keep] = packed[0]
        output.last_hidden_state = padded
        return output

    def __enter__(self):
        self.handles = [self.language_model.register_forward_pre_hook(self._pack, with_kwargs=True),
                        self.language_model.register_forward_hook(self._unpack, with_kwargs=True)]
        if self.text_config._attn_implementation == "sdpa":
            self.attention = "sdpa"
            self.text_config._attn_implementation = VARLEN_SDPA
        return self

    def __exit__(self, *exc):
        if self.attention is not None:
            self.text_config._attn_implementation, self.attention = self.attention, None
        for handle in self.handles:
            handle.remove()
        self.handles = []
        return False


class _StrictLoadingMixin:
    """``from_pretrained`` that refuses to leave weights random or unused, and family dispatch."""

    _keys_to_ignore_on_load_unexpected = [r"^lm_head\."]

    @classmethod
    def _family_class(cls, name: str | None, kwargs: dict):
        """The model class for the checkpoint's family when ``cls`` is another family's (``VLM2GeoVecModel``
        loads every family's checkpoints; a family class loads only its own)."""
        if name is None or kwargs.get("config") is not None:
            return cls
        folder = os.path.join(name, kwargs.get("subfolder") or "")
        path = os.path.join(folder, CONFIG_NAME)
        if os.path.isfile(path):
            config = read_json_file(path, CONFIG_NAME)
        elif looks_like_local_path(name):
            return cls  # the loader below names what is missing
        else:  # a Hub id: its config.json (cached by the Hub client, so the load below does not fetch it again)
            hub = {key: kwargs[key] for key in ("cache_dir", "revision", "token", "local_files_only", "subfolder",
                                                 "force_download", "proxies") if key in kwargs}
            try:
                config, _ = PretrainedConfig.get_config_dict(name, **hub)
            except (OSError, ValueError):
                return cls  # let the load below raise its own error
        family = MODEL_TYPE_FAMILIES.get(config.get("model_type"), config.get("model_type")) if isinstance(config, dict) else None
        target = FAMILY_MODEL_CLASSES.get(family)
        if target is None or target is cls:
            return cls
        if cls is not VLM2GeoVecModel:
            raise ValueError(f"{path}: a {family} checkpoint, but {cls.__name__} is the "
                             f"{cls.config_class.backbone_family} class; load it with {target.__name__} or AutoModel")
        return target

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, allow_missing_weights: bool = False,
                        **kwargs):
        """transformers' ``from_pretrained``, strict: every weight the model has must come from the checkpoint and
        every tensor in the checkpoint must be used, or a ``ValueError`` names the folder and the keys.

        A local folder is checked before any model is built: ``config.json`` present, valid and of a VLM2GeoVec
        (or Qwen2-VL) model type, and the ``.safetensors`` files complete.

        Args:
            allow_missing_weights (`bool`, *optional*, defaults to `False`):
                Initialise from a partial checkpoint on purpose: missing and unused weights are allowed (transformers
                still prints its load report). Shapes that differ still raise unless ``ignore_mismatched_sizes=True``.
            output_loading_info (`bool`, *optional*):
                As in transformers: return ``(model, info)`` and leave the check of missing and unused keys to the
                caller (``vlm2geovec convert`` does).
        """
        name = os.fspath(pretrained_model_name_or_path) if pretrained_model_name_or_path is not None else None
        target = cls._family_class(name, kwargs)
        if target is not cls:
            return target.from_pretrained(pretrained_model_name_or_path, *model_args,
                                          allow_missing_weights=allow_missing_weights, **kwargs)
        if name is not None and _loaded_from_sentence_transformers_fallback():
            raise FileNotFoundError(
                f"{os.path.join(name, 'modules.json')} not found: without it sentence-transformers wraps VLM2GeoVec in "
                "its generic Transformer + pooling modules, which cannot run it; restore modules.json (re-save the "
                "checkpoint with `save_checkpoint`, or copy the folder again)"
            )
        if name is not None:
            check_local_folder(name)
            folder = os.path.join(name, kwargs.get("subfolder") or "")
            if os.path.isdir(folder):
                if kwargs.get("config") is None or os.path.isfile(os.path.join(folder, CONFIG_NAME)):
                    check_config_file(folder)
                if kwargs.get("state_dict") is None and kwargs.get("gguf_file") is None:
                    check_weight_files(folder)
        wants_info = kwargs.pop("output_loading_info", False)
        allow_mismatched = kwargs.pop("ignore_mismatched_sizes", False)
        try:
            # Ask for shape mismatches in the report rather than transformers' "look at the above report" error.
            model, info = super().from_pretrained(pretrained_model_name_or_path, *model_args, output_loading_info=True,
                                                  ignore_mismatched_sizes=True, **kwargs)
        except Exception as error:
            if type(error).__name__ != "SafetensorError":  # the weights reader's own errors do not name the file
                raise
            raise ValueError(f"{name}: the weights could not be read ({error}): {REPAIR}") from error
        problems = describe_load_problems(info, allow_missing=allow_missing_weights or wants_info,
                                          allow_mismatched=allow_mismatched)
        if problems:
            raise ValueError(
                f"{name}: the weights do not match the model that config.json describes, loading would leave weights "
                f"random or unused: " + "; ".join(problems) + ". Check that config.json and the weights belong "
                "together (re-save or re-convert the checkpoint); to start from a partial checkpoint on purpose, pass "
                "allow_missing_weights=True."
            )
        return (model, info) if wants_info else model

    def save_pretrained(self, save_directory, *args, **kwargs):
        super().save_pretrained(save_directory, *args, **kwargs)
        if os.path.isdir(save_directory):
            fix_weight_file_modes(save_directory)


class VLM2GeoVecModel(_StrictLoadingMixin, VLM2GeoVecEmbeddingMixin, Qwen2VLModel):
    """Qwen2-VL embedder; ``VLM2GeoVecModel.from_pretrained`` also loads the other families' checkpoints (it
    returns that family's class).

    Loads any Qwen2-VL checkpoint, old (``model.layers.*``/``visual.*``) or new
    (``model.language_model.*``/``model.visual.*``) key layout; ``lm_head`` is dropped.

    Example:

    ```python
    >>> from transformers import AutoModel, AutoProcessor
    >>> model = AutoModel.from_pretrained("path/to/vlm2geovec", trust_remote_code=True)
    >>> processor = AutoProcessor.from_pretrained("path/to/vlm2geovec", trust_remote_code=True)
    >>> inputs = processor(items=[{"text": "a river delta"}, {"coords": (29.69, -81.99)}])
    >>> model(**inputs).embeddings.shape
    torch.Size([2, 1536])
    ```
    """

    config_class = VLM2GeoVecConfig


class VLM2GeoVecQwen2_5VLModel(_StrictLoadingMixin, VLM2GeoVecEmbeddingMixin, Qwen2_5_VLModel):
    """Qwen2.5-VL embedder (``model.language_model.*``/``model.visual.*`` and legacy key layouts)."""

    config_class = VLM2GeoVecQwen2_5VLConfig


class VLM2GeoVecQwen3VLModel(_StrictLoadingMixin, VLM2GeoVecEmbeddingMixin, Qwen3VLModel):
    """Qwen3-VL embedder; also loads Qwen3-VL-Embedding checkpoints (``vlm2geovec convert``)."""

    config_class = VLM2GeoVecQwen3VLConfig


FAMILY_MODEL_CLASSES = {
    "qwen2_vl": VLM2GeoVecModel,
    "qwen2_5_vl": VLM2GeoVecQwen2_5VLModel,
    "qwen3_vl": VLM2GeoVecQwen3VLModel,
}
FAMILY_CONFIG_CLASSES = {family: model.config_class for family, model in FAMILY_MODEL_CLASSES.items()}
FAMILY_CLASS_NAMES = {family: (model.__name__, model.config_class.__name__) for family, model in FAMILY_MODEL_CLASSES.items()}


def model_auto_map(family: str) -> dict[str, str]:
    """``config.json``'s ``auto_map`` for a family's checkpoint."""
    model_name, config_name = FAMILY_CLASS_NAMES[family]
    return {"AutoConfig": f"modeling_vlm2geovec.{config_name}", "AutoModel": f"modeling_vlm2geovec.{model_name}"}


# Without this, a subclass of a backbone model does not inherit its checkpoint key renaming, and loading a Hub
# checkpoint in the legacy layout would leave the whole language model randomly initialised (with only a warning).
for _family_model, _backbone in ((VLM2GeoVecModel, "Qwen2VLModel"), (VLM2GeoVecQwen2_5VLModel, "Qwen2_5_VLModel"),
                                 (VLM2GeoVecQwen3VLModel, "Qwen3VLModel")):
    _mapping = get_checkpoint_conversion_mapping(_backbone)
    if _mapping:
        register_checkpoint_conversion_mapping(_family_model.__name__, _mapping, overwrite=True)

__all__ = [
    "FAMILY_CONFIG_CLASSES",
    "FAMILY_MODEL_CLASSES",
    "FAMILY_MODEL_TYPES",
    "VLM2GeoVecConfig",
    "VLM2GeoVecModel",
    "VLM2GeoVecQwen2_5VLConfig",
    "VLM2GeoVecQwen2_5VLModel",
    "VLM2GeoVecQwen3VLConfig",
    "VLM2GeoVecQwen3VLModel",
    "model_auto_map",
    "VLM2GeoVecOutput",
    "check_config_file",
    "check_local_folder",
    "check_weight_files",
    "fix_weight_file_modes",
    "last_token_indices",
    "looks_like_local_path",
    "pack_language_model",
    "pack_language_model_inputs",
    "pool_embeddings",
    "varlen_sdpa_attention",
    "read_json_file",
]
