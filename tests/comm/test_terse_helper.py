#!/usr/bin/env python3
"""The pure-Python parts of examples/ddp/terse_helper/sitecustomize.py, without torch or a GPU
(ctest shim_torch_helper, label cpu): layouts from fake tensors, the DDP patch on a fake
DistributedDataParallel (hook registered once, at the first forward, never over the user's
own hook), the hook's registration step, and that nothing happens without TERSE_TORCH_HELPER=1.
"""
import importlib.util
import os
import sys
import types

HELPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples", "ddp",
                      "terse_helper", "sitecustomize.py")
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL: " + what)


def load(env):
    old = os.environ.get("TERSE_TORCH_HELPER")
    if env is None:
        os.environ.pop("TERSE_TORCH_HELPER", None)
    else:
        os.environ["TERSE_TORCH_HELPER"] = env
    before = list(sys.meta_path)
    spec = importlib.util.spec_from_file_location("terse_sitecustomize_%s" % env, HELPER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    added = [f for f in sys.meta_path if f not in before]
    sys.meta_path[:] = before
    if old is None:
        os.environ.pop("TERSE_TORCH_HELPER", None)
    else:
        os.environ["TERSE_TORCH_HELPER"] = old
    return mod, added


class FakeTensor:
    def __init__(self, ptr, shape, es=4):
        self.ptr, self.shape, self.es = ptr, tuple(shape), es

    def data_ptr(self):
        return self.ptr

    def element_size(self):
        return self.es

    def numel(self):
        n = 1
        for s in self.shape:
            n *= s
        return n


def test_layout(mod):
    base = 1 << 20
    buf = FakeTensor(base, (1000,))
    # parameters listed out of buffer order; a gap of 4 elements before the bias
    params = [FakeTensor(0, (8, 4, 3)), FakeTensor(0, (10,)), FakeTensor(0, (16, 30))]
    grads = [FakeTensor(base + 4 * 480, (8, 4, 3)), FakeTensor(base + 4 * 580, (10,)),
             FakeTensor(base, (16, 30))]
    offsets, counts, rows, cols = mod.layout_of(params, grads, buf)
    check(offsets == [0, 480, 580], "offsets %r" % (offsets,))
    check(counts == [480, 96, 10], "counts %r" % (counts,))
    check(rows == [16, 8, 0], "rows %r" % (rows,))
    check(cols == [30, 12, 0], "cols %r" % (cols,))
    for r, c, n in zip(rows, cols, counts):
        check((r * c == n) or (r == 0 and c == 0), "shape %d x %d of %d" % (r, c, n))
    # 16-bit buffers: offsets in elements, not bytes
    buf2 = FakeTensor(base, (100,), es=2)
    o2, _, _, _ = mod.layout_of([FakeTensor(0, (5,)), FakeTensor(0, (5,))],
                                [FakeTensor(base, (5,), 2), FakeTensor(base + 10, (5,), 2)], buf2)
    check(o2 == [0, 5], "fp16 offsets %r" % (o2,))


class FakeDDP:
    def __init__(self):
        self.process_group = "pg"
        self.hooks = []
        self.forwards = 0

    def register_comm_hook(self, state, hook):
        if self.hooks:
            raise RuntimeError("register_comm_hook can only be called once")
        self.hooks.append((state, hook))

    def forward(self, x):
        self.forwards += 1
        return x


def test_patch(mod):
    fake = types.ModuleType("fake_distributed")
    fake.DistributedDataParallel = FakeDDP
    mod._patch_ddp(fake)
    mod._patch_ddp(fake)  # twice: patched once
    d = FakeDDP()
    check(d.forward(3) == 3, "forward result")
    d.forward(4)
    check(d.forwards == 2, "forward runs the original")
    check(len(d.hooks) == 1 and d.hooks[0][1] is mod._hook, "the helper's hook registered once")
    check(isinstance(d.hooks[0][0], mod._HookState), "with a hook state")
    check(d.hooks[0][0].lib is None, "no terse loaded: nothing to register with")
    u = FakeDDP()
    u.register_comm_hook(None, "user hook")
    u.forward(1)
    check(len(u.hooks) == 1 and u.hooks[0][1] == "user hook", "the user's hook wins")


class FakeBucket:
    def __init__(self, index, last):
        self.i, self.last = index, last

    def index(self):
        return self.i

    def is_last(self):
        return self.last


def test_register_step(mod):
    calls = []
    st = mod._HookState.__new__(mod._HookState)
    st.step, st.done, st.lib = 0, set(), None
    st.register = lambda b: calls.append((st.step, b.index()))
    for it in range(4):
        for i in range(3):
            mod._bookkeep(st, FakeBucket(i, i == 2))
    check(st.step == 4, "4 steps counted")
    check(calls == [(mod.REGISTER_STEP, 0), (mod.REGISTER_STEP, 1), (mod.REGISTER_STEP, 2)],
          "registration once per bucket at step %d: %r" % (mod.REGISTER_STEP, calls))


def main():
    off, added_off = load(None)
    check(added_off == [], "TERSE_TORCH_HELPER unset: no import hook")
    on, added_on = load("1")
    check(len(added_on) == 1 and isinstance(added_on[0], on._Finder), "TERSE_TORCH_HELPER=1: "
          "one import hook")
    check(added_on[0].find_spec("json") is None, "the import hook ignores other modules")
    test_layout(on)
    test_patch(on)
    test_register_step(on)
    if failures:
        print("%d failures" % len(failures))
        return 1
    print("ok: helper layout, patch, registration step, off by default")
    return 0


if __name__ == "__main__":
    sys.exit(main())
