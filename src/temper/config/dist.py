"""How a training verb runs across processes and machines (launched through torchrun; training/launch.py)."""

from __future__ import annotations

from dataclasses import dataclass

from temper.config.base import check_choice, check_range, field


@dataclass
class DistCfg:
    nproc: int = field(1, help="processes on this node (>1 launches through torchrun: DDP by default)")
    nnodes: int = field(1, help="number of machines")
    node_rank: int = field(0, help="rank of this machine (0 .. nnodes-1)")
    master_addr: str = field("127.0.0.1", help="address of the rank-0 machine")
    master_port: int | None = field(
        None,
        help="port of the rank-0 machine (default: a free one on a single machine, 29500 across machines)",
    )
    distributed: str = field("ddp", help="ddp or fsdp (full shard through accelerate)")
    deepspeed: str | None = field(
        None, help="ZeRO preset (zero0..3, zero2_offload, zero3_offload) or a JSON path"
    )

    def __post_init__(self) -> None:
        check_choice("distributed", self.distributed, ["ddp", "fsdp"])
        check_range("nproc", self.nproc, 1, None)
        check_range("nnodes", self.nnodes, 1, None)
        check_range("node_rank", self.node_rank, 0, self.nnodes - 1)
        check_range("master_port", self.master_port, 1, 65535)
