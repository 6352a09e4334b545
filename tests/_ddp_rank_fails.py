"""Run by tests/test_resilience.py under torchrun: two CPU processes train; one fails.

``fail``: rank 1 raises at the start of epoch 2 (torchrun then stops rank 0); ``hang``: rank 1
sleeps instead of training, so rank 0 waits in DDP's gradient all-reduce until the process
group's timeout ($CNNKIT_DDP_TIMEOUT) ends it with cnnkit's PeerError.
"""

import sys
import time

import torch
from torch import nn

from cnnkit.data import TensorBatches
from cnnkit.train import Callback, Trainer


class FailOnRankOne(Callback):
    def on_epoch_begin(self, trainer, epoch):
        if trainer.dist.rank == 1 and epoch == 1:
            raise RuntimeError("rank 1 fails on purpose")


def main(mode: str) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    images = torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8)
    labels = torch.randint(0, 3, (64,))
    trainer = Trainer(
        model, device="cpu", progress=False, channels_last=False, callbacks=[FailOnRankOne()]
    )
    if mode == "hang" and trainer.dist.rank == 1:
        time.sleep(60)  # alive, but never joins the all-reduce
        return
    trainer.fit(TensorBatches(images, labels, 4, shuffle=True), epochs=3)


if __name__ == "__main__":
    main(sys.argv[1])
