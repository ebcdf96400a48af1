"""Interleaved A/B timing of training steps: several models (or variants of one) timed in alternating rounds.

compare.py times each row once, one after the other, so a slow phase of the machine (another process, clocks,
the host) lands on one row only. Here every row is built and warmed up first; then each of --rounds rounds times
--steps training steps of every row (forward + backward + AdamW step under autocast, the inputs of compare.py),
the order rotated by one row each round. A row's result is the median over rounds of its per-round median step;
the spread (min and max of the per-round values) shows whether a difference is larger than the noise.

Rows are compare.py's: NAME, NAME@VARIANT (VARIANT_KWARGS, e.g. @torchnorm or @unfused), NAME@compile.

Examples:
    python benchmarks/ab_train.py --models gka_tiny_patch16_224 gka_tiny_patch16_224@torchnorm --rounds 6
    python benchmarks/ab_train.py --smoke --json /tmp/ab.json    # seconds on a CPU: two shallow models
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any, Dict, List, Sequence

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402  (benchmarks/compare.py: model rows, scan selection, environment)

SMOKE_ROWS = ['gka_tiny_patch16_224', 'gka_tiny_patch16_224@torchnorm']
SMOKE_KWARGS = dict(depth=2)  # --smoke: shallow models


def rotation(rows: Sequence[str], r: int) -> List[str]:
    """The order of round r: rows rotated left by r (every row leads once every len(rows) rounds)."""
    k = r % len(rows)
    return list(rows[k:]) + list(rows[:k])


def summarize(per_round: Dict[str, List[float]], batch: int, reference: str) -> List[Dict[str, Any]]:
    """One line per row from its per-round median step times (s): median img/s over rounds, the min and max of
    the rounds' img/s, and the ratio of the median to `reference`'s."""
    ref = batch / statistics.median(per_round[reference])
    out = []
    for row, times in per_round.items():
        img_s = [batch / t for t in times]
        med = batch / statistics.median(times)
        out.append(dict(row=row, img_s=med, min_img_s=min(img_s), max_img_s=max(img_s), ratio=med / ref,
                        rounds=len(times)))
    return out


class Step:
    """A row's model, batch and training step (compare.train_step)."""

    def __init__(self, row: str, batch: int, res: int, dtype: torch.dtype, device: torch.device, extra=None):
        model = compare.build_model(row, res, None, device, extra)
        self.device = device
        x = torch.randn(batch, getattr(model, 'in_chans', 3), res, res, device=device)
        self.step = compare.train_step(model, x, dtype)

    def __call__(self) -> torch.Tensor:
        return self.step()

    def timed(self, steps: int) -> float:
        """The median time (s) of `steps` steps, each synchronised."""
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            self()
            compare._sync(self.device)
            times.append(time.perf_counter() - t0)
        return statistics.median(times)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--models', nargs='+', default=None, help="rows (compare.py's names); the first is the reference")
    p.add_argument('--batch', type=int, default=128)
    p.add_argument('--res', type=int, default=224)
    p.add_argument('--rounds', type=int, default=5)
    p.add_argument('--steps', type=int, default=10, help='timed steps per row and round')
    p.add_argument('--warmup', type=int, default=3, help='untimed steps per row before the first round')
    p.add_argument('--dtype', choices=['bf16', 'fp16', 'fp32'], default='bf16')
    p.add_argument('--device', default=None, help='default: cuda when available, else cpu')
    p.add_argument('--json', default=None, help='write the per-round times and the summary here')
    p.add_argument('--smoke', action='store_true',
                   help='two rows of a 2-block gka_tiny at batch 2, 32 px (seconds on a CPU)')
    args = p.parse_args(argv)
    if args.smoke:
        args.models = args.models or SMOKE_ROWS
        args.batch, args.res = 2, 32
        args.rounds, args.steps, args.warmup = min(args.rounds, 2), min(args.steps, 2), 1
    if not args.models:
        p.error('--models: name at least one row (or use --smoke)')
    if min(args.batch, args.res, args.rounds, args.steps) < 1 or args.warmup < 0:
        p.error('--batch, --res, --rounds and --steps must be positive, --warmup not negative')
    if len(set(args.models)) != len(args.models):
        p.error('--models: a row is named twice')
    for row in args.models:
        if not compare._known_model(row):
            p.error(f'--models: unknown model or variant {row!r}')
    return args


def main(argv=None) -> Dict[str, Any]:
    args = parse_args(argv)
    device = torch.device(args.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    dtype = {'bf16': torch.bfloat16, 'fp16': torch.float16, 'fp32': torch.float32}[args.dtype]
    steps = {}
    for row in args.models:
        extra = SMOKE_KWARGS if args.smoke else None
        steps[row] = Step(row, args.batch, args.res, dtype, device, extra)
        for _ in range(args.warmup):
            loss = steps[row]()
        compare._sync(device)
        if args.warmup and not bool(torch.isfinite(loss).all()):
            raise SystemExit(f'ab_train: non-finite loss in the warm-up of {row}')
    per_round: Dict[str, List[float]] = {row: [] for row in args.models}
    order = []
    for r in range(args.rounds):
        order.append(rotation(args.models, r))
        for row in order[-1]:
            per_round[row].append(steps[row].timed(args.steps))
    lines = summarize(per_round, args.batch, args.models[0])
    scans = {row: compare.scan_backend_used(row, device, None) for row in args.models}
    env = compare.environment(device, [])
    env['command'] = ' '.join(['python', 'benchmarks/ab_train.py'] + (sys.argv[1:] if argv is None else list(argv)))
    env['finished'] = True
    print(f'# ab_train: batch {args.batch}, {args.res} px, {args.dtype}, {args.rounds} rounds x {args.steps} steps, '
          f'{env.get("gpu", env["cpu"])}, torch {env["torch"]}, triton {env["triton"]}, {env["date"]}')
    print(f'{"row":44s} {"scan":28s} {"img/s":>8s} {"min":>8s} {"max":>8s} {"ratio":>6s}')
    for line in lines:
        print(f'{line["row"]:44s} {scans[line["row"]]:28s} {line["img_s"]:8.1f} {line["min_img_s"]:8.1f} '
              f'{line["max_img_s"]:8.1f} {line["ratio"]:6.3f}')
    result = dict(args=vars(args), environment=env, scans=scans, order=order,
                  step_s=per_round, summary=lines)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == '__main__':
    main()
