"""This process's share of a triage run under torchrun (RANK / WORLD_SIZE / LOCAL_RANK).

One process: rank 0 of 1, nothing to set up. Under torchrun (WORLD_SIZE > 1) a gloo process
group gives the barriers (no tensors are exchanged: every rank writes its prompts' files and
rank 0 merges them from the run folder); each rank uses the GPU `cuda:LOCAL_RANK` when there
are GPUs. The barrier timeout is long: ranks may finish their shares hours apart.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

BARRIER_TIMEOUT = timedelta(days=7)


@dataclass
class Shard:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    group: bool = False  # a process group was set up here (closed by `close`)

    @classmethod
    def from_env(cls) -> Shard:
        """The torchrun environment; a process group when there are several processes."""
        world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        local = int(os.environ.get("LOCAL_RANK", "0") or 0)
        if world <= 1:
            return cls()
        import torch.distributed as dist

        made = False
        if not dist.is_initialized():
            dist.init_process_group("gloo", timeout=BARRIER_TIMEOUT)
            made = True
        return cls(dist.get_rank(), dist.get_world_size(), local, made)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def device(self, asked: str) -> str:
        """One GPU per rank (`cuda:LOCAL_RANK`) when asked for auto or cuda under torchrun."""
        if self.world > 1 and asked in ("auto", "cuda"):
            import torch

            if torch.cuda.is_available():
                return f"cuda:{self.local_rank % torch.cuda.device_count()}"
            return "cpu" if asked == "auto" else asked
        return asked

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.group:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.group = False

    def label(self) -> str:
        return "" if self.world == 1 else f" (rank {self.rank}/{self.world})"
