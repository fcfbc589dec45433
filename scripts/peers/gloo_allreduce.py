#!/usr/bin/env python3
"""The peer of `oxray bench allreduce --transport tcp`: torch.distributed's
gloo all-reduce (float32 sum) between WORLD processes over loopback TCP.

usage: gloo_allreduce.py WORLD [SIZES_MIB [ITERATIONS]]
  e.g. gloo_allreduce.py 4 1,16,64 10

Each size is warmed up (at least 3 iterations and 0.5 s, as oxray's bench
does), then timed; rank 0 prints one line per size with the mean time per
iteration, algbw = bytes / time and busbw = algbw x 2(n-1)/n (nccl-tests'
definitions), which `oxray bench allreduce --gloo` parses.
"""
import os
import socket
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def rank_main(rank, world, port, sizes_mib, iterations):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    for mib in sizes_mib:
        buffer = torch.ones(mib * 1024 * 1024 // 4)
        warm_until = time.perf_counter() + 0.5
        warmed = 0
        while True:
            dist.all_reduce(buffer)
            warmed += 1
            # Rank 0 decides for all, so every rank runs the same iterations.
            more = torch.tensor([float(warmed < 3 or time.perf_counter() < warm_until)])
            dist.broadcast(more, 0)
            if more.item() == 0.0:
                break
        dist.barrier()
        start = time.perf_counter()
        for _ in range(iterations):
            dist.all_reduce(buffer)
        seconds = (time.perf_counter() - start) / iterations
        if rank == 0:
            algbw = mib * 1024 * 1024 / seconds / 1e9
            busbw = algbw * 2 * (world - 1) / world
            print(
                f"gloo world={world} size={mib}MiB time={seconds * 1e3:.2f}ms "
                f"algbw={algbw:.2f}GB/s busbw={busbw:.2f}GB/s",
                flush=True,
            )
    dist.destroy_process_group()


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


if __name__ == "__main__":
    world = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    sizes = [int(s) for s in sys.argv[2].split(",")] if len(sys.argv) > 2 else [1, 16, 64]
    iterations = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    mp.spawn(rank_main, args=(world, free_port(), sizes, iterations), nprocs=world)
