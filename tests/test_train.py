"""Training recipe: exact resume, RSMEB evaluation during training, configs."""

from __future__ import annotations

import pytest

from tests.conftest import REPO_ROOT

TASKS = ["S2Lite-SceneCls", "S2Lite-VQA"]


@pytest.fixture(scope="module")
def lite_dir(tmp_path_factory):
    from rsmeb_eval.builders.lite import build_lite
    from rsmeb_eval.dataset_io import write_dataset

    tasks = {name: data for name, data in build_lite(seed=0).items() if name in TASKS}
    return write_dataset(tmp_path_factory.mktemp("lite") / "rsmeb-lite", tasks, "RSMEB-lite subset")


def config(nano_dir, lite_dir, **overrides):
    from vlm2geovec_train.recipe import TrainConfig

    return TrainConfig.from_yaml(REPO_ROOT / "train" / "configs" / "nano.yaml", model=str(nano_dir),
                                 data=str(lite_dir), tasks=TASKS, batch_size=8, logging_steps=1, **overrides)


def losses(trainer) -> dict[int, float]:
    return {entry["step"]: entry["loss"] for entry in trainer.state.log_history if "loss" in entry}


@pytest.mark.slow
def test_resume_continues_with_the_same_losses(nano_dir, lite_dir, tmp_path):
    from vlm2geovec_train.recipe import train

    _, full, _ = train(config(nano_dir, lite_dir, max_steps=8, save_steps=4), tmp_path / "full")
    _, first, _ = train(config(nano_dir, lite_dir, max_steps=8, save_steps=4), tmp_path / "interrupted")
    checkpoint = tmp_path / "interrupted" / "trainer" / "checkpoint-4"
    assert checkpoint.is_dir()
    _, resumed, _ = train(config(nano_dir, lite_dir, max_steps=8, save_steps=4), tmp_path / "resumed",
                          resume_from_checkpoint=str(checkpoint))
    uninterrupted, after_resume = losses(full), losses(resumed)
    assert sorted(after_resume) == list(range(1, 9))  # steps 1-4 come back from the checkpoint's trainer state
    for step in (5, 6, 7, 8):
        assert after_resume[step] == pytest.approx(uninterrupted[step], rel=1e-4, abs=1e-4), step
    assert losses(first) == pytest.approx(uninterrupted)  # and the same seed reproduces the whole run


def test_rsmeb_evaluator_during_training(nano_dir, lite_dir, tmp_path):
    from vlm2geovec_train.recipe import train

    _, trainer, _ = train(config(nano_dir, lite_dir, max_steps=4, eval_steps=4), tmp_path / "run")
    evals = [entry for entry in trainer.state.log_history if "eval_rsmeb_overall" in entry]
    assert len(evals) == 1 and 0.0 <= evals[0]["eval_rsmeb_overall"] <= 1.0
    assert "eval_rsmeb_task_S2Lite-VQA" in evals[0]


def test_config_rejects_unknown_settings(tmp_path):
    from vlm2geovec_train.recipe import TrainConfig

    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rate: 0.001\nlearnig_rate: 0.1\n")
    with pytest.raises(ValueError, match="learnig_rate"):
        TrainConfig.from_yaml(bad)


def test_lora_training_writes_adapter_and_merged_checkpoints(nano_dir, lite_dir, tmp_path):
    import numpy as np

    from vlm2geovec import load_model
    from vlm2geovec_train.recipe import train

    model, _, _ = train(config(nano_dir, lite_dir, max_steps=3, lora={"r": 4, "alpha": 8, "dropout": 0.0}),
                        tmp_path / "lora")
    assert (tmp_path / "lora" / "adapter" / "adapter_config.json").is_file()
    assert (tmp_path / "lora" / "model.safetensors").is_file()
    items = ["a satellite image of open water", {"coords": (12.0, 34.0)}]
    merged = load_model(str(tmp_path / "lora"), device="cpu").encode(items)
    adapter = load_model(str(tmp_path / "lora" / "adapter"), device="cpu").encode(items)
    base = load_model(str(nano_dir), device="cpu").encode(items)
    assert np.abs(merged - adapter).max() <= 1e-4
    assert np.abs(merged - base).max() > 1e-4  # the adapter learned something


def test_gradient_checkpointing_gives_the_same_first_loss(nano_dir, lite_dir, tmp_path):
    from vlm2geovec_train.recipe import train

    _, plain, _ = train(config(nano_dir, lite_dir, max_steps=2), tmp_path / "plain")
    _, checkpointed, _ = train(config(nano_dir, lite_dir, max_steps=2, gradient_checkpointing=True), tmp_path / "ckpt")
    assert losses(checkpointed)[1] == pytest.approx(losses(plain)[1], rel=1e-5)
    assert losses(checkpointed)[2] == pytest.approx(losses(plain)[2], rel=1e-3)
