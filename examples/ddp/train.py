#!/usr/bin/env python3
"""An ordinary PyTorch DDP training script: terse reaches it only through
LD_PRELOAD=libterse-nccl.so, which catches the ncclAllReduce behind DDP's gradient buckets.

The model is a byte-level transformer language model (pre-LayerNorm blocks, causal attention,
GELU MLP, learned positions) of the Python standard library's sources on this machine; files
whose index is a multiple of 10 are held out. bf16 autocast, AdamW, fixed seeds: --seed sets the
model's initial weights, --data-seed the order of the training batches (the same for every
--seed, so seeds differ only in the initial weights). The defaults are DESIGN.md section 7's
reference model (12 layers, d 1024, batch 8 x 512 per rank); bench/gpu_eval.sh runs a smaller one
to fit its time budget.

Run:
  torchrun --nproc_per_node 2 examples/ddp/train.py --steps 300
  LD_PRELOAD=build/comm/libterse-nccl.so torchrun --nproc_per_node 2 examples/ddp/train.py
  ... --hook powersgd | fp16          PyTorch's powerSGD_hook (rank 4) / fp16_compress_hook
  TERSE_TORCH_HELPER=1 PYTHONPATH=examples/ddp/terse_helper ...   per-parameter layouts
Prints "step N loss L ms T" every --log-every steps, then one line
  RESULT mode M seed S steps N loss L heldout H step_ms T window A-B bytes_per_step B
         plain_bytes_per_step P ratio R checksum C ranks_equal E
loss: mean training loss of the last 20 steps (all ranks); heldout: mean loss over fixed held-out
batches; step_ms: wall time per step over steps [A, B) (after compression is active, re-plan
steps included; the clock stops for nothing in between); bytes_per_step: bytes one rank handed
to NCCL per step in that window, from terse's counters when libterse-nccl.so is loaded, else the
plain ring's 2(p-1)/p x size of what DDP sent (the hooks' compressed sizes included); checksum:
of every parameter's bits, all-gathered: ranks_equal 1 when every rank holds the same model.
"""
import argparse
import ctypes
import glob
import math
import os
import sys
import sysconfig
import time

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP


def parse():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seed", type=int, default=1, help="initial weights")
    p.add_argument("--data-seed", type=int, default=1234, help="order of the training batches")
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--d-model", type=int, default=1024)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--batch", type=int, default=8, help="sequences per rank and step")
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--warmup", type=int, default=30, help="linear learning-rate warm-up steps")
    p.add_argument("--hook", choices=["none", "powersgd", "fp16"], default="none")
    p.add_argument("--powersgd-rank", type=int, default=4)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--time-from", type=int, default=-1,
                   help="first timed step (default: a third of --steps, at least 50)")
    p.add_argument("--heldout-batches", type=int, default=8)
    p.add_argument("--mode", default="", help="label of the RESULT line")
    p.add_argument("--data", default="", help="glob of text files (default: stdlib *.py)")
    p.add_argument("--max-bytes", type=int, default=48 << 20)
    return p.parse_args()


# ---------------------------------------------------------------- data
def load_text(pattern, max_bytes):
    if not pattern:
        pattern = os.path.join(sysconfig.get_paths()["stdlib"], "**", "*.py")
    files = sorted(glob.glob(pattern, recursive=True))
    if len(files) < 10:
        sys.exit("train.py: fewer than 10 files match %s" % pattern)
    train, held, total = [], [], 0
    for i, f in enumerate(files):
        try:
            with open(f, "rb") as fh:
                b = fh.read()
        except OSError:
            continue
        (held if i % 10 == 0 else train).append(b)
        total += len(b)
        if total >= max_bytes:
            break
    tr = torch.frombuffer(bytearray(b"".join(train)), dtype=torch.uint8)
    he = torch.frombuffer(bytearray(b"".join(held)), dtype=torch.uint8)
    return tr, he


def batch_at(data, gen, batch, seq, device):
    idx = torch.randint(0, data.numel() - seq - 1, (batch,), generator=gen)
    x = torch.stack([data[i:i + seq + 1] for i in idx.tolist()]).long()
    x = x.to(device, non_blocking=True)
    return x[:, :-1], x[:, 1:]


# ---------------------------------------------------------------- model
class Block(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, 4 * d)
        self.fc2 = nn.Linear(4 * d, d)
        self.heads = heads

    def forward(self, x):
        B, T, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(D, dim=2)
        q, k, v = (t.view(B, T, self.heads, D // self.heads).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, D))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class LM(nn.Module):
    def __init__(self, layers, d, heads, seq):
        super().__init__()
        self.emb = nn.Embedding(256, d)
        self.pos = nn.Parameter(torch.zeros(seq, d))
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, 256)
        nn.init.normal_(self.pos, std=0.02)

    def forward(self, x):
        h = self.emb(x) + self.pos[: x.shape[1]]
        for b in self.blocks:
            h = b(h)
        return self.head(self.ln(h))


def loss_of(model, x, y):
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = model(x)
    return F.cross_entropy(logits.float().view(-1, 256), y.reshape(-1))


# ---------------------------------------------------------------- bytes and checksum
def terse_counters():
    """terse_nccl_counters_get() of a preloaded libterse-nccl.so, or None."""
    try:
        fn = ctypes.CDLL(None).terse_nccl_counters_get
    except AttributeError:
        return None
    out = (ctypes.c_uint64 * 5)()
    fn.restype = ctypes.c_int
    if fn(out, ctypes.c_size_t(5)) != 5:
        return None
    return list(out)


def estimated_bytes(model, hook, rank, world):
    """What one rank hands to NCCL per step without terse: the ring's 2(p-1)/p x size, the
    hooks' payloads where one is registered (powerSGD: P and Q of every matrix whose
    compression pays, the rest uncompressed; fp16: half)."""
    ring = 2.0 * (world - 1) / world
    total = 0.0
    for p in model.parameters():
        n = p.numel()
        if hook == "fp16":
            total += 2 * n
        elif hook == "powersgd" and p.dim() >= 2:
            rows, cols = p.shape[0], n // p.shape[0]
            k = min(rank, rows, cols)
            total += 4 * k * (rows + cols) if (rows * cols) >= 2 * k * (rows + cols) else 4 * n
        else:
            total += 4 * n
    return ring * total


def checksum(model):
    """A checksum of the bits of every parameter (int64 arithmetic wraps: deterministic)."""
    acc = None
    for i, p in enumerate(model.parameters()):
        v = p.detach().float().contiguous().view(-1).view(torch.int32).to(torch.int64)
        w = torch.arange(1, v.numel() + 1, device=v.device, dtype=torch.int64) % 1000003 + 1
        s = (v * w).sum() * (2 * i + 1)
        acc = s if acc is None else acc + s
    return acc


# ---------------------------------------------------------------- main
def main():
    args = parse()
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    local = int(os.environ.get("LOCAL_RANK", rank))
    torch.cuda.set_device(local)
    device = torch.device("cuda", local)
    torch.manual_seed(args.seed)
    torch.backends.cuda.matmul.allow_tf32 = True

    train, held = load_text(args.data, args.max_bytes)
    model = LM(args.layers, args.d_model, args.heads, args.seq).to(device)
    nparams = sum(p.numel() for p in model.parameters())
    ddp = DDP(model, device_ids=[local])
    if args.hook == "powersgd":
        from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as psgd
        state = psgd.PowerSGDState(process_group=None,
                                   matrix_approximation_rank=args.powersgd_rank,
                                   start_powerSGD_iter=10, use_error_feedback=True,
                                   warm_start=True, random_seed=0)
        ddp.register_comm_hook(state, psgd.powerSGD_hook)
    elif args.hook == "fp16":
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
        ddp.register_comm_hook(None, default_hooks.fp16_compress_hook)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95),
                            weight_decay=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(1, args.warmup)))

    # every rank draws its own batches from one stream per rank, fixed by --data-seed
    gen = torch.Generator().manual_seed(args.data_seed * 1000 + rank)
    time_from = args.time_from if args.time_from >= 0 else max(50, args.steps // 3)
    time_from = min(time_from, max(0, args.steps - 1))
    mode = args.mode or ("plain" if args.hook == "none" else args.hook)
    if rank == 0:
        print("# model %d layers d %d: %.1f M parameters; batch %d x %d per rank, %d ranks; "
              "%.1f MB of training text; hook %s; terse %s" %
              (args.layers, args.d_model, nparams / 1e6, args.batch, args.seq, world,
               train.numel() / 1e6, args.hook,
               "loaded" if terse_counters() is not None else "not loaded"), flush=True)

    losses = torch.zeros(args.steps, device=device)
    t0 = c0 = None
    t_last = time.perf_counter()
    for step in range(args.steps):
        if step == time_from:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            c0 = terse_counters()
        x, y = batch_at(train, gen, args.batch, args.seq, device)
        loss = loss_of(ddp, x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses[step] = loss.detach()
        if (args.log_every > 0) and ((step + 1) % args.log_every == 0):
            lo = losses[max(0, step + 1 - args.log_every):step + 1].mean()
            dist.all_reduce(lo)  # 1 element: terse passes it through
            now = time.perf_counter()
            if rank == 0:
                print("step %d loss %.4f ms %.1f" % (step + 1, lo.item() / world,
                      1e3 * (now - t_last) / args.log_every), flush=True)
            t_last = now
    torch.cuda.synchronize()
    t1 = time.perf_counter()
    c1 = terse_counters()
    timed = args.steps - time_from
    step_ms = 1e3 * (t1 - t0) / timed

    # results: last-20 training loss, held-out loss, bytes, checksum
    tail = losses[max(0, args.steps - 20):].mean()
    dist.all_reduce(tail)
    hgen = torch.Generator().manual_seed(4321)
    model.eval()
    with torch.no_grad():
        hl = torch.zeros((), device=device)
        for _ in range(args.heldout_batches):
            hx, hy = batch_at(held, hgen, args.batch, args.seq, device)
            hl += loss_of(model, hx, hy)
        hl /= args.heldout_batches
    if (c0 is not None) and (c1 is not None):
        sent = ((c1[2] + c1[4]) - (c0[2] + c0[4])) / timed
        plain = ((c1[3] + c1[4]) - (c0[3] + c0[4])) / timed
        src = "terse"
    else:
        sent = estimated_bytes(model, args.hook, args.powersgd_rank, world)
        plain = estimated_bytes(model, "none", args.powersgd_rank, world)
        src = "estimate"
    cs = checksum(model)
    every = [torch.zeros_like(cs) for _ in range(world)]
    dist.all_gather(every, cs)
    equal = int(all(int(c.item()) == int(cs.item()) for c in every))
    if rank == 0:
        print("RESULT mode %s seed %d steps %d loss %.4f heldout %.4f step_ms %.2f window %d-%d "
              "bytes_per_step %.0f plain_bytes_per_step %.0f ratio %.2f bytes_from %s "
              "checksum %016x ranks_equal %d params %d" %
              (mode, args.seed, args.steps, tail.item() / world, hl.item(), step_ms, time_from,
               args.steps, sent, plain, plain / sent if sent > 0 else float("nan"), src,
               int(cs.item()) & 0xFFFFFFFFFFFFFFFF, equal, nparams), flush=True)
    dist.barrier()
    dist.destroy_process_group()
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
