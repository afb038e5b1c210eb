"""terse's PyTorch helper: tells libterse-nccl.so the per-parameter layout of every DDP bucket,
so layer-wise PowerSGD and the scheduler see matrices instead of flat segments (DESIGN.md
section 3, last bullets). Loaded without editing the training script:

  TERSE_TORCH_HELPER=1 PYTHONPATH=examples/ddp/terse_helper LD_PRELOAD=.../libterse-nccl.so \\
      torchrun --nproc_per_node 2 train.py

Python imports `sitecustomize` at start-up from sys.path; this one chains to any other
sitecustomize further down the path, and does nothing else unless TERSE_TORCH_HELPER=1.

What it does: when torch.nn.parallel.distributed is imported, DistributedDataParallel is patched
so that its first forward registers a communication hook (unless the script registered its own:
then the helper stays out of the way). The hook is PyTorch's default allreduce made explicit --
the bucket is scaled by 1/world_size with the same multiplication DDP's built-in path uses, then
all-reduced (SUM) in place -- so with terse off the gradients are bit-identical to DDP without a
hook. At hook step REGISTER_STEP (after DDP's bucket rebuild at iteration 1), on every rank, each
bucket's layout (offset, count, rows, cols of each parameter, in buffer order) goes to
terse_nccl_register_layout() just before that bucket's allreduce; terse binds it at that
allreduce, the same call on every rank. Without libterse-nccl.so loaded it registers nothing.
"""
import importlib.machinery
import importlib.util
import os
import sys

REGISTER_STEP = int(os.environ.get("TERSE_TORCH_HELPER_STEP", "1"))
_HERE = os.path.dirname(os.path.abspath(__file__))


def _chain():
    """Runs the next sitecustomize on sys.path (Debian's, a virtualenv's), if any."""
    path = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", path)
    if spec is None or spec.loader is None:
        return
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)
    except Exception as e:  # a broken site file must not stop the job: report, go on
        sys.stderr.write("terse helper: the next sitecustomize failed: %r\n" % (e,))


def layout_of(params, grads, buffer):
    """(offsets, counts, rows, cols) of the parameters of one bucket, in buffer order.

    params, grads: the bucket's parameters and their gradient views into `buffer` (DDP's
    GradBucket.parameters() / gradients()); shapes with 2 or more dimensions are matrices of
    shape[0] rows, 1-D ones flat (0, 0). Pure Python over .data_ptr(), .element_size(), .shape
    and .numel(), so it is testable without a GPU."""
    base, es = buffer.data_ptr(), buffer.element_size()
    rows_out = []
    for p, g in zip(params, grads):
        off = (g.data_ptr() - base) // es
        n = g.numel()
        shape = tuple(p.shape)
        if len(shape) >= 2 and shape[0] > 0:
            r, c = shape[0], n // shape[0]
        else:
            r, c = 0, 0
        rows_out.append((off, n, r, c))
    rows_out.sort()
    offsets = [x[0] for x in rows_out]
    counts = [x[1] for x in rows_out]
    rows = [x[2] for x in rows_out]
    cols = [x[3] for x in rows_out]
    return offsets, counts, rows, cols


class _HookState:
    def __init__(self, process_group):
        self.pg = process_group
        self.step = 0
        self.done = set()
        self.lib = None
        try:
            import ctypes
            fn = ctypes.CDLL(None).terse_nccl_register_layout
            fn.restype = ctypes.c_int
            self.lib = (ctypes, fn)
        except AttributeError:
            pass  # libterse-nccl.so is not loaded: plain allreduce, nothing to register

    def register(self, bucket):
        if self.lib is None or bucket.index() in self.done:
            return
        ctypes, fn = self.lib
        buf = bucket.buffer()
        offsets, counts, rows, cols = layout_of(bucket.parameters(), bucket.gradients(), buf)
        n = len(offsets)
        arr = ctypes.c_uint64 * n
        rc = fn(ctypes.c_void_p(buf.data_ptr()), ctypes.c_size_t(n), arr(*offsets),
                arr(*counts), arr(*rows), arr(*cols))
        if rc != 0:
            sys.stderr.write("terse helper: terse_nccl_register_layout returned %d for bucket %d\n"
                             % (rc, bucket.index()))
        self.done.add(bucket.index())


def _bookkeep(state, bucket):
    """Registers bucket's layout at hook step REGISTER_STEP; counts steps (DDP launches the
    buckets of a step in index order, the last one last)."""
    if state.step == REGISTER_STEP:
        state.register(bucket)
    if bucket.is_last():
        state.step += 1


def _hook(state, bucket):
    import torch.distributed as dist
    _bookkeep(state, bucket)
    buf = bucket.buffer()
    world = dist.get_world_size(state.pg)
    # DDP's built-in path multiplies by 1/world_size while copying into the bucket
    # (Reducer::copy_grad_to_bucket): the same product here keeps the bits (div_ would not).
    buf.mul_(1.0 / world)
    fut = dist.all_reduce(buf, group=state.pg, async_op=True).get_future()
    return fut.then(lambda f: f.value()[0])


def _patch_ddp(module):
    DDP = module.DistributedDataParallel
    if getattr(DDP, "_terse_patched", False):
        return
    orig_register = DDP.register_comm_hook
    orig_forward = DDP.forward

    def register_comm_hook(self, state, hook):
        self._terse_user_hook = True
        return orig_register(self, state, hook)

    def forward(self, *args, **kwargs):
        if not getattr(self, "_terse_checked", False):
            self._terse_checked = True
            if not getattr(self, "_terse_user_hook", False):
                orig_register(self, _HookState(self.process_group), _hook)
        return orig_forward(self, *args, **kwargs)

    DDP.register_comm_hook = register_comm_hook
    DDP.forward = forward
    DDP._terse_patched = True


class _Finder:
    """Patches torch.nn.parallel.distributed right after it is imported (torch itself is not
    imported by the helper: a script that never uses DDP pays nothing)."""
    TARGET = "torch.nn.parallel.distributed"

    def find_spec(self, name, path=None, target=None):
        if name != self.TARGET:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return None
        loader = spec.loader
        orig_exec = loader.exec_module

        def exec_module(module):
            orig_exec(module)
            _patch_ddp(module)
            sys.meta_path[:] = [f for f in sys.meta_path if f is not self]

        loader.exec_module = exec_module
        return spec


_chain()
if os.environ.get("TERSE_TORCH_HELPER", "0") == "1":
    sys.meta_path.insert(0, _Finder())
