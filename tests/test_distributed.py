"""DDP under torchrun semantics (``cnnkit.train.distributed``): two CPU processes with the Gloo backend.

The reference is arithmetic: DDP averages the gradients of W processes, each on its shard of the same
permutation, so W processes at batch B must train exactly like one process at batch W·B on the same
images (no BatchNorm or dropout in the model, so nothing else differs).
"""

from __future__ import annotations

import json
import os
import socket
from collections import OrderedDict

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from cnnkit.data import TensorBatches
from cnnkit.train import Trainer
from cnnkit.train.distributed import DistInfo, shard_loader
from cnnkit.train.freeze import fine_tune

N, BATCH = 48, 4


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 3)
    )


def data(batch_size: int) -> tuple[TensorBatches, TensorBatches]:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (N, 1, 8, 8), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 3, (N,), generator=g)
    train = TensorBatches(images, labels, batch_size, shuffle=True, seed=3)
    return train, TensorBatches(images, labels, 16)


def train(batch_size: int, out_dir: str | None) -> tuple[Trainer, list[dict]]:
    trainer = Trainer(
        tiny_model(), lr=1e-2, device="cpu", progress=False, out_dir=out_dir, channels_last=False
    )
    return trainer, trainer.fit(*data(batch_size), epochs=2)


def loader_dataset() -> TensorDataset:
    g = torch.Generator().manual_seed(1)
    images = torch.randn(N, 1, 8, 8, generator=g)
    return TensorDataset(images, torch.randint(0, 3, (N,), generator=g))


def fine_tune_on_loader(loader: DataLoader, out_dir: str | None) -> dict[str, torch.Tensor]:
    """``fine_tune``'s two phases (1 frozen epoch, 1 unfrozen) on a small net with BatchNorm."""
    torch.manual_seed(0)
    model = nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(1, 4, 3),
            bn=nn.BatchNorm2d(4),
            relu=nn.ReLU(),
            pool=nn.AdaptiveAvgPool2d(2),
            flat=nn.Flatten(),
            fc=nn.Linear(16, 3),
        )
    )
    valid = DataLoader(loader_dataset(), 16)
    options = dict(device="cpu", progress=False, channels_last=False, out_dir=out_dir)
    fine_tune(model, loader, valid, frozen_epochs=1, epochs=2, lr=1e-2, **options)
    return {k: v.clone() for k, v in model.state_dict().items()}


def train_on_loader(loader: DataLoader) -> dict[str, torch.Tensor]:
    """Two epochs on a DataLoader (the path ``cnnkit finetune`` takes); the final weights."""
    trainer = Trainer(tiny_model(), lr=1e-2, device="cpu", progress=False, channels_last=False)
    trainer.fit(loader, epochs=2)
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def _worker(rank: int, world_size: int, port: int, tmp: str) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    try:
        trainer, history = train(BATCH, os.path.join(tmp, "run"))
        assert trainer.dist.rank == rank and trainer.dist.world_size == world_size
        weights = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        # a plain shuffling DataLoader, which the trainer shards with a DistributedSampler
        loader = DataLoader(loader_dataset(), BATCH, shuffle=True)
        loader_weights = train_on_loader(loader)
        tuned = fine_tune_on_loader(loader, os.path.join(tmp, "finetune"))
        torch.save(
            {
                "weights": weights,
                "history": history,
                "loader_weights": loader_weights,
                "fine_tuned": tuned,
            },
            os.path.join(tmp, f"rank{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> str:
    tmp = str(tmp_path_factory.mktemp("ddp"))
    mp.spawn(_worker, args=(2, free_port(), tmp), nprocs=2, join=True)
    return tmp


def test_two_processes_train_like_one_at_twice_the_batch(ddp_run):
    ranks = [torch.load(os.path.join(ddp_run, f"rank{r}.pt")) for r in range(2)]
    single, history = train(2 * BATCH, None)
    for key, value in single.model.state_dict().items():
        torch.testing.assert_close(ranks[0]["weights"][key], value, rtol=1e-5, atol=1e-6)
        assert torch.equal(ranks[0]["weights"][key], ranks[1]["weights"][key]), key
    for ddp_row, row in zip(ranks[0]["history"], history, strict=True):
        # training loss/accuracy are summed over both processes: those of the whole epoch
        assert ddp_row["loss"] == pytest.approx(row["loss"], rel=1e-5)
        assert ddp_row["accuracy"] == row["accuracy"]
        assert ddp_row["val_accuracy"] == row["val_accuracy"]
    timing = {"seconds", "images_per_s"}
    for a, b in zip(ranks[0]["history"], ranks[1]["history"], strict=True):
        assert {k: v for k, v in a.items() if k not in timing} == {
            k: v for k, v in b.items() if k not in timing
        }


def test_a_dataloader_is_sharded_and_trains_like_one_process_at_twice_the_batch(ddp_run):
    """Each rank takes every other item of the DistributedSampler permutation (seed 0 + epoch), so
    two ranks at batch 4 see, step by step, the 8 images one process sees at batch 8."""
    ranks = [torch.load(os.path.join(ddp_run, f"rank{r}.pt")) for r in range(2)]
    dataset = loader_dataset()
    whole = DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=0)
    single = train_on_loader(DataLoader(dataset, 2 * BATCH, sampler=whole))
    for key, value in single.items():
        torch.testing.assert_close(ranks[0]["loader_weights"][key], value, rtol=1e-5, atol=1e-6)
        assert torch.equal(ranks[0]["loader_weights"][key], ranks[1]["loader_weights"][key]), key


def test_fine_tune_under_ddp_matches_one_process_and_writes_one_run(ddp_run):
    """Both phases of ``fine_tune`` shard the DataLoader; BatchNorm stays in inference mode in both
    (frozen, then ``bn_stats=False``), so two ranks at batch 4 equal one process at batch 8."""
    ranks = [torch.load(os.path.join(ddp_run, f"rank{r}.pt")) for r in range(2)]
    dataset = loader_dataset()
    whole = DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=0)
    single = fine_tune_on_loader(DataLoader(dataset, 2 * BATCH, sampler=whole), None)
    for key, value in single.items():
        torch.testing.assert_close(ranks[0]["fine_tuned"][key], value, rtol=1e-5, atol=1e-6)
        assert torch.equal(ranks[0]["fine_tuned"][key], ranks[1]["fine_tuned"][key]), key
    with open(os.path.join(ddp_run, "finetune", "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    assert [(row["phase"], row["epoch"]) for row in rows] == [(1, 1), (2, 2)]


def test_shard_loader_splits_each_epoch_between_ranks_and_keeps_the_settings():
    loader = DataLoader(loader_dataset(), 5, shuffle=True, drop_last=True)
    shards = [shard_loader(loader, DistInfo(rank, 2, rank), seed=7) for rank in range(2)]
    orders = []
    for epoch in range(2):
        seen = []
        for shard in shards:
            assert shard.batch_size == 5 and shard.drop_last and len(shard) == 4  # 24 items, 4 x 5
            shard.sampler.set_epoch(epoch)
            seen.append(list(shard.sampler))
        assert sorted(seen[0] + seen[1]) == list(range(N))  # disjoint, together the whole set
        orders.append(seen[0])
    assert orders[0] != orders[1]  # reshuffled every epoch
    assert shard_loader(shards[0], DistInfo(0, 2, 0)) is shards[0]  # already sharded
    in_order = shard_loader(DataLoader(loader_dataset(), 4), DistInfo(1, 2, 1))
    assert list(in_order.sampler) == list(range(1, N, 2))  # no shuffle stays no shuffle


def test_shard_loader_refuses_an_iterable_dataset():
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            yield from range(4)

    with pytest.raises(ValueError, match="DistributedSampler"):
        shard_loader(DataLoader(Stream(), 2), DistInfo(0, 2, 0))


def test_shard_loader_refuses_to_drop_a_custom_sampler():
    weighted = torch.utils.data.WeightedRandomSampler(torch.ones(N), N)
    with pytest.raises(ValueError, match="WeightedRandomSampler"):
        shard_loader(DataLoader(loader_dataset(), 4, sampler=weighted), DistInfo(0, 2, 0))


def test_only_rank_zero_writes_the_run_directory(ddp_run):
    run = os.path.join(ddp_run, "run")
    assert sorted(os.listdir(run)) == [
        "best.safetensors",
        "config.json",
        "last.safetensors",
        "metrics.jsonl",
        "steps.jsonl",
    ]
    with open(os.path.join(run, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    assert [row["epoch"] for row in rows] == [1, 2]


def test_tensor_batches_shard_interleaves_one_permutation():
    train, _ = data(4)
    train.set_epoch(1)
    parts = []
    for rank in range(3):
        part = train.shard(rank, 3)
        part.set_epoch(1)
        assert len(part) == 4 and part.num_samples == 16
        parts.append(torch.cat([x.flatten(1) for x, _ in part]))
    train.set_epoch(1)
    full = torch.cat([x.flatten(1) for x, _ in train])
    torch.testing.assert_close(torch.stack(parts, 1).reshape(N, -1), full)
    with pytest.raises(ValueError, match="rank"):
        train.shard(3, 3)


def test_torchrun_cli_train_writes_one_run(tmp_path, fashion_mnist):
    """``torchrun --nproc_per_node 2`` running cnnkit's command line end to end on the real data
    (Gloo, CPU): rank 0 alone prints and writes the run, and the model learns (measured: 69.2% test
    accuracy, 73.6% validation, after 64 steps of 2 x 32 images of LeNet-5; chance is 10%). Each
    rank runs the CLI through a small launcher that cuts Fashion-MNIST's validation and test splits
    as ``quick_data`` does for the other CLI tests; LeNet-5 rather than the notes' CNN, which took
    most of a minute here. ``-m cnnkit`` under torchrun is
    ``test_nproc_launches_torchrun_for_the_user``'s."""
    import subprocess
    import sys
    from pathlib import Path

    launcher = tmp_path / "launch.py"
    launcher.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from quick_data import fashion_mnist_cut\n"
        "from cnnkit.cli import main\n"
        "from cnnkit.data import load_fashion_mnist\n"
        "with fashion_mnist_cut(load_fashion_mnist()):\n"
        "    sys.exit(main())\n"
    )
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    command += ["--master_port", str(free_port()), str(launcher), "train"]
    command += ["--model", "lenet5", "--image-size", "32", "--lr", "5e-3", "--epochs", "1"]
    command += ["--train-limit", "4096", "--batch-size", "32", "--out", str(out)]
    command += ["--no-progress", "--device", "cpu"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("training lenet5") == 1  # rank 0 alone reports
    assert done.stdout.count("\n  accuracy  ") == 1  # one test report
    config = json.loads((out / "config.json").read_text())
    assert config["trainer"]["batch_size"] == 32
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["epoch"] == 1
    assert rows[0]["val_accuracy"] > 0.6
    assert json.loads((out / "test_metrics.json").read_text())["test_accuracy"] > 0.6
