"""A/B of BidirectionalGKAMixer's conv layout, side by side in one process: the mixer as it is (channels-last view of
the token map into the depthwise conv, a contiguous view back) against the same mixer with the layout of commit
3f36184 (x.transpose(1, 2).reshape(B, C, H, W) in, .flatten(2).transpose(1, 2) out); forward + backward of the
mixer under bf16 autocast, interleaved rounds, median ms. Usage: python ab_conv_layout.py [B H W C heads]."""
import statistics
import sys
import types

import torch
import torch.nn.functional as F

from gka_vision.layers import BidirectionalGKAMixer


def old_forward(self, x, hw):
    B, N, C = x.shape
    H, W = hw
    u = self.conv(x.transpose(1, 2).reshape(B, C, H, W))
    u = F.silu(u).flatten(2).transpose(1, 2)
    return u


def new_forward(self, x, hw):
    B, N, C = x.shape
    H, W = hw
    u = self.conv(x.reshape(B, H, W, C).permute(0, 3, 1, 2))
    return F.silu(u).permute(0, 2, 3, 1).reshape(B, N, C)


def time_ms(fn, iters=5):
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters


def main():
    B, H, W, C, heads = (int(a) for a in (sys.argv[1:] or [16, 128, 128, 192, 3]))
    torch.manual_seed(0)
    m = BidirectionalGKAMixer(C, heads).cuda()
    x = torch.randn(B, H * W, C, device='cuda', requires_grad=True)
    qkv = torch.nn.Linear(C, 3 * C, bias=False).cuda()  # the projection after the conv, as in the mixer

    def conv_step(layout):
        def run():
            with torch.autocast('cuda', dtype=torch.bfloat16):
                u = layout(m, x, (H, W))
                y = qkv(u)
            y.float().sum().backward()
        return run

    def mixer_step():
        with torch.autocast('cuda', dtype=torch.bfloat16):
            y = m(x, (H, W))
        y.float().sum().backward()

    rows = {'conv+qkv, old layout': conv_step(old_forward), 'conv+qkv, new layout': conv_step(new_forward)}
    for fn in rows.values():
        fn(); fn()
    times = {k: [] for k in rows}
    for _ in range(7):
        for k, fn in rows.items():
            times[k].append(time_ms(fn))
    print(f'shape B={B} H={H} W={W} C={C} heads={heads}; fwd+bwd under bf16 autocast, median of 7 interleaved rounds')
    for k, v in times.items():
        print(f'{k}: {statistics.median(v):.3f} ms (min {min(v):.3f})')
    mixer_step(); mixer_step()
    print(f'whole mixer (new layout): {statistics.median([time_ms(mixer_step) for _ in range(3)]):.3f} ms')


if __name__ == '__main__':
    main()
