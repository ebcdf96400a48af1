"""Scan outputs kept by a checkpointed region and handed back when the region is recomputed in the backward.

Selective recomputation (layers/blocks.py) reruns a block in the backward except its scans. Under torch.compile
a selective checkpoint policy does that (Inductor's partitioner reads it once, at compile time). In eager mode such
a policy runs every op of the block through a Python dispatch mode, twice per step, which on the H200 left the GPU
idle for about a quarter of a gka_tiny step at 1024 px (docs/benchmarks.md, "Activation memory at 1024 px"). This
module is the eager route: a plain non-reentrant checkpoint whose region records, in the forward, the outputs of
each scan op it calls (the first of `ScanReplay.contexts()`), and whose recomputation gets them back instead of scanning again
(the second). Only the scan entry points consult it (`call_scan`), so no other op pays anything.

A replayed scan must save for its backward the same tensors, in the same order, as the original call did: the
checkpoint matches the tensors the recomputation saves to those the forward's graph asked for, one by one. So the
replay runs the op's own autograd `setup_context` on the recomputed inputs and the kept outputs (`_Replay`); its
backward is never called, the forward's graph node is.
"""
import threading

import torch

__all__ = ['ScanReplay', 'call_scan']

_state = threading.local()  # .active: (ScanReplay, recording?) of the innermost region, on this thread


class _Region:
    """Context manager (re-enterable: a graph kept with retain_graph is recomputed once per backward) making
    `replay` the active region of this thread, recording or replaying."""

    def __init__(self, replay: 'ScanReplay', recording: bool):
        self.replay, self.recording, self._outer = replay, recording, []

    def __enter__(self):
        self._outer.append(getattr(_state, 'active', None))
        _state.active = (self.replay, self.recording)
        if not self.recording:
            self.replay.next = 0
        return self

    def __exit__(self, *exc):
        _state.active = self._outer.pop()
        return False


class ScanReplay:
    """The scan outputs of one region, in call order. `contexts()` gives the two contexts of a checkpoint's
    `context_fn` (forward, recomputation). The contexts point to it and it points to neither, so it (and the
    outputs it keeps) is freed by reference counting with the checkpoint that holds the recomputation's context."""

    def __init__(self):
        self.outputs = []
        self.next = 0

    def contexts(self):
        return _Region(self, True), _Region(self, False)


class _Replay(torch.autograd.Function):
    """Returns kept outputs as if the op had computed them from `inputs`, saving what the op's autograd saves."""

    @staticmethod
    def forward(setup_context, kept, *inputs):
        return tuple(t.detach() for t in kept)

    @staticmethod
    def setup_context(ctx, inputs, output):
        setup_context, _, *op_inputs = inputs
        setup_context(ctx, tuple(op_inputs), output)

    @staticmethod
    def backward(ctx, *grads):  # the checkpoint discards the recomputed graph: only its saved tensors are used
        raise RuntimeError('scan_replay: the backward of a replayed scan is never run (the original node is)')


def call_scan(op, setup_context, *args):
    """op(*args) (a scan custom op returning a tuple of tensors, whose autograd saves with `setup_context`), recorded
    in the active region's forward or replayed from it in its recomputation; a plain call outside any region and
    under torch.compile (which keeps scan outputs by its own policy)."""
    active = None if torch.compiler.is_compiling() else getattr(_state, 'active', None)
    if active is None:
        return op(*args)
    replay, recording = active
    if recording:
        out = op(*args)
        replay.outputs.append(tuple(t.detach() for t in out))
        return out
    if replay.next >= len(replay.outputs):
        raise RuntimeError('scan_replay: the recomputation called more scans than its forward did')
    kept = replay.outputs[replay.next]
    replay.next += 1
    return _Replay.apply(setup_context, kept, *args)
