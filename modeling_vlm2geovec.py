"""VLM2GeoVec: one embedding for interleaved images, text, boxes and coordinates.

A Qwen2-VL backbone whose last-token (``<|endoftext|>``) hidden state, L2-normalised, is the embedding.
This file is self-contained: it is copied into every checkpoint and runs as remote code
(``AutoModel.from_pretrained(path, trust_remote_code=True)``). It holds no loss and no distributed code.

Reads top to bottom: output dataclass, config, pooling mixin, model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers.conversion_mapping import get_checkpoint_conversion_mapping, register_checkpoint_conversion_mapping
from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLConfig
from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLModel
from transformers.utils import ModelOutput

POOLING_MODES = ("last", "mean")


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


class VLM2GeoVecConfig(Qwen2VLConfig):
    r"""Qwen2-VL hyperparameters plus what changes the embedding.

    Args:
        pooling (`str`, *optional*, defaults to `"last"`):
            ``"last"``: hidden state of the last attended token (the processor ends every item with
            ``<|endoftext|>``); ``"mean"``: mean over attended tokens.
        normalize (`bool`, *optional*, defaults to `True`):
            L2-normalise the embedding.
        embedding_dim (`int`, *optional*):
            Keep only the first ``embedding_dim`` dimensions (Matryoshka), before normalising.
        input_format_version (`int`, *optional*, defaults to 1):
            Version of the processor's rendering of boxes and coordinates the weights were trained with.

    Example:

    ```python
    >>> config = VLM2GeoVecConfig(pooling="last", normalize=True, embedding_dim=512)
    ```
    """

    model_type = "vlm2geovec"

    pooling: str = "last"
    normalize: bool = True
    embedding_dim: int | None = None
    input_format_version: int = 1

    def __post_init__(self, **kwargs):
        if self.pooling not in POOLING_MODES:
            raise ValueError(f"pooling must be one of {POOLING_MODES}, got {self.pooling!r}")
        super().__post_init__(**kwargs)
        if self.embedding_dim is not None and not 0 < self.embedding_dim <= self.text_config.hidden_size:
            raise ValueError(
                f"embedding_dim must lie in [1, {self.text_config.hidden_size}], got {self.embedding_dim}"
            )


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


class VLM2GeoVecModel(VLM2GeoVecEmbeddingMixin, Qwen2VLModel):
    """Qwen2-VL embedder.

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
    _keys_to_ignore_on_load_unexpected = [r"^lm_head\."]


# Without this, a subclass of Qwen2VLModel does not inherit Qwen2-VL's checkpoint key renaming, and loading a
# Hub Qwen2-VL checkpoint would leave the whole language model randomly initialised (with only a warning).
register_checkpoint_conversion_mapping(
    "VLM2GeoVecModel", get_checkpoint_conversion_mapping("Qwen2VLModel"), overwrite=True
)

__all__ = ["VLM2GeoVecConfig", "VLM2GeoVecModel", "VLM2GeoVecOutput", "pool_embeddings", "last_token_indices"]
