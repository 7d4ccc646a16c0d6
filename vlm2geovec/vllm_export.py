"""Serve a VLM2GeoVec checkpoint with vLLM: a native-transformers export and the requests that give our vectors.

`export_for_vllm` writes a folder that loads as the backbone's own transformers class (``Qwen2VLForConditionalGeneration``,
``Qwen2_5_VLForConditionalGeneration`` or ``Qwen3VLForConditionalGeneration``; no remote code), with

* a chat template that renders a conversation exactly as our processor renders an item (system = instruction,
  the family's default system turn, our ending and pooled token), so vLLM's chat-embedding API needs nothing else;
* a sentence-transformers pooling description (last token, then L2 normalisation) that vLLM's pooling runner reads;
* the tokenizer and the image processor settings of the checkpoint.

`vllm_prompts` and `openai_messages` turn our items (images, text, boxes, coordinates, instruction) into the two
request forms vLLM takes: offline ``LLM.embed`` prompts and the OpenAI-compatible ``/v1/embeddings`` messages. Boxes
and coordinates become the same text our processor renders, images are sent after our own image rules (alpha,
EXIF, 16-bit stretch) as lossless PNG, so vLLM's own preprocessing sees what ours would.

    vlm2geovec export vllm --model out/quickstart/model --out out/vllm-model
    vllm serve out/vllm-model --runner pooling
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

from PIL import Image

from processing_vlm2geovec import (
    BACKBONE_FAMILIES, IMAGE_TOKEN, PROMPT_STYLES, VISION_END, VISION_START, _styled_instruction, content_pieces,
)

NATIVE_CLASSES = {
    "qwen2_vl": ("Qwen2VLConfig", "Qwen2VLForConditionalGeneration", "Qwen2VLProcessor"),
    "qwen2_5_vl": ("Qwen2_5_VLConfig", "Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor"),
    "qwen3_vl": ("Qwen3VLConfig", "Qwen3VLForConditionalGeneration", "Qwen3VLProcessor"),
}
# Fields of our config that the backbone's own config does not have.
_OUR_CONFIG_FIELDS = ("pooling", "normalize", "embedding_dim", "input_format_version", "auto_map", "architectures",
                      "model_type", "transformers_version")
EXPORT_NOTE = "vlm2geovec_vllm_export.json"


def chat_template_for(family: str, style: str) -> str:
    """A Jinja chat template that renders system/user turns of text and images as our processor renders an item
    of ``family`` in prompt ``style``, ending with the style's pooled token."""
    spec, ending = BACKBONE_FAMILIES[family], PROMPT_STYLES[style]
    default_system = ending.default_instruction or spec.default_system_prompt
    default_turn = ""
    if default_system:
        default_turn = ("{% if messages[0]['role'] != 'system' %}<|im_start|>system\n" + default_system +
                        "<|im_end|>\n{% endif %}")
    # our ending starts with the user turn's "<|im_end|>\n", which the loop writes after every turn
    tail = ending.ending[len("<|im_end|>\n"):]
    return (
        default_turn +
        "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
        "{% if message['content'] is string %}{{ message['content'] }}"
        "{% else %}{% for content in message['content'] %}"
        "{% if content['type'] == 'image' or content['type'] == 'image_url' or 'image' in content %}"
        f"{VISION_START}{IMAGE_TOKEN}{VISION_END}"
        "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
        # an expression, not template text: Jinja as transformers and vLLM run it drops a template's final newline
        "{% endfor %}{{ " + repr(tail) + " }}"
    )


def export_for_vllm(model_dir: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Write ``out_dir``: the checkpoint at ``model_dir`` as its backbone's native transformers model, with the chat
    template and pooling that make vLLM's embeddings equal ours (see the module docstring)."""
    import transformers
    from safetensors.torch import save_file

    from vlm2geovec import load_model

    out = Path(out_dir)
    st_model = load_model(os.fspath(model_dir), device="cpu")
    embedder = st_model[0]
    model, processor = embedder.model, embedder.processor
    if hasattr(model, "merge_and_unload"):  # an unmerged adapter
        model = model.merge_and_unload()
    config = model.config
    family, style = config.backbone_family, processor.style_name
    if config.pooling != "last":
        raise ValueError(f"{model_dir}: pooling {config.pooling!r}; vLLM's pooling runner serves last-token pooling "
                         "here, so only pooling='last' checkpoints export")
    config_name, model_name, processor_name = NATIVE_CLASSES[family]
    settings = {key: value for key, value in config.to_dict().items() if key not in _OUR_CONFIG_FIELDS}
    # The language head is not used for embeddings; tying it to the token embedding keeps the export small.
    settings["tie_word_embeddings"] = True
    native_config = getattr(transformers, config_name)(**settings)
    native_config.architectures = [model_name]
    out.mkdir(parents=True, exist_ok=True)
    native_config.save_pretrained(out)
    state = {f"model.{key}": value.detach().to("cpu").contiguous() for key, value in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    processor.tokenizer.save_pretrained(out)
    image_processor = processor.image_processor
    image_processor.save_pretrained(out)
    _merge(out / "preprocessor_config.json", {"processor_class": processor_name})
    template = chat_template_for(family, style)
    (out / "chat_template.jinja").write_text(template, encoding="utf-8")
    _merge(out / "tokenizer_config.json", {"chat_template": template})
    hidden = config.text_config.hidden_size
    # sentence-transformers' description of the pooling: vLLM's pooling runner reads it (last token, normalised).
    (out / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ], indent=2) + "\n", encoding="utf-8")
    (out / "1_Pooling").mkdir(exist_ok=True)
    (out / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": hidden, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": False,
        "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False, "pooling_mode_lasttoken": True, "include_prompt": True,
    }, indent=2) + "\n", encoding="utf-8")
    (out / "2_Normalize").mkdir(exist_ok=True)
    note = {
        "exported_from": os.fspath(model_dir), "backbone_family": family, "prompt_style": style,
        "embedding_dim": config.embedding_dim, "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "serve": f"vllm serve {out} --runner pooling",
        "requests": "vlm2geovec.vllm_export.vllm_prompts (LLM.embed) / openai_messages (/v1/embeddings)",
    }
    if config.embedding_dim is not None:
        note["matryoshka"] = f"pass dimensions={config.embedding_dim} in each request (vLLM truncates, then normalises)"
    (out / EXPORT_NOTE).write_text(json.dumps(note, indent=2) + "\n", encoding="utf-8")
    readme = Path(model_dir) / "README.md"
    if readme.is_file():
        shutil.copyfile(readme, out / "README.md")
    return out


def _merge(path: Path, update: dict[str, Any]) -> None:
    data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    data.update(update)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------------------------------------------
def _user_content(parts: list[tuple[str, Any]], processor) -> list[dict[str, Any]]:
    """Our rendering of an item's parts as chat content (`content_pieces`): images as image parts, the rest as text
    parts; a separator joins the text part after it, which the template concatenates the same way."""
    content: list[dict[str, Any]] = []
    images = iter(value for kind, value in parts if kind == "image")
    pending = ""
    for kind, text, _ in content_pieces(parts, processor.coord_precision, processor.family_name,
                                        processor.resized_size):
        if kind == "separator":
            pending += text
        elif kind == "image":
            if pending:
                content.append({"type": "text", "text": pending})
                pending = ""
            content.append({"type": "image", "image": next(images)})
        else:
            content.append({"type": "text", "text": pending + text})
            pending = ""
    if pending:
        content.append({"type": "text", "text": pending})
    return content


def _conversation(parts, instruction: str | None, processor) -> list[dict[str, Any]]:
    style = PROMPT_STYLES[processor.style_name]
    system = _styled_instruction(instruction, style)
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": _user_content(parts, processor)})
    return messages


def _png_data_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def vllm_prompts(items: Sequence[Any], processor, instruction: str | None = None) -> list[dict[str, Any]]:
    """Offline requests for ``vllm.LLM(out_dir, runner="pooling").embed(prompts)``: one
    ``{"prompt": text, "multi_modal_data": {"image": [...]}}`` per item (images as RGB PIL images after our image
    rules). ``processor`` is the checkpoint's `VLM2GeoVecProcessor` (its family and settings decide the text)."""
    template = chat_template_for(processor.family_name, processor.style_name)
    prompts = []
    for parts in processor.normalize(items):
        # transformers' own template rendering, which vLLM's chat API uses too
        text = processor.tokenizer.apply_chat_template(_conversation(parts, instruction, processor),
                                                       chat_template=template, tokenize=False)
        images = [value for kind, value in parts if kind == "image"]
        prompt: dict[str, Any] = {"prompt": text}
        if images:
            prompt["multi_modal_data"] = {"image": images}
        prompts.append(prompt)
    return prompts


def openai_messages(items: Sequence[Any], processor, instruction: str | None = None) -> list[list[dict[str, Any]]]:
    """Request bodies' ``messages`` for vLLM's OpenAI-compatible ``/v1/embeddings`` (one conversation per item;
    images as ``image_url`` PNG data URIs): ``{"model": ..., "messages": m, "encoding_format": "float"}``."""
    conversations = []
    for parts in processor.normalize(items):
        messages = _conversation(parts, instruction, processor)
        for message in messages:
            if isinstance(message["content"], list):
                message["content"] = [
                    {"type": "image_url", "image_url": {"url": _png_data_uri(part["image"])}}
                    if part["type"] == "image" else part for part in message["content"]
                ]
        conversations.append(messages)
    return conversations


__all__ = ["chat_template_for", "export_for_vllm", "openai_messages", "vllm_prompts"]
