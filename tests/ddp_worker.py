"""torchrun worker for tests/test_train.py::test_ddp_matches_single_process_grad_accum.

Usage: python -m torch.distributed.run --nproc_per_node=2 tests/ddp_worker.py OUT DATA STEPS BATCH
Every rank builds the same tiny model (seed 0) on the shards in DATA, trains STEPS steps with
batch_size BATCH and grad_accum 1 on the CPU (gloo), and saves its final parameters and loss
history to OUT/rank{r}.pt.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from fastllm.train.trainer import Trainer  # noqa: E402
from train_util import dataset, params, tiny_model, train_config, train_losses  # noqa: E402


def main() -> None:
    out, data, steps, batch = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    rank = int(os.environ["RANK"])
    model = tiny_model(0)
    trainer = Trainer(
        model,
        dataset(data),
        config=train_config(out / "run", max_steps=steps, batch_size=batch, grad_accum=1),
    )
    result = trainer.fit()
    torch.save(
        {
            "params": params(model),
            "losses": train_losses(result.history),
            "world_size": trainer.world_size,
            "rank": trainer.rank,
            "step": result.step,
            "tokens_per_step": trainer.tokens_per_step,
        },
        out / f"rank{rank}.pt",
    )
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
