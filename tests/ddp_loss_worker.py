"""Run under `torchrun --nproc_per_node N`: each rank takes its slice of one batch, computes the loss with
candidates gathered from every rank, back-propagates, averages gradients like DDP, and saves what it got."""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist


def main(model_dir: str, out_dir: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    from tests.test_ddp import batch, make_model
    from vlm2geovec_train.losses import MultimodalMNRLoss

    model = make_model(model_dir)
    anchors, positives, labels = batch()
    per_rank = len(anchors) // world
    part = slice(rank * per_rank, (rank + 1) * per_rank)
    features = [model.preprocess(anchors[part]), model.preprocess(positives[part])]
    loss = MultimodalMNRLoss(model, temperature=0.05)(features, labels[part])
    loss.backward()
    for parameter in model.parameters():  # what DistributedDataParallel does to gradients
        if parameter.grad is not None:
            dist.all_reduce(parameter.grad)
            parameter.grad /= world
    losses = [torch.zeros(1) for _ in range(world)]
    dist.all_gather(losses, loss.detach().reshape(1))
    if rank == 0:
        grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        torch.save({"loss": torch.cat(losses).mean(), "grads": grads}, os.path.join(out_dir, "ddp.pt"))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
