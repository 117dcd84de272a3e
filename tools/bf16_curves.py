"""bfloat16 autocast against float32 training, through memnb's own trainer: 300-step loss curves on the TinyStories
sample, float32 with two seeds (the seed-to-seed spread) and bfloat16 with the first seed; `--extra-seeds` presets
get a third float32 seed and a second bfloat16 one.

    python tools/bf16_curves.py RUNS_DIR [--presets flashlm-cortex8,flashlm-nova,cpuflow-v97,cdm-v3] \
        [--json nbs/benchmarks/bf16-curves-cpu-2core.json] [--png nbs/benchmarks/bf16-curves-cpu-2core.png] \
        [--extra-seeds cpuflow-v97]

Each run is `memnb train` (compilation off, so that only the precision differs); a run whose JSON is already in
RUNS_DIR is not run again. The summary compares, per 50-step window and at the validations of steps 100, 200 and
300, the largest difference between bf16 and fp32 of the same seed with the range of the fp32 seeds.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

RUNS = [("fp32", 0), ("bf16", 0), ("fp32", 1)]
EXTRA = [("fp32", 2), ("bf16", 1)]
WINDOW, STEPS = 50, 300


def run_args(preset: str, data: Path) -> list[str]:
    "The batch, length and tokenizer of a preset's runs: cdm-v3 (GPT-2 vocabulary, 37M) at a quarter of the tokens."
    if preset.startswith("cdm"):
        return ["--batch-size", "2", "--seq-len", "128", "--tokenizer", str(data / "gpt2" / "tokenizer.json")]
    return ["--batch-size", "4", "--seq-len", "256", "--tokenizer", "bpe:4096"]


def train(preset: str, prec: str, seed: int, runs: Path, data: Path) -> Path:
    out = runs / f"{preset}-{prec}-{seed}"
    if not out.with_suffix(".json").exists():
        cmd = ["memnb", "train", "--preset", preset, "--data", str(data / "tinystories" / "train-v1.txt"),
               "--out", str(out), "--overwrite", "--max-steps", str(STEPS), "--precision", prec, "--seed", str(seed),
               "--eval-every", "50", "--compile", "off", "--json", str(out.with_suffix(".json")),
               *run_args(preset, data)]
        subprocess.run(cmd, check=True)
    return out.with_suffix(".json")


def windows(history: list) -> list[float]:
    "Mean training loss over each window of 50 steps."
    loss = [h["loss"] for h in history if "loss" in h][:STEPS]
    return [statistics.fmean(loss[i:i + WINDOW]) for i in range(0, len(loss), WINDOW)]


def val(history: list) -> dict:
    return {h["step"]: h["val_loss"] for h in history if "val_loss" in h and h["step"] % 100 == 0}


def _gap(xs: dict, a: str, b: str) -> list[float]:
    return [abs(x - y) for x, y in zip(xs[a], xs[b])]


def summary(hist: dict) -> dict:
    """bf16 against fp32 of the same seed (the largest over the bf16 seeds) and the range of the fp32 seeds, per
    window and at each validation."""
    w = {k: windows(h) for k, h in hist.items()}
    v = {k: val(h) for k, h in hist.items()}
    fp32 = sorted(k for k in hist if k.startswith("fp32"))
    pairs = [(k, "fp32" + k[4:]) for k in sorted(hist) if k.startswith("bf16")]
    bf16 = [max(g) for g in zip(*(_gap(w, a, b) for a, b in pairs))]
    seeds = [max(c) - min(c) for c in zip(*(w[k] for k in fp32))]
    steps = sorted(set.intersection(*(set(x) for x in v.values())))
    vb = {s: max(abs(v[a][s] - v[b][s]) for a, b in pairs) for s in steps}
    vs = {s: max(v[k][s] for k in fp32) - min(v[k][s] for k in fp32) for s in steps}
    return {"windows": w, "val_loss": v, "bf16_vs_fp32": bf16, "seed_spread": seeds,
            "val_bf16_vs_fp32": vb, "val_seed_spread": vs,
            "within_spread": all(b <= s for b, s in zip(bf16[1:], seeds[1:])),   # after the first 50 steps
            "val_within_spread": all(vb[s] <= vs[s] for s in steps)}


def plot(curves: dict, path: Path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(curves), figsize=(4 * len(curves), 3.2), squeeze=False)
    for ax, (preset, hist) in zip(axes[0], curves.items()):
        for name, h in hist.items():
            loss = [x["loss"] for x in h if "loss" in x][:STEPS]
            smooth = [statistics.fmean(loss[max(0, i - 9):i + 1]) for i in range(len(loss))]
            ax.plot(range(1, len(smooth) + 1), smooth, label=name.replace(" ", ", seed "), lw=1)
        ax.set_title(preset, fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss (10-step mean)")
        ax.legend(fontsize=7)
    fig.suptitle("bfloat16 autocast against float32, the same trainer and data", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", type=Path, help="folder for the runs (reused: finished runs are not repeated)")
    p.add_argument("--presets", default="flashlm-cortex8,flashlm-nova,cpuflow-v97,cdm-v3")
    p.add_argument("--data", type=Path, default=Path(os.environ.get("MEMNB_DATA", "../shared/data")))
    p.add_argument("--json", type=Path, help="write the summary here")
    p.add_argument("--png", type=Path, help="write the plot here")
    p.add_argument("--extra-seeds", default="", help="presets that also get fp32 seed 2 and bf16 seed 1")
    args = p.parse_args(argv)
    args.runs.mkdir(parents=True, exist_ok=True)
    curves, out = {}, {"what": __doc__.splitlines()[0], "steps": STEPS, "window": WINDOW, "presets": {}}
    for preset in args.presets.split(","):
        hist = {f"{prec} {seed}": json.loads(train(preset, prec, seed, args.runs, args.data).read_text())["history"]
                for prec, seed in RUNS + (EXTRA if preset in args.extra_seeds.split(",") else [])}
        curves[preset] = hist
        out["presets"][preset] = {"setting": run_args(preset, args.data)[:4], **summary(hist)}
        s = out["presets"][preset]
        print(f"{preset}: |bf16 - fp32| per window {[round(x, 3) for x in s['bf16_vs_fp32']]}, "
              f"seed spread {[round(x, 3) for x in s['seed_spread']]}; validation {s['val_bf16_vs_fp32']} "
              f"against {s['val_seed_spread']}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    if args.png:
        plot(curves, args.png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
