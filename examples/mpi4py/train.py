#!/usr/bin/env python3
"""An unmodified numpy + mpi4py data-parallel trainer: terse reaches it only through
LD_PRELOAD=libterse-mpi.so, which catches the MPI_Allreduce behind Comm.Allreduce.

The model is the C trainer's (examples/c_trainer/trainer.c): a byte-level language model of the
Python standard library's sources, an MLP over the previous C bytes (an embedding per position,
two hidden ReLU layers), trained with Adam. Files whose index is a multiple of 10 are held out.

Run (Debian's mpi4py lives under /usr/bin/python3):
  mpirun -np 4 --oversubscribe /usr/bin/python3 examples/mpi4py/train.py
  mpirun -np 4 --oversubscribe -x LD_PRELOAD=build/comm/libterse-mpi.so /usr/bin/python3 examples/mpi4py/train.py
Prints a progress line per epoch, a summary, and "RESULT key value ..." (bytes counted by the
trainer as a plain allreduce would send them; terse's own count is in TERSE_STATS when set).
"""
import argparse
import glob
import sys
import time

import numpy as np
from mpi4py import MPI

VOCAB = 256


def load(pattern):
    files = sorted(glob.glob(pattern))
    if len(files) < 10:
        sys.exit("train.py: fewer than 10 files match %s" % pattern)
    train, test = [], []
    for i, f in enumerate(files):
        with open(f, "rb") as fh:
            (test if i % 10 == 0 else train).append(fh.read())
    return (np.frombuffer(b"".join(train), dtype=np.uint8),
            np.frombuffer(b"".join(test), dtype=np.uint8))


class Model:
    def __init__(self, context, hidden, seed):
        rng = np.random.default_rng(seed)  # the same on every rank: replicas start equal
        self.C, self.H = context, hidden
        shapes = [(context * VOCAB, hidden), (hidden,), (hidden, hidden), (hidden,),
                  (hidden, VOCAB), (VOCAB,)]
        sizes = [int(np.prod(s)) for s in shapes]
        self.flat = np.zeros(sum(sizes), dtype=np.float32)
        self.params, off = [], 0
        for s, n in zip(shapes, sizes):
            self.params.append(self.flat[off:off + n].reshape(s))
            off += n
        scales = [1 / np.sqrt(context), 0, np.sqrt(2 / hidden), 0, 1 / np.sqrt(hidden), 0]
        for p, sc in zip(self.params, scales):
            if sc:
                p[...] = rng.standard_normal(p.shape).astype(np.float32) * sc
        self.grad = np.zeros_like(self.flat)
        self.grads, off = [], 0
        for s, n in zip(shapes, sizes):
            self.grads.append(self.grad[off:off + n].reshape(s))
            off += n

    def forward(self, x):
        W1, b1, W2, b2, W3, b3 = self.params
        rows = x + (np.arange(self.C) * VOCAB)[None, :]
        h1 = np.maximum(W1[rows].sum(axis=1) + b1, 0)
        h2 = np.maximum(h1 @ W2 + b2, 0)
        return rows, h1, h2, h2 @ W3 + b3

    def loss_grad(self, x, y):
        W1, b1, W2, b2, W3, b3 = self.params
        rows, h1, h2, logits = self.forward(x)
        logits = logits - logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        n = len(y)
        loss = -np.log(p[np.arange(n), y] + 1e-30).mean()
        d = p
        d[np.arange(n), y] -= 1
        d /= n
        gW1, gb1, gW2, gb2, gW3, gb3 = self.grads
        gW3[...] = h2.T @ d
        gb3[...] = d.sum(axis=0)
        dh2 = (d @ W3.T) * (h2 > 0)
        gW2[...] = h1.T @ dh2
        gb2[...] = dh2.sum(axis=0)
        dh1 = (dh2 @ W2.T) * (h1 > 0)
        gb1[...] = dh1.sum(axis=0)
        gW1[...] = 0
        np.add.at(gW1, rows.ravel(), np.repeat(dh1, self.C, axis=0))
        return loss

    def evaluate(self, x, y):
        logits = self.forward(x)[3]
        logits = logits - logits.max(axis=1, keepdims=True)
        lse = np.log(np.exp(logits).sum(axis=1))
        return float((lse - logits[np.arange(len(y)), y]).sum()), int((logits.argmax(1) == y).sum())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-s", "--steps", type=int, default=300)
    ap.add_argument("-b", "--batch", type=int, default=32, help="samples per rank per step")
    ap.add_argument("-c", "--context", type=int, default=8)
    ap.add_argument("-H", "--hidden", type=int, default=512)
    ap.add_argument("-e", "--epoch", type=int, default=50)
    ap.add_argument("-t", "--heldout", type=int, default=4096)
    ap.add_argument("-S", "--seed", type=int, default=1)
    ap.add_argument("-D", "--data-seed", type=int, default=1)
    ap.add_argument("-l", "--lr", type=float, default=2e-3)
    ap.add_argument("-g", "--glob", default="/usr/lib/python3*/*.py")
    ap.add_argument("-L", "--label", default="mpi4py")
    a = ap.parse_args()

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    train, test = load(a.glob)
    model = Model(a.context, a.hidden, a.seed)
    m = np.zeros_like(model.flat)
    v = np.zeros_like(model.flat)
    hrng = np.random.default_rng(0xE7A1)
    hpos = hrng.integers(0, len(test) - a.context - 1, a.heldout)[rank::size]
    hx = test[hpos[:, None] + np.arange(a.context)[None, :]].astype(np.int64)
    hy = test[hpos + a.context].astype(np.int64)
    plain_bytes = 2.0 * (size - 1) / size * model.flat.nbytes
    if rank == 0:
        print("# mpi4py trainer: %d ranks, %d parameters, batch %d x %d" %
              (size, model.flat.size, size, a.batch))
        print("# %6s %10s %10s %9s %9s" % ("step", "loss", "held-loss", "held-acc", "ms/step"))
    t0 = time.perf_counter()
    acc_loss, n_loss = 0.0, 0
    for step in range(1, a.steps + 1):
        drng = np.random.default_rng([a.data_seed, step])
        pos = drng.integers(0, len(train) - a.context - 1, size * a.batch)[rank * a.batch:(rank + 1) * a.batch]
        x = train[pos[:, None] + np.arange(a.context)[None, :]].astype(np.int64)
        y = train[pos + a.context].astype(np.int64)
        acc_loss += model.loss_grad(x, y)
        n_loss += 1
        comm.Allreduce(MPI.IN_PLACE, model.grad, op=MPI.SUM)  # what terse intercepts
        g = model.grad / size
        m *= 0.9
        m += 0.1 * g
        v *= 0.999
        v += 0.001 * g * g
        lr = a.lr * np.sqrt(1 - 0.999 ** step) / (1 - 0.9 ** step)
        model.flat -= (lr * m / (np.sqrt(v) + 1e-8)).astype(np.float32)
        if step % a.epoch == 0 or step == a.steps:
            sums = np.array([acc_loss / n_loss, *model.evaluate(hx, hy)], dtype=np.float64)
            comm.Allreduce(MPI.IN_PLACE, sums, op=MPI.SUM)  # float64: passed through by terse
            loss, hl, ha = sums[0] / size, sums[1] / a.heldout, sums[2] / a.heldout
            acc_loss, n_loss = 0.0, 0
            if not np.isfinite(loss):
                print("train.py: loss is not finite at step %d" % step, file=sys.stderr)
                return 3
            if rank == 0:
                print("  %6d %10.4f %10.4f %9.4f %9.2f" %
                      (step, loss, hl, ha, 1e3 * (time.perf_counter() - t0) / step))
                sys.stdout.flush()
    if rank == 0:
        print("RESULT label %s steps %d loss %.6f heldout_loss %.6f heldout_acc %.6f "
              "plain_bytes_per_step %.0f ms_per_step %.3f" %
              (a.label, a.steps, loss, hl, ha, plain_bytes, 1e3 * (time.perf_counter() - t0) / a.steps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
