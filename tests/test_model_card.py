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
