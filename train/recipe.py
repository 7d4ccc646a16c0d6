"""Contrastive training, step by step, through the sentence-transformers Trainer.

    vlm2geovec train --config train/configs/nano.yaml --out out/nano-trained
    vlm2geovec quickstart --out out/quickstart

1. load the model   2. (optionally) freeze the token embedding   3. data: one dataset per RSMEB task
4. loss             5. training arguments                        6. trainer: train   7. save
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlm2geovec_train.data import same_image_batch_sampler


@dataclass
class TrainConfig:
    """One training run. Every field can be set in the YAML file or overridden on the command line."""

    # model
    model: str = "out/nano"  # VLM2GeoVec folder or Hub id
    freeze_token_embedding: bool = True  # 97% of nano's parameters and only a few rows are ever used
    lora: dict[str, Any] | None = None  # LoraSettings fields (r, alpha, dropout, use_dora, include_vision...); None: full
    # data
    data: str = "out/rsmeb-lite"
    tasks: list[str] | None = None  # default: every task with a train split in `data`
    # hard negatives per row, for every task or per task: {task: n, "*": default} (e.g. the other crowns of a window)
    n_negatives: int | dict[str, int] = 1
    # an int caps every task's rows; {task: rows, "*": default} gives each task exactly that many (a small task's
    # queries repeat with fresh negatives), which sets its share of the batches in the proportional task mix
    max_rows_per_task: int | dict[str, int] | None = None
    batch_sampler: str = "default"  # "same_image": a window's/chip's queries share batches (in-batch hard negatives)
    # loss
    loss: str = "mnrl"  # "mnrl" or "cached_mnrl" (GradCache)
    temperature: float = 0.02
    mini_batch_size: int = 8  # GradCache only
    # optimisation
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.05
    max_steps: int = 1200
    seed: int = 0
    bf16: bool = False
    gradient_checkpointing: bool = False
    # bookkeeping
    logging_steps: int = 25
    save_steps: int | None = None
    eval_steps: int | None = None  # evaluate on RSMEB `eval_split` every N steps (None: only at the end, by the caller)
    eval_split: str = "test"
    eval_tasks: list[str] | None = None
    extra_args: dict[str, Any] = field(default_factory=dict)  # any other SentenceTransformerTrainingArguments

    def __post_init__(self):
        if self.batch_sampler not in BATCH_SAMPLERS:
            raise ValueError(f"batch_sampler must be one of {sorted(BATCH_SAMPLERS)}; got {self.batch_sampler!r}")
        if self.batch_sampler != "default" and "batch_sampler" in self.extra_args:
            raise ValueError(f"batch_sampler={self.batch_sampler!r} and extra_args.batch_sampler both set: keep one")

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, **overrides: Any) -> "TrainConfig":
        import yaml

        values = yaml.safe_load(Path(path).read_text()) or {}
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"{path}: unknown training settings {sorted(unknown)}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**values)
        except ValueError as error:  # a bad setting's value, named with the file it came from
            raise ValueError(f"{path}: {error}") from None


# batch_sampler setting -> the sampler given to sentence-transformers (None: its default)
BATCH_SAMPLERS = {"default": None, "same_image": same_image_batch_sampler}


def training_summary(config: TrainConfig, task_rows: dict[str, int], results: dict[str, Any] | None = None) -> str:
    """The model card's training section: data, hyperparameters and (when given) RSMEB results."""
    lines = [f"Trained with `vlm2geovec train` from `{config.model}` on the `train` split of `{config.data}`.", "",
             "| task | training rows |", "|---|---|"]
    lines += [f"| {name} | {count} |" for name, count in task_rows.items()]
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k not in ("model", "data", "extra_args")}
    lines += ["", "| hyperparameter | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in settings.items()]
    if results is not None:
        from rsmeb_eval.report import markdown_table

        lines += ["", "### RSMEB", "", markdown_table(results).split("\n", 2)[2]]
    return "\n".join(lines)


def write_model_card(out_dir: str | os.PathLike, config: TrainConfig, task_rows: dict[str, int],
                     results: dict[str, Any] | None = None) -> None:
    from vlm2geovec.model_card import render_model_card

    card = render_model_card(name=Path(out_dir).name, base=config.model, repo=str(out_dir),
                             training=training_summary(config, task_rows, results))
    (Path(out_dir) / "README.md").write_text(card, encoding="utf-8")


def build_loss(model, config: TrainConfig):
    from vlm2geovec_train.losses import CachedMultimodalMNRLoss, MultimodalMNRLoss

    if config.loss == "mnrl":
        return MultimodalMNRLoss(model, temperature=config.temperature)
    if config.loss == "cached_mnrl":
        return CachedMultimodalMNRLoss(model, temperature=config.temperature, mini_batch_size=config.mini_batch_size)
    raise ValueError(f"loss must be 'mnrl' or 'cached_mnrl', got {config.loss!r}")


def train(config: TrainConfig, out_dir: str | os.PathLike, resume_from_checkpoint: str | bool | None = None):
    """Train and save to `out_dir` (a VLM2GeoVec checkpoint: AutoModel and SentenceTransformer both load it)."""
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import MultiDatasetBatchSamplers

    from vlm2geovec import load_model
    from vlm2geovec_train.data import training_datasets

    # 1. Load the model.
    model = load_model(config.model)
    backbone = model[0].model
    # 2. The token embedding is nearly all of nano's weights, and almost none of its rows occur in the data.
    if config.freeze_token_embedding:
        backbone.get_input_embeddings().weight.requires_grad_(False)
    if config.gradient_checkpointing:
        backbone.gradient_checkpointing_enable()
    if config.lora is not None:  # only the adapter trains; the backbone (token embedding included) stays frozen
        from vlm2geovec_train.lora import LoraSettings, apply_lora

        apply_lora(model, LoraSettings(**config.lora))
    # 3. Data: one dataset per task, so each batch is drawn from one task with that task's instructions.
    datasets, prompts = training_datasets(config.data, config.tasks, config.n_negatives, config.seed,
                                          config.max_rows_per_task)
    # 4. Loss.
    loss = build_loss(model, config)
    # 5. Arguments (and, optionally, RSMEB evaluation during training: the same tasks and metrics as `rsmeb eval`).
    evaluator = None
    if config.eval_steps:
        from rsmeb_eval.st_evaluator import RSMEBEvaluator

        evaluator = RSMEBEvaluator(config.data, tasks=config.eval_tasks or config.tasks, split=config.eval_split)
    output_dir = Path(out_dir) / "trainer"
    args = SentenceTransformerTrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        warmup_steps=int(config.warmup_ratio * config.max_steps),
        lr_scheduler_type="cosine",
        max_steps=config.max_steps,
        seed=config.seed,
        data_seed=config.seed,
        bf16=config.bf16,
        logging_steps=config.logging_steps,
        save_strategy="steps" if config.save_steps else "no",
        save_steps=config.save_steps or 500,
        prompts=prompts,
        eval_strategy="steps" if config.eval_steps else "no",
        eval_steps=config.eval_steps,
        multi_dataset_batch_sampler=MultiDatasetBatchSamplers.PROPORTIONAL,
        **({"batch_sampler": BATCH_SAMPLERS[config.batch_sampler]} if config.batch_sampler != "default" else {}),
        dataloader_drop_last=True,
        report_to="none",
        disable_tqdm=False,
        **config.extra_args,
    )
    # 6. Train. (ST's model-card widgets expect text columns; ours hold images, boxes and coordinates.)
    model.model_card_data.set_widget_examples = lambda dataset: None
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=datasets, loss=loss, evaluator=evaluator)
    result = trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    # 7. Save: the same layout as `vlm2geovec nano`/`convert`, loadable by AutoModel and SentenceTransformer.
    if config.lora is not None:
        # Both forms (they give the same embeddings, tested): the adapter on its base, and merged weights.
        from vlm2geovec_train.lora import merge_and_save, save_adapter

        save_adapter(model, Path(out_dir) / "adapter", base_path=config.model)
        merge_and_save(model, out_dir)
    else:
        backbone.get_input_embeddings().weight.requires_grad_(True)
        model.save(str(Path(out_dir)))
    write_model_card(out_dir, config, {name: len(d) for name, d in datasets.items()})
    return model, trainer, result
