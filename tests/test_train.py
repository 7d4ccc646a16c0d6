"""Training recipe: exact resume, RSMEB evaluation during training, configs."""

from __future__ import annotations

import pytest

from tests.conftest import REPO_ROOT

TASKS = ["S2Lite-SceneCls", "S2Lite-VQA"]
GROUNDING = ["NEONLite-RefExp", "NEONLite-RegionCaption"]


@pytest.fixture(scope="module")
def lite_tasks():
    from rsmeb_eval.builders.lite import build_lite

    return build_lite(seed=0)


@pytest.fixture(scope="module")
def lite_dir(lite_tasks, tmp_path_factory):
    from rsmeb_eval.dataset_io import write_dataset

    tasks = {name: data for name, data in lite_tasks.items() if name in TASKS}
    return write_dataset(tmp_path_factory.mktemp("lite") / "rsmeb-lite", tasks, "RSMEB-lite subset")


@pytest.fixture(scope="module")
def grounding_dir(lite_tasks, tmp_path_factory):
    from rsmeb_eval.dataset_io import write_dataset

    tasks = {name: data for name, data in lite_tasks.items() if name in GROUNDING + ["S2Lite-SceneCls"]}
    return write_dataset(tmp_path_factory.mktemp("grounding") / "rsmeb-lite", tasks, "RSMEB-lite grounding subset")


def config(nano_dir, lite_dir, **overrides):
    from vlm2geovec_train.recipe import TrainConfig

    return TrainConfig.from_yaml(REPO_ROOT / "train" / "configs" / "nano.yaml", model=str(nano_dir),
                                 data=str(lite_dir), tasks=TASKS, batch_size=8, logging_steps=1, **overrides)


def losses(trainer) -> dict[int, float]:
    return {entry["step"]: entry["loss"] for entry in trainer.state.log_history if "loss" in entry}


@pytest.mark.slow
def test_resume_continues_with_the_same_losses(nano_dir, lite_dir, tmp_path, monkeypatch):
    from sentence_transformers import SentenceTransformerTrainer

    from vlm2geovec_train.recipe import train

    # Count the optimisation steps each run really executes: a run that ignored the checkpoint would start
    # from step 1 with the same seed and repeat the uninterrupted losses, so equal losses alone prove nothing.
    executed: list[int] = []
    original = SentenceTransformerTrainer.training_step

    def counting_step(self, *args, **kwargs):
        executed.append(self.state.global_step + 1)  # the step this call computes
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SentenceTransformerTrainer, "training_step", counting_step)
    _, full, _ = train(config(nano_dir, lite_dir, max_steps=8, save_steps=4), tmp_path / "full")
    assert executed == list(range(1, 9))
    checkpoint = tmp_path / "full" / "trainer" / "checkpoint-4"
    assert checkpoint.is_dir()
    executed.clear()
    _, resumed, _ = train(config(nano_dir, lite_dir, max_steps=8, save_steps=4), tmp_path / "resumed",
                          resume_from_checkpoint=str(checkpoint))
    assert executed == [5, 6, 7, 8]  # only the steps after the checkpoint ran
    assert resumed.state.global_step == 8
    uninterrupted, after_resume = losses(full), losses(resumed)
    assert sorted(after_resume) == list(range(1, 9))  # steps 1-4 come back from the checkpoint's trainer state
    for step in (5, 6, 7, 8):  # the weights, optimiser, scheduler and data position were all restored
        assert after_resume[step] == pytest.approx(uninterrupted[step], rel=1e-4, abs=1e-4), step
    assert after_resume[5] != pytest.approx(uninterrupted[1], rel=1e-3)  # not a fresh start with the same seed


def test_rsmeb_evaluator_during_training_equals_rsmeb_evaluate(nano_dir, lite_dir, tmp_path):
    from rsmeb_eval.encoders import SentenceTransformerEncoder
    from rsmeb_eval.evaluator import evaluate
    from vlm2geovec_train.recipe import train

    # eval_steps == max_steps: the in-training evaluation sees the final weights, which are also saved.
    _, trainer, _ = train(config(nano_dir, lite_dir, max_steps=3, eval_steps=3), tmp_path / "run")
    evals = [entry for entry in trainer.state.log_history if "eval_rsmeb_overall" in entry]
    assert len(evals) == 1 and evals[0]["step"] == 3
    logged = evals[0]
    # The same weights through `rsmeb_eval.evaluate` (what `vlm2geovec rsmeb eval` runs) give the same scores.
    reference = evaluate(SentenceTransformerEncoder(tmp_path / "run"), lite_dir, tasks=TASKS, show_progress_bar=False)
    for name in TASKS:
        assert logged[f"eval_rsmeb_task_{name}"] == pytest.approx(reference["tasks"][name]["score"], abs=1e-9), name
    for family, score in reference["families"].items():
        assert logged[f"eval_rsmeb_family_{family}"] == pytest.approx(score, abs=1e-9), family
    assert logged["eval_rsmeb_overall"] == pytest.approx(reference["overall"], abs=1e-9)


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


def test_gradient_checkpointing_is_set_up_used_and_exact(nano_dir, lite_dir, tmp_path, monkeypatch, images):
    import copy

    import torch
    import transformers.modeling_utils as modeling_utils
    from transformers.modeling_layers import GradientCheckpointingLayer

    from tests.test_losses import batch_features, grads
    from vlm2geovec_train.losses import MultimodalMNRLoss
    from vlm2geovec_train.recipe import train

    # transformers binds `checkpoint` from this module when checkpointing is enabled: count what goes through it.
    calls: list[int] = []
    real_checkpoint = modeling_utils.checkpoint

    def counting_checkpoint(*args, **kwargs):
        calls.append(1)
        return real_checkpoint(*args, **kwargs)

    monkeypatch.setattr(modeling_utils, "checkpoint", counting_checkpoint)
    model, _, _ = train(config(nano_dir, lite_dir, max_steps=1, gradient_checkpointing=True), tmp_path / "ckpt")
    layers = [m for m in model[0].model.modules() if isinstance(m, GradientCheckpointingLayer)]
    assert layers and all(layer.gradient_checkpointing for layer in layers)  # vision blocks and decoder layers
    assert len(calls) >= len(layers)  # the training step's forward went through checkpoint

    # Same weights, checkpointing off: the gradients of one loss step are the same.
    checkpointed = model.train()
    plain = copy.deepcopy(model)
    plain[0].model.gradient_checkpointing_disable()
    results = {}
    for name, net in (("plain", plain), ("checkpointed", checkpointed)):
        calls.clear()
        net.zero_grad()
        torch.manual_seed(0)
        features, labels = batch_features(net, images)
        MultimodalMNRLoss(net, temperature=0.02)(features, labels).backward()
        results[name] = (len(calls), grads(net))
    assert results["plain"][0] == 0 and results["checkpointed"][0] >= len(layers)
    g_plain, g_ckpt = results["plain"][1], results["checkpointed"][1]
    assert g_plain.keys() == g_ckpt.keys() and len(g_plain) > 40
    for name in g_plain:  # recomputation repeats the same float32 ops: equal up to rounding
        scale = g_plain[name].abs().max().item() + 1e-12
        assert (g_plain[name] - g_ckpt[name]).abs().max().item() <= 1e-5 * scale + 1e-8, name


def test_listwise_grounding_rows_take_their_negatives_from_the_same_window(grounding_dir):
    from datasets import Image

    from rsmeb_eval.registry import get_tasks
    from vlm2geovec_train.data import NEGATIVE_COLUMN, content_id, row_to_training_item, training_datasets

    datasets, prompts = training_datasets(grounding_dir, GROUNDING + ["S2Lite-SceneCls"],
                                          n_negatives={"NEONLite-RefExp": 7, "*": 1})
    refexp = datasets["NEONLite-RefExp"]
    assert [c for c in refexp.column_names if c.startswith("negative_")] == [NEGATIVE_COLUMN.format(i) for i in range(1, 8)]
    assert len(datasets["NEONLite-RegionCaption"].column_names) == 4  # anchor, positive, negative_1, label
    assert set(prompts["NEONLite-RefExp"]) == {"anchor", "positive"} | {NEGATIVE_COLUMN.format(i) for i in range(1, 8)}
    queries, corpus = get_tasks(["NEONLite-RefExp"])[0].load(grounding_dir, "train")
    assert len(refexp) == len(queries)
    crowns = {len(q["candidate_ids"]) for q in queries}
    assert min(crowns) < 8 and max(crowns) == 8  # some windows have fewer crowns: their draws repeat
    # A query's candidates are crowns of its own window: (window, text) -> the content ids of its other crowns.
    boxes = {row["id"]: row for row in corpus}
    others = {}
    for q in queries:
        key = (q["image"]["bytes"], q["text"])
        others[key] = {content_id(row_to_training_item(boxes[c])) for c in q["candidate_ids"] if c not in q["positive_ids"]}
    raw = refexp.cast_column("anchor", {**refexp.features["anchor"], "image": Image(decode=False)})
    for row in raw.select(range(300)):
        other_crowns = others[(row["anchor"]["image"]["bytes"], row["anchor"]["text"])]
        negatives = row["label"][1:]
        assert row["label"][0] not in other_crowns
        assert set(negatives) == other_crowns  # all of the window's other crowns, repeated to fill 7 columns


def test_rows_per_task_mapping_repeats_small_tasks_with_fresh_negatives(grounding_dir):
    from datasets import Image

    from vlm2geovec_train.data import training_datasets

    capped, _ = training_datasets(grounding_dir, ["S2Lite-SceneCls", "NEONLite-RegionCaption"], max_rows_per_task=100)
    assert {name: len(d) for name, d in capped.items()} == {"S2Lite-SceneCls": 100, "NEONLite-RegionCaption": 100}
    sized, _ = training_datasets(grounding_dir, ["S2Lite-SceneCls", "NEONLite-RegionCaption"],
                                 max_rows_per_task={"NEONLite-RegionCaption": 3000, "*": 150})
    assert {name: len(d) for name, d in sized.items()} == {"S2Lite-SceneCls": 150, "NEONLite-RegionCaption": 3000}
    region = sized["NEONLite-RegionCaption"]
    region = region.cast_column("anchor", {**region.features["anchor"], "image": Image(decode=False)})
    # 1,124 training queries: each appears 2-3 times, and its negatives are drawn afresh on each pass.
    by_query: dict[str, list] = {}
    for row in region:
        by_query.setdefault(repr((row["anchor"]["image"]["bytes"], row["anchor"]["bbox"])), []).append(row["label"][1])
    assert max(len(v) for v in by_query.values()) == 3
    assert sum(len(set(v)) > 1 for v in by_query.values()) > 0.5 * len(by_query)


def test_per_task_settings_name_the_bad_entry(grounding_dir):
    from vlm2geovec_train.data import training_datasets

    with pytest.raises(ValueError, match=r"n_negatives\['NEONLite-RefExp'\]"):
        training_datasets(grounding_dir, ["NEONLite-RefExp"], n_negatives={"NEONLite-RefExp": "all"})
    with pytest.raises(ValueError, match="max_rows_per_task: expected"):
        training_datasets(grounding_dir, ["NEONLite-RefExp"], max_rows_per_task=[10])
    with pytest.raises(ValueError, match=r"max_rows_per_task\['NEONLite-RefExp'\]"):
        training_datasets(grounding_dir, ["NEONLite-RefExp"], max_rows_per_task={"*": -5})


def test_quickstart_presets_train_region_captions_and_leave_referring_expressions_out(grounding_dir):
    """The presets' data settings (issue 16): RefExp gets no rows, RegionCaption its window's other captions as 7
    negatives, every other task all its rows (`"*": None`); a task list left without rows is named."""
    from rsmeb_eval.registry import get_tasks
    from vlm2geovec_train.data import training_datasets
    from vlm2geovec_train.quickstart import PRESETS

    tasks = GROUNDING + ["S2Lite-SceneCls"]
    for preset in PRESETS.values():
        datasets, _ = training_datasets(grounding_dir, tasks, n_negatives=preset["n_negatives"],
                                        max_rows_per_task=preset["max_rows_per_task"])
        every_row = {name: len(get_tasks([name])[0].load(grounding_dir, "train")[0]) for name in datasets}
        assert set(datasets) == {"NEONLite-RegionCaption", "S2Lite-SceneCls"}
        assert {name: len(d) for name, d in datasets.items()} == every_row
        assert "negative_7" in datasets["NEONLite-RegionCaption"].column_names
        assert "negative_2" not in datasets["S2Lite-SceneCls"].column_names
        assert preset["batch_sampler"] == "same_image"
        with pytest.raises(ValueError, match=r"no training rows for NEONLite-RefExp \(.*0 rows"):
            training_datasets(grounding_dir, ["NEONLite-RefExp"], max_rows_per_task=preset["max_rows_per_task"])


def test_full_preset_ranks_each_neighbour_row_against_its_other_neighbours(lite_tasks, tmp_path):
    """`full` trains S2Lite-Neighbour as it is tested: the target against the 3 other neighbours of the same chip
    (quick: one of them)."""
    from datasets import Image

    from rsmeb_eval.dataset_io import write_dataset
    from rsmeb_eval.registry import get_tasks
    from vlm2geovec_train.data import content_id, row_to_training_item, training_datasets
    from vlm2geovec_train.quickstart import PRESETS

    data_dir = write_dataset(tmp_path / "rsmeb-lite", {"S2Lite-Neighbour": lite_tasks["S2Lite-Neighbour"]}, "subset")
    queries, corpus = get_tasks(["S2Lite-Neighbour"])[0].load(data_dir, "train")
    chips = {row["id"]: content_id(row_to_training_item(row)) for row in corpus}
    others = {(q["image"]["bytes"], q["text"]): {chips[c] for c in q["candidate_ids"] if c not in q["positive_ids"]}
              for q in queries}
    assert len(others) == len(queries) > 100 and {len(o) for o in others.values()} == {3}
    for preset, n_negatives in (("full", 3), ("quick", 1)):
        datasets, _ = training_datasets(data_dir, ["S2Lite-Neighbour"], n_negatives=PRESETS[preset]["n_negatives"],
                                        max_rows_per_task=PRESETS[preset]["max_rows_per_task"])
        rows = datasets["S2Lite-Neighbour"]
        assert len(rows) == len(queries)
        assert sum(c.startswith("negative_") for c in rows.column_names) == n_negatives
        raw = rows.cast_column("anchor", {**rows.features["anchor"], "image": Image(decode=False)})
        for row in raw:
            other_chips = others[(row["anchor"]["image"]["bytes"], row["anchor"]["text"])]
            assert row["label"][0] not in other_chips
            negatives = set(row["label"][1:])
            assert negatives == other_chips if preset == "full" else negatives < other_chips


def test_same_image_batches_hold_whole_windows(grounding_dir):
    from datasets import Image

    from vlm2geovec_train.data import anchor_image_groups, same_image_batch_sampler, training_datasets

    datasets, _ = training_datasets(grounding_dir, ["NEONLite-RefExp", "S2Lite-SceneCls"],
                                    max_rows_per_task={"NEONLite-RefExp": 2500, "*": 100})
    refexp = datasets["NEONLite-RefExp"]
    raw = refexp.cast_column("anchor", {**refexp.features["anchor"], "image": Image(decode=False)})
    windows = [row["image"]["bytes"] for row in raw["anchor"]]
    keys = anchor_image_groups(refexp)
    assert len(set(windows)) == len({key[0] for key in keys}) > 100
    # A query repeated to fill 2,500 rows goes to another group than its first copy.
    assert max(sum(1 for k in keys if k == key) for key in set(keys)) <= 15

    def batches(epoch, drop_last=False):
        sampler = same_image_batch_sampler(refexp, batch_size=32, drop_last=drop_last, seed=3)
        sampler.set_epoch(epoch)
        return list(sampler)

    first = batches(0)
    assert sorted(i for batch in first for i in batch) == list(range(len(refexp)))  # every row once an epoch
    assert first == batches(0) and first != batches(1)  # seeded; reshuffled each epoch
    assert len(batches(0, drop_last=True)) == len(refexp) // 32
    # Contiguous groups: the windows of a batch are few, and a batch's rows of one window are all of that group
    # (but the first and last group of a batch may be cut).
    windows_per_batch = []
    for batch in first[:-1]:
        groups = [keys[i] for i in batch]
        changes = sum(1 for a, b in zip(groups, groups[1:]) if a != b)
        assert changes == len(set(groups)) - 1
        windows_per_batch.append(len({key[0] for key in groups}))
    # 32 random rows of ~220 windows would come from ~30 windows; grouped, from a handful.
    assert sum(windows_per_batch) / len(windows_per_batch) < 8
    # Random order for rows without an image anchor: geography rows get one group each.
    geo = datasets["S2Lite-SceneCls"]  # image anchors, one row per chip: groups of one
    assert len(set(anchor_image_groups(geo))) == len(geo)


def test_recipe_settings_reach_the_data_and_the_trainer(nano_dir, grounding_dir, tmp_path, monkeypatch):
    """Per-task negatives/rows and the same-image sampler are recipe settings (YAML), not only Python options:
    a 2-step run gets the listwise rows and the sampler, and bad values are named."""
    from sentence_transformers import SentenceTransformerTrainer

    from vlm2geovec_train import recipe
    from vlm2geovec_train.data import same_image_batch_sampler

    seen = {}
    original = SentenceTransformerTrainer.__init__

    def spy(self, *args, **kwargs):
        seen["args"], seen["datasets"] = kwargs["args"], kwargs["train_dataset"]
        original(self, *args, **kwargs)

    monkeypatch.setattr(SentenceTransformerTrainer, "__init__", spy)
    yaml_path = tmp_path / "r.yaml"
    yaml_path.write_text("n_negatives: {NEONLite-RefExp: 3, '*': 1}\nmax_rows_per_task: {'*': 40}\n"
                         "batch_sampler: same_image\nmax_steps: 2\nbatch_size: 8\ntemperature: 0.05\n")
    cfg = recipe.TrainConfig.from_yaml(yaml_path, model=str(nano_dir), data=str(grounding_dir), tasks=GROUNDING)
    recipe.train(cfg, tmp_path / "out")
    assert seen["args"].batch_sampler is same_image_batch_sampler
    refexp, captions = seen["datasets"]["NEONLite-RefExp"], seen["datasets"]["NEONLite-RegionCaption"]
    assert len(refexp) == len(captions) == 40
    assert "negative_3" in refexp.column_names and "negative_2" not in captions.column_names
    bad = tmp_path / "bad.yaml"
    bad.write_text("batch_sampler: by_image\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: batch_sampler must be one of \['default', 'same_image'\]; "
                                         r"got 'by_image'"):
        recipe.TrainConfig.from_yaml(bad)
    with pytest.raises(ValueError, match="both set: keep one"):
        recipe.train(recipe.TrainConfig(model=str(nano_dir), data=str(grounding_dir), batch_sampler="same_image",
                                        extra_args={"batch_sampler": same_image_batch_sampler}), tmp_path / "o2")
