"""mpi4py under libterse-mpi.so (run by shim_test.sh mpi4py): Comm.Allreduce of large float32
arrays gets compressed sums (from the step where the call cycle recurred), int32 arrays exact
sums, and every rank the same bytes. Prints one line per step."""
import zlib

import numpy as np
from mpi4py import MPI

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
n = 1 << 18
for step in range(7):
    rng = np.random.default_rng(1000 * rank + step)
    x = rng.standard_normal(n).astype(np.float32)
    exact = np.sum(comm.allgather(x.astype(np.float64)), axis=0)   # pickled: not intercepted
    y = np.empty_like(x)
    comm.Allreduce(x, y, op=MPI.SUM)
    rel = float(np.linalg.norm(y - exact) / np.linalg.norm(exact))
    ints = rng.integers(-1000, 1000, n // 4).astype(np.int32)
    iy = np.empty_like(ints)
    comm.Allreduce(ints, iy, op=MPI.SUM)
    ok_ints = int(np.array_equal(iy, np.sum(comm.allgather(ints), axis=0).astype(np.int32)))
    same = int(len(set(comm.allgather(zlib.crc32(y.tobytes())))) == 1)
    if rank == 0:
        print("step %d relerr %.3e ints %d identical %d" % (step, rel, ok_ints, same), flush=True)
if rank == 0:
    print("done", flush=True)
