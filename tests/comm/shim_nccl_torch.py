#!/usr/bin/env python3
"""Checks of libterse-nccl.so from PyTorch (ctest label gpu; tests/comm/shim_nccl_test.sh runs
this under torchrun with 2 GPUs, with and without LD_PRELOAD).

  shim_nccl_torch.py passthrough   prints one line per call of a set of allreduces that terse
                                   must pass through (integer and double types, MAX, small
                                   floats, grouped/coalesced large floats, bf16/fp16 below the
                                   threshold): the script compares the lines of a run with the
                                   shim against a run without it (bit-identical)
  shim_nccl_torch.py compress      a training-like loop of 3 large float allreduces a step (fp32
                                   SUM, bf16 SUM, fp32 AVG): early steps exact, later steps
                                   compressed (relative error of a quant:4 sum), the result
                                   bitwise equal on both ranks every step
  shim_nccl_torch.py badenv        rank 1 sets TERSE_MIN_BYTES to a bad value before its first
                                   NCCL call: the first float allreduce fails on both ranks
  shim_nccl_torch.py envdiff       rank 1 sets another TERSE_QUANT_BUCKET: both ranks pass
                                   through exactly
Each line: "rank R step S name N relerr E equal Q hash H" (hash of the result's bits).
"""
import hashlib
import os
import sys

import torch
import torch.distributed as dist


def bits_hash(t):
    return hashlib.sha1(t.detach().contiguous().view(torch.uint8).cpu().numpy().tobytes()
                        ).hexdigest()[:16]


def equal_on_all(t):
    """1 when every rank holds the same bits (all-gathered hashes of 8 bytes)."""
    h = int(bits_hash(t), 16) & 0x7FFFFFFFFFFFFFFF
    mine = torch.tensor([h], dtype=torch.int64, device=t.device)
    every = [torch.zeros_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(every, mine)
    return int(all(int(e.item()) == h for e in every))


def main():
    mode = sys.argv[1]
    rank = int(os.environ["RANK"])
    # SHIM_TEST_OUT=PREFIX: each rank writes its lines to PREFIX.rankR (no interleaving)
    sink = open("%s.rank%d" % (os.environ["SHIM_TEST_OUT"], rank), "w") \
        if os.environ.get("SHIM_TEST_OUT") else sys.stdout

    def emit(line):
        sink.write(line + "\n")
        sink.flush()

    local = int(os.environ.get("LOCAL_RANK", rank))
    if mode == "badenv" and rank == 1:
        os.environ["TERSE_MIN_BYTES"] = "lots"
    if mode == "envdiff" and rank == 1:
        os.environ["TERSE_QUANT_BUCKET"] = "1024"
    torch.cuda.set_device(local)
    dev = torch.device("cuda", local)
    dist.init_process_group("nccl")  # lazy init: eager init may pick nonblocking comms
    world = dist.get_world_size()

    def rnd(n, dtype, scale=1.0, seed_off=0):
        gg = torch.Generator(device="cpu").manual_seed(1000 * rank + seed_off)
        return (torch.randn(n, generator=gg) * scale).to(dtype).to(dev)

    if mode == "passthrough":
        k = 0
        for n in (1, 7, 1000, 300000, 1 << 20):
            for name, dtype, op in (("i32", torch.int32, dist.ReduceOp.SUM),
                                    ("i64", torch.int64, dist.ReduceOp.SUM),
                                    ("f64", torch.float64, dist.ReduceOp.SUM),
                                    ("f32max", torch.float32, dist.ReduceOp.MAX),
                                    ("f32min", torch.float32, dist.ReduceOp.MIN),
                                    ("f32prod", torch.float32, dist.ReduceOp.PRODUCT),
                                    ("u8", torch.uint8, dist.ReduceOp.SUM)):
                k += 1
                if dtype.is_floating_point:
                    t = rnd(n, dtype, seed_off=k)
                else:
                    gg = torch.Generator(device="cpu").manual_seed(1000 * rank + k)
                    t = torch.randint(0, 100, (n,), generator=gg).to(dtype).to(dev)
                dist.all_reduce(t, op=op)
                emit("rank %d step 0 %s %d hash %s" % (rank, name, n, bits_hash(t)))
        # floats below TERSE_MIN_BYTES (64 KiB): exact sums
        for step in range(6):
            for n, dtype in ((1, torch.float32), (100, torch.float32), (4000, torch.float32),
                             (8000, torch.bfloat16), (8000, torch.float16)):
                t = rnd(n, dtype, seed_off=100 * step + n)
                dist.all_reduce(t)
                emit("rank %d step %d small %s %d hash %s" % (rank, step, dtype, n,
                     bits_hash(t)))
        # large floats inside a group (coalesced): NCCL defers them, terse must not touch them
        for step in range(6):
            ts = [rnd(1 << 18, torch.float32, seed_off=500 + 10 * step + j) for j in range(3)]
            with dist._coalescing_manager(device=dev, async_ops=True) as cm:
                for t in ts:
                    dist.all_reduce(t)
            cm.wait()
            for j, t in enumerate(ts):
                emit("rank %d step %d grouped%d %d hash %s" % (rank, step, j, t.numel(),
                     bits_hash(t)))
        torch.cuda.synchronize()
        emit("combinations %d" % (k + 5 * 6 + 3 * 6))
    elif mode in ("compress", "envdiff"):
        n1, n2, n3 = 1 << 20, 300001, 1 << 18
        acc = None
        for step in range(12):
            x1 = rnd(n1, torch.float32, seed_off=step)
            x2 = rnd(n2, torch.bfloat16, seed_off=50 + step)
            x3 = rnd(n3, torch.float32, seed_off=90 + step)
            # the exact sums, from every rank's inputs regenerated locally
            ex1 = sum(torch.randn(n1, generator=torch.Generator().manual_seed(1000 * r + step))
                      for r in range(world)).to(dev)
            ex2 = sum(torch.randn(n2, generator=torch.Generator().manual_seed(
                1000 * r + 50 + step)).to(torch.bfloat16).float() for r in range(world)).to(dev)
            ex3 = sum(torch.randn(n3, generator=torch.Generator().manual_seed(
                1000 * r + 90 + step)) for r in range(world)).to(dev) / world
            y1, y2, y3 = x1.clone(), x2.clone(), x3.clone()
            dist.all_reduce(y1)
            dist.all_reduce(y2)
            dist.all_reduce(y3, op=dist.ReduceOp.AVG)
            loss = torch.ones(1, device=dev)
            dist.all_reduce(loss)
            for name, y, ex in (("f32sum", y1, ex1), ("bf16sum", y2, ex2), ("f32avg", y3, ex3)):
                rel = ((y.float() - ex).norm() / ex.norm()).item()
                print("rank %d step %d %s %d relerr %.3e equal %d hash %s" %
                      (rank, step, name, y.numel(), rel, equal_on_all(y), bits_hash(y)),
                      flush=True)
            if loss.item() != world:
                print("rank %d step %d loss allreduce wrong" % (rank, step), flush=True)
        print("done rank %d" % rank, flush=True)
    elif mode == "badenv":
        t = rnd(1 << 18, torch.float32)
        try:
            dist.all_reduce(t)
            torch.cuda.synchronize()
            print("rank %d badenv no error" % rank, flush=True)
        except Exception as e:  # torch raises DistBackendError for an NCCL error
            print("rank %d badenv error %s" % (rank, str(e).split("\n")[0][:200]), flush=True)
        os._exit(0)  # the communicator is unusable now: skip the teardown
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
