"""Two CPU processes (gloo, torchrun) with gathered negatives == one process on the concatenated batch."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO_ROOT, make_image


def make_model(model_dir):
    from vlm2geovec import load_model

    torch.manual_seed(0)
    return load_model(model_dir, device="cpu").train()


def batch():
    images = [make_image(64, 64, seed) for seed in range(3)]
    anchors = ["a lagoon", {"image": images[0]}, {"coords": (10.0, 20.0)}, "dunes",
               {"image": images[1], "text": "crop"}, "a harbour", "glacier", {"image": images[2]}]
    positives = ["open water", "a field", "a town", "sand", "farmland", "ships", "ice", "a field"]
    labels = torch.tensor([[1], [2], [3], [4], [5], [6], [7], [2]])  # rows 1 and 7 share their positive
    return anchors, positives, labels


@pytest.mark.slow
def test_gathered_negatives_across_two_processes_equal_one_process(nano_dir, tmp_path):
    from vlm2geovec_train.losses import MultimodalMNRLoss

    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", "29517", str(REPO_ROOT / "tests" / "ddp_loss_worker.py"), str(nano_dir), str(tmp_path)]
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ddp = torch.load(tmp_path / "ddp.pt")

    model = make_model(str(nano_dir))
    anchors, positives, labels = batch()
    loss = MultimodalMNRLoss(model, temperature=0.05)([model.preprocess(anchors), model.preprocess(positives)], labels)
    loss.backward()
    assert ddp["loss"].item() == pytest.approx(loss.item(), rel=1e-5)
    single = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert single.keys() == ddp["grads"].keys()
    for name, grad in single.items():
        scale = grad.abs().max().item() + 1e-12
        assert (grad - ddp["grads"][name]).abs().max().item() <= 1e-4 * scale + 1e-7, name
