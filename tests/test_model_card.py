"""model_card.md is the rendered template, and its examples are what the processor really produces."""

from __future__ import annotations

from tests.conftest import REPO_ROOT, make_image
from vlm2geovec.model_card import render_model_card


def test_repository_model_card_is_rendered_template():
    assert (REPO_ROOT / "model_card.md").read_text(encoding="utf-8") == render_model_card(), (
        "model_card.md is stale: regenerate it with "
        "python -c \"from vlm2geovec.model_card import render_model_card as r; open('model_card.md','w').write(r())\""
    )


def code_blocks(text: str) -> list[str]:
    """Bodies of fenced blocks, each ending with a newline."""
    blocks, current = [], None
    for line in text.splitlines(keepends=True):
        if line.startswith("```"):
            if current is None:
                current = []
            else:
                blocks.append("".join(current))
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def test_card_examples_are_the_real_rendering(processor):
    card = render_model_card()
    blocks = code_blocks(card)
    image = make_image(400, 400)
    full = processor.render(
        [{"image": image, "bbox": [10, 20, 110, 220], "coords": (29.69, -81.99), "text": "a tree"}],
        instruction="Find the region.",
    )[0]
    text_only = processor.render(["a harbour"])[0]
    assert full + "\n" in blocks
    assert text_only + "\n" in blocks
    assert "`<|box_start|>(25,50),(275,550)<|box_end|>`" in card
    assert "`29.6900°N, 81.9900°W`" in card and "`33.8568°S, 151.2153°E`" in card


def test_card_family_examples_are_the_real_rendering():
    """The backbone-family section: each family's rendering, at the Hub checkpoints' pixel budgets."""
    from processing_vlm2geovec import BACKBONE_FAMILIES
    from vlm2geovec.checkpoint import QWEN3_VL_EMBEDDING_IMAGE_SIZE, build_processor

    card = render_model_card()
    blocks = code_blocks(card)
    image = make_image(400, 400)
    item = {"image": image, "bbox": [10, 20, 110, 220], "coords": (29.69, -81.99), "text": "a tree"}

    def hub_processor(family, **kwargs):
        low, high = BACKBONE_FAMILIES[family].pixel_budget
        return build_processor(family=family, image_size={"shortest_edge": low, "longest_edge": high}, **kwargs)

    assert hub_processor("qwen2_5_vl").render([item], instruction="Find the region.")[0] + "\n" in blocks
    assert hub_processor("qwen3_vl").render([item])[0] + "\n" in blocks
    embedding_style = build_processor(family="qwen3_vl", image_size=QWEN3_VL_EMBEDDING_IMAGE_SIZE,
                                      prompt_style="qwen3_vl_embedding")
    assert embedding_style.render(["a harbour"])[0] in blocks  # it ends with the generation prompt's newline
    for family, box in (("qwen2_vl", "<|box_start|>(25,50),(275,550)<|box_end|>"),
                        ("qwen2_5_vl", '{"bbox_2d": [10, 20, 108, 216]}'),
                        ("qwen3_vl", '{"bbox_2d": [25, 50, 275, 550]}')):
        assert box in hub_processor(family).render([{"image": image, "bbox": [10, 20, 110, 220]}])[0]
        row = next(line for line in card.splitlines() if line.startswith(f"| `{family}` |"))
        low, high = BACKBONE_FAMILIES[family].pixel_budget
        assert f"`{box}`" in row and f"{low:,}–{high:,}" in row
