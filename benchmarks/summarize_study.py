#!/usr/bin/env python
"""Summarise the Fashion-MNIST accuracy study (issue 5): runs of train.py, one folder per (model, seed).

    python benchmarks/summarize_study.py --runs /tmp/fmnist-study --out output/study \
        [--env env.json] [--command "bash scripts/gpu_fmnist_study.sh"]
    python benchmarks/summarize_study.py --tar study_runs.tar.gz --out output/study

Reads what train.py writes in each run folder (``epochs.csv``, ``steps.csv``, ``summary.json``,
``config.yaml``, the stdout/stderr log ``train.log``) plus ``run_meta.json`` written by
scripts/gpu_fmnist_study.sh (model tag, seed, GPU, exit code, wall time). A run that crashed or was
killed has no summary.json: what its epochs.csv holds is still used, and it is reported as such.

Writes ``study.md`` (a table per pair, the verdicts), ``study.json`` (every number),
``study_curves.png`` (train loss, val loss and val top-1 per epoch; mean over seeds, min/max band) and
``study_top1_vs_speed.png`` (final top-1 against training img/s, one point per model, mean and
standard deviation over seeds). The reference models a user would pick instead (deit_tiny beside
the isotropic pair, mambaout_femto beside the hierarchical one) are compared with the GKA model of
their group when their runs are present.
"""
from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import math
import re
import statistics
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

DEFAULT_PAIRS = [("gka_tiny", "mamba_vim_tiny"), ("gkavision_tiny", "mambavision_tiny")]
# the references beside each pair, compared with the pair's GKA model when both have runs
REFERENCE_PAIRS = [("gka_tiny", "deit_tiny"), ("gkavision_tiny", "mambaout_femto")]
# the engine raises this on a non-finite training loss (gka_vision/engine/loop.py): no step is skipped
NONFINITE_RE = re.compile(r"FloatingPointError|training loss is (nan|inf|-inf)", re.I)


def _f(x) -> float:
    """CSV cell -> float; empty -> nan."""
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def _read_csv(path: Path) -> List[Dict[str, str]]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _yaml_get(text: str, dotted: str) -> Optional[str]:
    """A scalar from the merged config.yaml train.py writes (2-space nesting), without a YAML library."""
    want = dotted.split(".")
    stack: List[str] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#") or line.lstrip().startswith("- "):
            continue
        indent = (len(line) - len(line.lstrip())) // 2
        m = re.match(r"\s*([^:]+):\s*(.*)$", line)
        if not m:
            continue
        stack = stack[:indent] + [m.group(1).strip()]
        if stack == want:
            v = m.group(2).strip()
            return v.strip("'\"") if v else None
    return None


def load_run(d: Path) -> dict:
    """One run folder -> a record with every number the study needs."""
    meta = json.loads((d / "run_meta.json").read_text()) if (d / "run_meta.json").exists() else {}
    summary = json.loads((d / "summary.json").read_text()) if (d / "summary.json").exists() else None
    cfg_text = (d / "config.yaml").read_text() if (d / "config.yaml").exists() else ""
    log = (d / "train.log").read_text(errors="replace") if (d / "train.log").exists() else ""
    epochs = _read_csv(d / "epochs.csv")
    steps = _read_csv(d / "steps.csv")

    seed = meta.get("seed", _yaml_get(cfg_text, "seed"))
    scheduled = meta.get("epochs") or _yaml_get(cfg_text, "sched.epochs")
    batch = _yaml_get(cfg_text, "data.batch_size")
    model_name = (summary or {}).get("model") or _yaml_get(cfg_text, "model.name")
    tag = meta.get("tag") or model_name or d.name

    ev = [r for r in epochs if r.get("val_top1")]
    top1 = [_f(r["val_top1"]) for r in ev]
    m = re.search(r"(\d+) train samples", log)
    n_train = int(m.group(1)) if m else None
    if n_train is None and steps and batch and epochs:  # fallback: batches x batch size (slight overcount)
        n_train = int(epochs[0]["step"]) * int(batch)
    epoch_times = [_f(r["epoch_time_s"]) for r in epochs]
    step_loss = [_f(r["loss"]) for r in steps]
    nonfinite_steps = sum(1 for x in step_loss if not math.isfinite(x))
    nonfinite_epochs = sum(1 for r in epochs for k in ("train_loss", "val_loss")
                           if r.get(k) not in (None, "") and not math.isfinite(_f(r[k])))
    nonfinite_error = bool(NONFINITE_RE.search(log))
    am = re.search(r"amp (torch\.\w+|None)", log)
    rc = meta.get("rc")
    epochs_done = len(epochs)
    if rc is not None and rc != 0:
        status = ("killed by the study deadline" if rc in (124, 137, 143) else
                  "non-finite loss (FloatingPointError)" if nonfinite_error else f"crashed (rc {rc})")
    elif summary is None:
        status = "no summary.json (did not finish)"
    elif "stopping after epoch" in log:
        status = "stopped by time_limit_min"
    elif scheduled is not None and epochs_done < int(scheduled):
        status = "incomplete"
    else:
        status = "completed"
    train_s = sum(t for t in epoch_times if math.isfinite(t))
    return {
        "dir": str(d), "tag": tag, "model": model_name, "seed": int(seed) if seed is not None else None,
        "gpu": meta.get("gpu"), "rc": rc, "status": status,
        "epochs_scheduled": int(scheduled) if scheduled is not None else None,
        "epochs_done": epochs_done, "epochs_evaluated": len(ev),
        "final_top1": top1[-1] if top1 else None, "best_top1": max(top1) if top1 else None,
        "final_top5": _f(ev[-1]["val_top5"]) if ev else None,
        "final_ema_top1": _f(ev[-1]["ema_top1"]) if ev and ev[-1].get("ema_top1") else None,
        "top1_per_epoch": top1,
        "train_loss_per_epoch": [_f(r["train_loss"]) for r in epochs],
        "val_loss_per_epoch": [_f(r["val_loss"]) for r in ev],
        "epoch_time_s": epoch_times,
        "train_time_s": (summary or {}).get("train_time_s"),  # train.py's own clock: setup + epochs + evals
        "wall_s": meta.get("wall_s"),  # the process, from launch to exit (imports, compile, export included)
        "train_epochs_s": round(train_s, 1),
        "img_per_s": round(n_train * len(epoch_times) / train_s, 1) if n_train and train_s > 0 else None,
        "n_train": n_train, "val_count": ((summary or {}).get("final") or {}).get("count"), "params": (summary or {}).get("params"),
        "amp": am.group(1) if am else None,
        "steps_logged": len(step_loss), "nonfinite_steps": nonfinite_steps, "nonfinite_epoch_values": nonfinite_epochs,
        "nonfinite_error": nonfinite_error,
        "finite": nonfinite_steps == 0 and nonfinite_epochs == 0 and not nonfinite_error,
        "skipped_samples": int(_f(epochs[-1]["skipped_samples"])) if epochs and epochs[-1].get("skipped_samples") else 0,
    }


def find_runs(root: Path) -> List[dict]:
    dirs = sorted({p.parent for pat in ("run_meta.json", "epochs.csv", "config.yaml") for p in root.rglob(pat)})
    return [load_run(d) for d in dirs]


def _stats(xs: List[float]) -> dict:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    if not xs:
        return {"n": 0, "mean": None, "std": None, "min": None, "max": None}
    return {"n": len(xs), "mean": statistics.fmean(xs), "std": statistics.stdev(xs) if len(xs) > 1 else 0.0,
            "min": min(xs), "max": max(xs)}


def aggregate(runs: List[dict], tag: str) -> dict:
    rs = sorted([r for r in runs if r["tag"] == tag], key=lambda r: (r["seed"] is None, r["seed"]))
    return {
        "tag": tag, "model": rs[0]["model"] if rs else None, "runs": len(rs),
        "seeds": [r["seed"] for r in rs],
        "top1": _stats([r["final_top1"] for r in rs]),
        "best_top1": _stats([r["best_top1"] for r in rs]),
        "ema_top1": _stats([r["final_ema_top1"] for r in rs]),
        "train_time_s": _stats([r["train_time_s"] if r["train_time_s"] is not None else r["wall_s"] for r in rs]),
        "img_per_s": _stats([r["img_per_s"] for r in rs]),
        "epochs_done": sorted({r["epochs_done"] for r in rs}),
        "all_finite": all(r["finite"] for r in rs) if rs else None,
        "params": rs[0]["params"] if rs else None,
    }


def compare_pair(runs: List[dict], a: str, b: str) -> dict:
    A, B = aggregate(runs, a), aggregate(runs, b)
    pr = [r for r in runs if r["tag"] in (a, b)]
    problems = []
    if A["runs"] == 0 or B["runs"] == 0:
        problems.append(f"missing runs: {a} has {A['runs']}, {b} has {B['runs']}")
    done = sorted({r["epochs_done"] for r in pr})
    sched = sorted({r["epochs_scheduled"] for r in pr if r["epochs_scheduled"] is not None})
    equal = len(done) == 1 and len(sched) <= 1 and (not sched or done[0] == sched[0])
    if len(done) > 1:
        problems.append("runs completed different numbers of epochs (" + ", ".join(
            f"{r['tag']} seed {r['seed']}: {r['epochs_done']}" for r in pr) + "): the budget was NOT equal")
    elif sched and done and done[0] != sched[0]:
        problems.append(f"every run stopped after {done[0]} of {sched[0]} scheduled epochs (the lr schedule "
                        f"did not finish): equal epochs, but not the planned budget")
    if len(sched) > 1:
        problems.append(f"scheduled epochs differ ({sched}): the budget was NOT equal")
    seeds_a, seeds_b = sorted(s for s in A["seeds"] if s is not None), sorted(s for s in B["seeds"] if s is not None)
    if seeds_a != seeds_b:
        problems.append(f"different seeds: {a} {seeds_a}, {b} {seeds_b}")
    for r in pr:
        if r["status"] != "completed":
            problems.append(f"{r['tag']} seed {r['seed']}: {r['status']}")
        if not r["finite"]:
            problems.append(f"{r['tag']} seed {r['seed']}: non-finite loss ({r['nonfinite_steps']} steps, "
                            f"error in log: {r['nonfinite_error']})")
    crashed = [r for r in pr if r["rc"] not in (None, 0)]
    if crashed:
        problems.append(f"{len(crashed)} run(s) exited non-zero: the budget was NOT equal")
    out = {"a": A, "b": B, "problems": problems,
           "equal_budget": equal and len(sched) <= 1 and seeds_a == seeds_b and not crashed}
    ma, mb = A["top1"]["mean"], B["top1"]["mean"]
    if ma is None or mb is None:
        out["verdict"] = "no comparison: a model has no evaluated epoch"
        return out
    diff = ma - mb
    win, lose = (A, B) if diff >= 0 else (B, A)
    na, nb = A["top1"]["n"], B["top1"]["n"]
    se = math.sqrt(A["top1"]["std"] ** 2 / na + B["top1"]["std"] ** 2 / nb)
    separated = win["top1"]["min"] > lose["top1"]["max"]  # every seed of the winner beats every seed of the loser
    exceeds = abs(diff) > 2 * se and separated and min(na, nb) >= 2
    out.update(diff=diff, se_diff=se, ranges_separated=separated, exceeds_spread=exceeds, winner=win["tag"])
    if diff == 0:
        v = f"{a} and {b} tie at {ma:.2f}% mean top-1"
    else:
        v = (f"{win['tag']} wins: {win['top1']['mean']:.2f}% vs {lose['top1']['mean']:.2f}% mean top-1 "
             f"(+{abs(diff):.2f} points). ")
        if min(na, nb) < 2:
            v += "Fewer than 2 seeds on a side: the seed spread is unknown, so this says nothing about significance."
        elif exceeds:
            v += (f"The difference exceeds the seed spread: larger than 2x its standard error ({se:.2f}) and every "
                  f"seed of {win['tag']} beats every seed of {lose['tag']}.")
        else:
            v += (f"The difference does NOT clearly exceed the seed spread (standard error of the difference "
                  f"{se:.2f}; seed ranges {'do not overlap' if separated else 'overlap'}).")
    if not out["equal_budget"]:
        v += " Caveat: the budget was not equal (see the problems listed)."
    out["verdict"] = v
    return out


def _fmt(x, nd=2, unit=""):
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{nd}f}{unit}"


def _ms(s: dict, nd=2) -> str:
    if not s["n"]:
        return "n/a"
    return f"{s['mean']:.{nd}f} ± {s['std']:.{nd}f}" + (f" (n={s['n']})" if s["n"] != 3 else "")


def write_markdown(path: Path, runs: List[dict], pairs: List[dict], env: dict, command: Optional[str]) -> None:
    L = ["# Fashion-MNIST accuracy study: GKA vs Mamba (and references) at equal budget", ""]
    L.append(f"- date (UTC): {env.get('date_utc') or _dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M')}")
    if command:
        L.append(f"- command: `{command}`")
    for k in ("hardware", "gpus", "cpu_count", "torch", "cuda", "triton", "timm", "python", "launch"):
        if env.get(k) not in (None, "", []):
            L.append(f"- {k}: {env[k]}")
    counts = sorted({r["val_count"] for r in runs if r["val_count"]})
    gpus: Dict[str, int] = {}
    for r in runs:
        gpus[str(r["gpu"])] = gpus.get(str(r["gpu"]), 0) + 1
    L.append(f"- layout: {len(runs)} single-process train.py runs launched together; runs per GPU: "
             + ", ".join(f"{g}: {n}" for g, n in sorted(gpus.items())))
    L += [f"- top-1: validation top-1 (%) on the {'/'.join(f'{c:,}' for c in counts) or '?'} test images after the last epoch (raw "
          "weights; EMA column separate), mean ± sample std over seeds",
          "- time: train.py's `train_time_s` (setup, all epochs, evaluations); img/s: training images per "
          "second of the training epochs (evaluation excluded). Runs shared their GPU with other study runs, "
          "so times compare runs under the same sharing, not a model alone on a GPU.",
          "- finite: every logged training loss (steps.csv) and every epoch loss was finite and no "
          "non-finite-loss error is in the log. The engine does not skip non-finite steps: it stops the run "
          "(FloatingPointError), so the count of skipped steps is 0 by construction.", ""]
    for p in pairs:
        A, B = p["a"], p["b"]
        L += [f"## {A['tag']} vs {B['tag']}", ""]
        L.append(f"**Verdict:** {p['verdict']}")
        L.append("")
        if p["equal_budget"]:
            L.append(f"Equal budget: yes (every run completed the same {A['epochs_done'][0] if A['epochs_done'] else '?'}"
                     f" epochs, same seeds).")
        else:
            L.append("**Equal budget: NO.**")
        for pr in p["problems"]:
            L.append(f"- {pr}")
        L += ["", "| model | params | seeds | final top-1 per seed | top-1 mean ± std | best-epoch top-1 | "
              "EMA top-1 | epochs done / scheduled | train time per run (s) | img/s | bf16/amp | finite |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for agg in (A, B):
            rs = sorted([r for r in runs if r["tag"] == agg["tag"]], key=lambda r: (r["seed"] is None, r["seed"]))
            L.append("| " + " | ".join([
                f"{agg['tag']} (`{agg['model']}`)",
                f"{agg['params'] / 1e6:.2f}M" if agg["params"] else "n/a",
                ", ".join(str(r["seed"]) for r in rs),
                ", ".join(_fmt(r["final_top1"]) for r in rs),
                _ms(agg["top1"]), _ms(agg["best_top1"]), _ms(agg["ema_top1"]),
                ", ".join(f"{r['epochs_done']}/{r['epochs_scheduled']}" for r in rs),
                ", ".join(_fmt(r["train_time_s"] if r["train_time_s"] is not None else r["wall_s"], 0) for r in rs),
                _ms(agg["img_per_s"], 0),
                ", ".join(sorted({str(r["amp"]) for r in rs})),
                "n/a (no run)" if agg["all_finite"] is None else "yes" if agg["all_finite"] else "**NO**",
            ]) + " |")
        L.append("")
    L += ["## Every run", "", "| run | model | seed | GPU | rc | status | epochs | final / best top-1 | "
          "train time (s) | process wall (s) | img/s | non-finite steps | skipped samples |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(runs, key=lambda r: (r["tag"], r["seed"] is None, r["seed"])):
        L.append("| " + " | ".join(str(x) for x in [
            Path(r["dir"]).name, r["tag"], r["seed"], r["gpu"], r["rc"], r["status"],
            f"{r['epochs_done']}/{r['epochs_scheduled']}", f"{_fmt(r['final_top1'])} / {_fmt(r['best_top1'])}",
            _fmt(r["train_time_s"], 0), _fmt(r["wall_s"], 0), _fmt(r["img_per_s"], 0),
            r["nonfinite_steps"], r["skipped_samples"]]) + " |")
    L += ["", "## Top-1 against training speed", "",
          "`study_top1_vs_speed.png`: one point per model, final top-1 against training img/s (mean, error bars = "
          "std over seeds); img/s under the study's GPU sharing.", "",
          "| model | params | seeds | top-1 mean ± std | training img/s mean ± std |", "|---|---|---|---|---|"]
    for pt in speed_points(runs):
        L.append(f"| {pt['tag']} (`{pt['model']}`) | " + (f"{pt['params'] / 1e6:.2f}M" if pt["params"] else "n/a")
                 + f" | {pt['seeds']} | {pt['top1']:.2f} ± {pt['top1_std']:.2f} | "
                 f"{pt['img_per_s']:.0f} ± {pt['img_per_s_std']:.0f} |")
    L += ["", "Per-epoch val top-1 (mean over seeds):", ""]
    listed = set()
    for p in pairs:
        for agg in (p["a"], p["b"]):
            if agg["tag"] in listed:
                continue
            listed.add(agg["tag"])
            curve = _mean_curve([r["top1_per_epoch"] for r in runs if r["tag"] == agg["tag"]])[0]
            L.append(f"- {agg['tag']}: " + " / ".join(f"{x:.2f}" for x in curve))
    L += ["", "Curves: `study_curves.png` (train loss, val loss, val top-1 per epoch; line = mean over seeds, "
          "band = min..max). Per-run logs, epochs.csv, steps.csv, summary.json, config.yaml and curves.png: "
          "`study_runs.tar.gz`.", ""]
    path.write_text("\n".join(L))


def _mean_curve(curves: List[List[float]]):
    n = max((len(c) for c in curves), default=0)
    mean, lo, hi = [], [], []
    for i in range(n):
        xs = [c[i] for c in curves if i < len(c) and math.isfinite(c[i])]
        mean.append(statistics.fmean(xs) if xs else float("nan"))
        lo.append(min(xs) if xs else float("nan"))
        hi.append(max(xs) if xs else float("nan"))
    return mean, lo, hi


def plot(path: Path, runs: List[dict], pairs: List[dict]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator
    panels = [("train_loss_per_epoch", "train loss"), ("val_loss_per_epoch", "val loss"),
              ("top1_per_epoch", "val top-1 (%)")]
    fig, axes = plt.subplots(max(1, len(pairs)), 3, figsize=(15, 4 * max(1, len(pairs))), squeeze=False)
    for row, p in zip(axes, pairs):
        for ax, (key, title) in zip(row, panels):
            for agg, color in ((p["a"], "tab:blue"), (p["b"], "tab:orange")):
                mean, lo, hi = _mean_curve([r[key] for r in runs if r["tag"] == agg["tag"]])
                if not mean:
                    continue
                ep = list(range(1, len(mean) + 1))
                ax.plot(ep, mean, "o-", color=color, label=f"{agg['tag']} (n={agg['runs']})")
                ax.fill_between(ep, lo, hi, color=color, alpha=0.2)
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_title(f"{p['a']['tag']} vs {p['b']['tag']}: {title}")
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def speed_points(runs: List[dict]) -> List[dict]:
    """One point per model tag: mean / std over seeds of the final top-1 and of the training img/s."""
    pts = []
    for tag in sorted({r["tag"] for r in runs}):
        agg = aggregate(runs, tag)
        if agg["top1"]["n"] and agg["img_per_s"]["n"]:
            pts.append({"tag": tag, "model": agg["model"], "params": agg["params"], "seeds": agg["top1"]["n"],
                        "top1": agg["top1"]["mean"], "top1_std": agg["top1"]["std"],
                        "img_per_s": agg["img_per_s"]["mean"], "img_per_s_std": agg["img_per_s"]["std"]})
    return pts


def plot_top1_vs_speed(path: Path, runs: List[dict]) -> List[dict]:
    """Final top-1 against training img/s (error bars: std over seeds); returns the plotted points."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    pts = speed_points(runs)
    fig, ax = plt.subplots(figsize=(7, 5))
    for i, p in enumerate(pts):
        gka = p["tag"].startswith("gka")
        ax.errorbar(p["img_per_s"], p["top1"], xerr=p["img_per_s_std"], yerr=p["top1_std"], fmt="o" if gka else "s",
                    color=f"C{i % 10}", capsize=3, label=f"{p['tag']}" + (f" ({p['params'] / 1e6:.2f}M)" if p["params"] else ""))
        ax.annotate(p["tag"], (p["img_per_s"], p["top1"]), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xlabel("training img/s per run (the study's GPU sharing; mean over seeds)")
    ax.set_ylabel("final val top-1 (%)")
    ax.set_title("Fashion-MNIST study: top-1 against training speed")
    ax.grid(alpha=0.3)
    if pts:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return pts


def summarize(runs_root: Path, out: Path, pairs=DEFAULT_PAIRS, env: Optional[dict] = None,
              command: Optional[str] = None, references=REFERENCE_PAIRS) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    runs = find_runs(runs_root)
    if not runs:
        raise SystemExit(f"no run folders (epochs.csv / config.yaml / run_meta.json) under {runs_root}")
    tags = {r["tag"] for r in runs}
    use = [(a, b) for a, b in pairs if a in tags or b in tags]
    use += [(a, b) for a, b in references if a in tags and b in tags and (a, b) not in use]
    comps = [compare_pair(runs, a, b) for a, b in use]
    env = dict(env or {})
    env.setdefault("date_utc", _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M"))
    result = {"command": command, "env": env, "pairs": comps, "runs": runs}
    (out / "study.json").write_text(json.dumps(result, indent=1, default=str))
    write_markdown(out / "study.md", runs, comps, env, command)
    plot(out / "study_curves.png", runs, comps)
    result["speed_points"] = plot_top1_vs_speed(out / "study_top1_vs_speed.png", runs)
    (out / "study.json").write_text(json.dumps(result, indent=1, default=str))
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--runs", help="folder holding one subfolder per run")
    src.add_argument("--tar", help="study_runs.tar.gz made by scripts/gpu_fmnist_study.sh")
    ap.add_argument("--out", required=True, help="where study.md / study.json / study_curves.png go")
    ap.add_argument("--env", help="env.json written by the study script (GPU names, versions)")
    ap.add_argument("--command", help="the command that produced the runs, quoted in study.md")
    ap.add_argument("--pairs", default=",".join(f"{a}:{b}" for a, b in DEFAULT_PAIRS),
                    help="comma-separated a:b run tags to compare (default: %(default)s)")
    args = ap.parse_args(argv)
    pairs = [tuple(p.split(":")) for p in args.pairs.split(",") if p]
    env = json.loads(Path(args.env).read_text()) if args.env and Path(args.env).exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.runs) if args.runs else Path(tmp)
        if args.tar:
            with tarfile.open(args.tar) as t:
                t.extractall(tmp, filter="data") if sys.version_info >= (3, 12) else t.extractall(tmp)
            if not env and list(root.rglob("env.json")):
                env = json.loads(next(root.rglob("env.json")).read_text())
        res = summarize(root, Path(args.out), pairs, env, args.command)
    for p in res["pairs"]:
        print(p["verdict"])
        for pr in p["problems"]:
            print("  -", pr)
    print(f"wrote {args.out}/study.md, study.json, study_curves.png, study_top1_vs_speed.png ({len(res['runs'])} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
