"""bf16 autocast against float32 training on this CPU: tokens/s (medians of interleaved repeats in one process) and short
loss curves over the same steps. Usage (a heavy job: run it under the shared lock):
    python tools/bf16_autocast_cpu.py OUT.json flashlm-cortex8,cpuflow-v97,cdm-v3
"""
import copy, json, os, platform, statistics, sys, time
import torch, torch.nn.functional as F
from memnb.presets import build
from memnb.core import median_times
OUT = sys.argv[1]
PRESETS = sys.argv[2].split(",")
STEPS = {"flashlm-cortex8": 100, "cpuflow-v97": 100, "cdm-v3": 20}
torch.set_num_threads(2)
cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
flags = next(l for l in open("/proc/cpuinfo") if l.startswith("flags")).split()
res = {"cpu": cpu, "avx512_bf16": "avx512_bf16" in flags, "amx_bf16": "amx_bf16" in flags, "threads": 2,
       "torch": torch.__version__, "speed": {}, "curves": {}}
text = open(os.path.join(os.environ.get("MEMNB_DATA", "/work/shared/data"), "tinystories/train-v1.txt"), "rb").read(4_000_000)
data = torch.frombuffer(bytearray(text), dtype=torch.uint8).long()   # byte tokens (< 256): valid for every vocab
def batch(g, B, T):
    s = torch.randint(0, len(data) - T - 1, (B,), generator=g)
    return torch.stack([data[i:i + T + 1] for i in s.tolist()])
def step(model, opt, x, bf16):
    opt.zero_grad(set_to_none=True)
    with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        logits = model(x[:, :-1])
    loss = F.cross_entropy(logits.float().flatten(0, 1), x[:, 1:].flatten())
    loss.backward(); opt.step()
    return loss.item()
def save():
    json.dump(res, open(OUT, "w"), indent=1)
for name in PRESETS:   # speed: B=4, T=256, forward + backward + AdamW, fp32 and bf16 interleaved
    torch.manual_seed(0)
    m32 = build(name).train(); m16 = copy.deepcopy(m32)
    o32, o16 = torch.optim.AdamW(m32.parameters(), lr=1e-4), torch.optim.AdamW(m16.parameters(), lr=1e-4)
    x = batch(torch.Generator().manual_seed(0), 4, 256)
    t0 = time.time()
    secs = median_times({"fp32": lambda: step(m32, o32, x, False), "bf16": lambda: step(m16, o16, x, True)},
                        repeats=5, warmup=1)
    res["speed"][name] = {"B": 4, "T": 256, "repeats": 5, "warmup": 1, "seconds": secs,
                          "tokens_per_s": {k: 4 * 256 / s for k, s in secs.items()}, "ratio_bf16_fp32": secs["fp32"] / secs["bf16"],
                          "wall_s": time.time() - t0}
    print(name, res["speed"][name], flush=True); save()
    del m32, m16, o32, o16
for name in PRESETS:   # loss curves: the same init and batches in fp32 and bf16; a second fp32 seed for the spread
    n = STEPS[name]
    runs = {"fp32": (0, False), "bf16": (0, True), "fp32 seed 1": (1, False)}
    curves = {}
    for label, (seed, bf16) in runs.items():
        torch.manual_seed(seed)
        m = build(name).train(); opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
        g = torch.Generator().manual_seed(123)   # the same batches for every run
        curves[label] = [step(m, opt, batch(g, 4, 128), bf16) for _ in range(n)]
        print(name, label, curves[label][::10], flush=True)
        res["curves"][name] = {"steps": n, "B": 4, "T": 128, "lr": 1e-3, "losses": curves}; save()
        del m, opt
    tail = max(5, n // 5)
    d_prec = max(abs(a - b) for a, b in zip(curves["fp32"], curves["bf16"]))
    d_seed = max(abs(a - b) for a, b in zip(curves["fp32"], curves["fp32 seed 1"]))
    res["curves"][name].update(final_mean={k: statistics.mean(v[-tail:]) for k, v in curves.items()}, tail=tail,
                               max_step_diff_bf16_vs_fp32=d_prec, max_step_diff_seed1_vs_seed0=d_seed)
    save()
print("done", flush=True)
