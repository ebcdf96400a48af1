"""Helpers shared by the custom ops of the scans."""
import contextlib

import torch


@contextlib.contextmanager
def autograd_inside_op():
    """Differentiate inside a custom op's implementation: it runs below the Autograd dispatch keys (they are
    excluded thread-locally), so torch.autograd.grad would see no graph. This puts the thread's exclude set
    back without them for the block, and enables grad mode. Used by the backward ops of the torch and
    reference backends, which rebuild part of the forward and differentiate it."""
    keys = torch._C.DispatchKey
    exclude = torch._C._dispatch_tls_local_exclude_set()
    for key in (keys.AutogradFunctionality, keys.AutogradOther, keys.AutogradNestedTensor, keys.ADInplaceOrView):
        exclude = exclude.remove(key)
    with torch._C._ForceDispatchKeyGuard(torch._C._dispatch_tls_local_include_set(), exclude), \
            torch.enable_grad():
        yield


def no_alias(outputs, inputs):
    """outputs with every tensor that shares memory with an input or an earlier output cloned: a custom op's
    returns may alias neither (an autograd gradient can be its input gradient itself, T = 0 paths return
    fresh empties anyway)."""
    seen = {t.untyped_storage().data_ptr() for t in inputs if isinstance(t, torch.Tensor) and t.numel()}
    res = []
    for t in outputs:
        if t.numel():
            ptr = t.untyped_storage().data_ptr()
            if ptr in seen:
                t = t.clone()
                ptr = t.untyped_storage().data_ptr()
            seen.add(ptr)
        res.append(t)
    return tuple(res)
