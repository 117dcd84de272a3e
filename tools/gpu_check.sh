#!/usr/bin/env bash
# tools/gpu_check.sh: memnb's Triton kernels on a real NVIDIA GPU (H100/H200), in one go. From the project root:
#   bash tools/gpu_check.sh        # 8 min at most; results in gpu_check_out/gpu_check.json
#   GPU_CHECK_SMOKE=1 bash tools/gpu_check.sh   # the same steps on the CPU (interpreter, tiny shapes): tests the script
# Env: PYTHON (default python3), OUT_DIR (default gpu_check_out), BUDGET_S (default 470 s for the whole run),
#      WHEELS (default ./wheels: carried wheels for whatever is missing, used with --no-index).
#      GPU_CHECK_SMOKE=1 runs the same steps on CPU under TRITON_INTERPRET=1 at tiny shapes, to test this script.
# Steps: env -> install -> pytest -m triton (GPU) -> realistic shapes (scan, delta, cdm, ram at B=8, T=2048, H=8,
# D=64/128: outputs and gradients in float32 and bfloat16 vs the float64 PyTorch chunk path, itself tested against the
# step-by-step reference; fwd+bwd times vs the PyTorch chunk path, fla's chunk_gated_delta_rule / chunk_hgrn and SDPA
# flash attention) -> probes (head dim 256, autocast) -> registers/spills of the kernels as loaded -> notebook cells.
set -uo pipefail
PY=${PYTHON:-python3}
OUT=${OUT_DIR:-gpu_check_out}
BUDGET=${BUDGET_S:-470}
WHEELS=${WHEELS:-wheels}
SMOKE=${GPU_CHECK_SMOKE:-0}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export PY OUT WHEELS GPU_CHECK_SMOKE=$SMOKE
T0=$SECONDS
: > "$OUT/steps.tsv"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"    # memnb importable even if the editable install fails
export TRITON_CACHE_DIR="$OUT/triton_cache"             # one cache shared by the steps (tests warm the bench)
export MEMNB_DATA="${MEMNB_DATA:-$(cd .. && pwd)/shared/data}"
if [ "$SMOKE" = 1 ]; then export TRITON_INTERPRET=1; else unset TRITON_INTERPRET; fi
unset MEMNB_BACKEND

left() { echo $(( BUDGET - (SECONDS - T0) )); }
# step NAME CAP_S CMD...: run with timeout min(CAP, time left); log to $OUT/NAME.log; record rc and seconds
step() {
  local name=$1 cap=$2; shift 2
  local l; l=$(left)
  if (( l < 15 )); then
    echo "=== $name: skipped (budget spent)"; printf '%s\tskipped\t0\n' "$name" >> "$OUT/steps.tsv"; return 0
  fi
  (( cap > l )) && cap=$l
  echo "=== $name (timeout ${cap}s, $(( SECONDS - T0 ))s elapsed)"
  local t=$SECONDS
  if [ "$(type -t "$1")" = function ]; then timeout -k 10 "$cap" bash -c "$*" > "$OUT/$name.log" 2>&1
  else timeout -k 10 "$cap" "$@" > "$OUT/$name.log" 2>&1; fi
  local rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(( SECONDS - t ))" >> "$OUT/steps.tsv"
  echo "    rc=$rc in $(( SECONDS - t ))s; last lines:"; tail -n 4 "$OUT/$name.log" | sed 's/^/    | /'
  return 0
}

# ---------------------------------------------------------------- 0. environment
step env 20 "$PY" - "$OUT/env.json" <<'EOF'
import json, platform, subprocess, sys
info = {"python": sys.version.split()[0], "platform": platform.platform()}
try:
    import torch
    info.update(torch=torch.__version__, cuda=torch.version.cuda, cuda_available=torch.cuda.is_available())
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, sm=f"{p.major}.{p.minor}", n_sm=p.multi_processor_count, mem_gib=round(p.total_memory / 2**30, 1),
                    tf32_matmul=torch.backends.cuda.matmul.allow_tf32)
except Exception as e:
    info["torch_error"] = repr(e)
for mod in ("triton", "fla", "flash_attn", "numpy", "pytest", "hypothesis", "nbdev"):
    try:
        m = __import__(mod); info[mod] = getattr(m, "__version__", "present")
    except Exception as e:
        info[mod] = None
try:
    info["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,clocks.max.sm,power.limit",
                                         "--format=csv,noheader"], capture_output=True, text=True, timeout=10).stdout.strip()
except Exception:
    info["nvidia_smi"] = None
json.dump(info, open(sys.argv[1], "w"), indent=1)
print(json.dumps(info, indent=1))
if not info.get("cuda_available") and info.get("torch") and __import__("os").environ.get("GPU_CHECK_SMOKE") != "1":
    sys.exit("no CUDA device visible to torch")
EOF

if [ "$SMOKE" != 1 ] && [ "$(tail -n 1 "$OUT/steps.tsv" | cut -f2)" != 0 ]; then
  echo "no usable CUDA device (see $OUT/env.log): stopping"; exit 1
fi

# ---------------------------------------------------------------- 1. install (no network needed)
install() {
  if [ "$GPU_CHECK_SMOKE" = 1 ]; then   # the smoke runs in the developer's environment: change nothing there
    "$PY" -c "import torch, triton, memnb.scan, memnb.delta_rule, memnb.cdm, memnb.ramnet; print('imports ok')"; return
  fi
  "$PY" -m pip install -q -e . --no-deps --no-build-isolation || echo "editable install failed: using PYTHONPATH=$PWD"
  for mod_pkg in numpy:numpy pytest:pytest hypothesis:hypothesis einops:einops fla:fla-core; do
    mod=${mod_pkg%%:*}; pkg=${mod_pkg#*:}
    "$PY" -c "import $mod" 2>/dev/null && continue
    if [ -d "$WHEELS" ]; then "$PY" -m pip install -q --no-index --find-links "$WHEELS" "$pkg" && continue; fi
    timeout 40 "$PY" -m pip install -q --timeout 10 --retries 0 "$pkg" || echo "missing: $pkg"
  done
  if ! "$PY" -c "import hypothesis" 2>/dev/null; then   # a shim: property tests skip, the triton tests still collect
    mkdir -p "$OUT/shim/hypothesis"
    cat > "$OUT/shim/hypothesis/__init__.py" <<'PYEOF'
import pytest
def given(*a, **k): return lambda f: pytest.mark.skip(reason="hypothesis not installed")(f)
def settings(*a, **k): return lambda f: f
class _S:
    def __getattr__(self, name): return lambda *a, **k: None
strategies = _S()
is_hypothesis_test = lambda f: False
PYEOF
    echo "hypothesis shim installed"
  fi
  "$PY" -c "import torch, triton, memnb.scan, memnb.delta_rule, memnb.cdm, memnb.ramnet; print('imports ok', torch.__version__, triton.__version__)"
}
export -f install
step install 45 install
[ -d "$OUT/shim" ] && export PYTHONPATH="$PYTHONPATH:$OUT/shim"

# ---------------------------------------------------------------- 2. the triton-flagged tests, on the GPU
# one file at a time, so that a hang or a slow compile loses one file's results, not all of them
TEST_FILES="scan:25 delta_rule:100 cdm:25 ramnet:20 mixers:30"   # delta_rule: compiles and autotunes its kernels
[ "$SMOKE" = 1 ] && TEST_FILES="scan:90"   # the interpreter is slow: the step's plumbing, on one file
for f_cap in $TEST_FILES; do
  f=${f_cap%%:*}; cap=${f_cap#*:}
  step "pytest_$f" "$cap" "$PY" -m pytest "tests/test_$f.py" -m triton -q -rfE -p no:cacheprovider --junitxml="$OUT/pytest_$f.xml"
done

# ---------------------------------------------------------------- 3. realistic shapes
cat > "$OUT/gpu_bench.py" <<'EOF'
"""One family of memnb kernels at realistic shapes: errors vs a float64 PyTorch reference, fwd+bwd times."""
import contextlib, json, os, sys, time, traceback
import torch
import torch.nn.functional as F
from memnb.core import rel_err

FAM, OUT, BUDGET = sys.argv[1], sys.argv[2], float(sys.argv[3])
ARG = int(sys.argv[4]) if len(sys.argv) > 4 else None
SMOKE = os.environ.get("GPU_CHECK_SMOKE") == "1"
DEV = "cpu" if SMOKE else "cuda"
CUDA = DEV == "cuda"
DEADLINE = time.time() + BUDGET - 8
REPS = 2 if SMOKE else 5
TOL = {torch.float32: {"scan": 1e-5, "delta": 1e-4, "cdm": 1e-5, "ram": 1e-5}, torch.bfloat16: 1e-2}
res = {"family": FAM + (str(ARG) if ARG else ""), "device": torch.cuda.get_device_name(0) if CUDA else "cpu (smoke)", "cases": []}
save = lambda: json.dump(res, open(OUT, "w"), indent=1, default=str)
save()
gen = torch.Generator(DEV).manual_seed(0)
rnd = lambda *s: torch.randn(*s, device=DEV, generator=gen)
uni = lambda *s: torch.rand(*s, device=DEV, generator=gen)

@contextlib.contextmanager
def torch_only():
    "MEMNB_BACKEND=torch: 'auto' inside the chunk paths takes PyTorch too (the reference and the PyTorch timings)."
    old = os.environ.get("MEMNB_BACKEND"); os.environ["MEMNB_BACKEND"] = "torch"
    try: yield
    finally:
        if old is None: os.environ.pop("MEMNB_BACKEND", None)
        else: os.environ["MEMNB_BACKEND"] = old

def sync():
    if CUDA: torch.cuda.synchronize()

def fwd_bwd(fn, xs, douts, dtype, torch_path=False):
    "Outputs and input gradients of fn on copies of xs cast to dtype (floating ones); loss = sum(out * dout)."
    ys = [x.detach().to(dtype).requires_grad_() if x.is_floating_point() else x for x in xs]
    with (torch_only() if torch_path else contextlib.nullcontext()):
        outs = fn(*ys)
    outs = outs if isinstance(outs, (tuple, list)) else (outs,)
    loss = sum((o.double() if dtype == torch.float64 else o.float()).mul(d.to(torch.float64 if dtype == torch.float64 else torch.float32)).sum()
               for o, d in zip(outs, douts))
    with (torch_only() if torch_path else contextlib.nullcontext()):
        loss.backward()
    return [o.detach() for o in outs] + [y.grad for y in ys if y.is_floating_point()]

def timed(fn, xs, douts, dtype, torch_path=False):
    "fwd+bwd: first call (compile/autotune included) and the median of REPS calls after one warm-up, in ms."
    ys = [x.detach().to(dtype).requires_grad_() if x.is_floating_point() else x for x in xs]
    ds = [d.to(torch.float32) for d in douts]
    def once():
        for y in ys:
            if y.is_floating_point(): y.grad = None
        with (torch_only() if torch_path else contextlib.nullcontext()):
            outs = fn(*ys)
            outs = outs if isinstance(outs, (tuple, list)) else (outs,)
            sum((o.float() * d).sum() for o, d in zip(outs, ds)).backward()
    t = time.perf_counter(); once(); sync(); first = time.perf_counter() - t
    once(); sync()
    if CUDA: torch.cuda.reset_peak_memory_stats()
    ts = []
    for _ in range(REPS):
        if CUDA:
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record(); once(); b.record(); torch.cuda.synchronize(); ts.append(a.elapsed_time(b))
        else:
            t = time.perf_counter(); once(); ts.append(1e3 * (time.perf_counter() - t))
    ts.sort()
    return {"first_call_s": round(first, 3), "median_ms": round(ts[len(ts) // 2], 3), "min_ms": round(ts[0], 3),
            "peak_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1) if CUDA else None}

def judge(rec):
    "ok: finite, and every error <= max(tol, 2 x the PyTorch chunk path's error in the same dtype)."
    for key, errs in rec["errors"].items():
        base = rec["errors"].get("torch chunk " + key.split()[-1], {})
        rec["ok"][key] = rec["finite"][key] and all(e <= max(rec["tol"][key], 2 * base.get(n, 0.0)) for n, e in errs.items())

def case(name, setting, impls, xs, douts, names, tol, ref_impl="torch chunk", extra_time=None):
    """impls: {label: (fn, torch_path)}; errors of every impl in fp32 and bf16 vs ref_impl in float64; times of each."""
    rec = {"case": name, "setting": setting, "errors": {}, "ok": {}, "ms": {}, "failures": {}}
    res["cases"].append(rec)
    if time.time() > DEADLINE:
        rec["skipped"] = "budget"; save(); return
    try:
        fn, tp = impls[ref_impl]
        ref = fwd_bwd(fn, xs, douts, torch.float64, tp)
    except Exception as e:
        rec["failures"]["reference"] = f"{type(e).__name__}: {e}"[:400]; save(); return
    extra_time = extra_time or {}
    order = [l for l in impls if not l.startswith("fla")] + list(extra_time) + [l for l in impls if l.startswith("fla")]
    for label in order:   # memnb's first, then the timing-only baselines, fla's (autotuning on first call) last
        if label in extra_time:
            fn, xs2, douts2, dtype = extra_time[label]
            if time.time() > DEADLINE:
                rec["failures"][label] = "skipped: budget"; continue
            try:
                rec["ms"][label] = timed(fn, xs2, douts2, dtype)
            except Exception as e:
                rec["failures"][label] = f"{type(e).__name__}: {e}"[:400]
            save(); continue
        fn, tp = impls[label]
        for dtype in (torch.float32, torch.bfloat16):
            dn = str(dtype).split(".")[-1]
            if time.time() > DEADLINE:
                rec["failures"][f"{label} {dn}"] = "skipped: budget"; continue
            key = f"{label} {dn}"
            try:
                got = fwd_bwd(fn, xs, douts, dtype, tp)
                errs = {n: rel_err(g, r) for n, g, r in zip(names, got, ref) if g is not None and r is not None}
                finite = all(torch.isfinite(g).all().item() for g in got if g is not None)
                t = tol[dtype] if isinstance(tol, dict) else tol
                rec["errors"][key] = {n: float(f"{e:.3g}") for n, e in errs.items()}
                rec.setdefault("finite", {})[key] = bool(finite)
                rec.setdefault("tol", {})[key] = t
                if not finite: rec["failures"][key] = "non-finite values"
                rec["ms"][key] = timed(fn, xs, douts, dtype, tp)
            except Exception as e:
                rec["failures"][key] = f"{type(e).__name__}: {e}"[:400]
                traceback.print_exc()
            finally:
                if CUDA: torch.cuda.empty_cache()
            judge(rec); save()
    save()

def fla(path, name):
    if not CUDA: return None
    try:
        import importlib
        return getattr(importlib.import_module(path), name)
    except Exception as e:
        res.setdefault("notes", []).append(f"{path}.{name} unavailable: {type(e).__name__}: {e}"[:200])
        return None

# ---------------------------------------------------------------- families
if FAM == "scan":
    from memnb.scan import linear_scan
    B, T, H = (2, 70, 2) if SMOKE else (8, 2048, 8)
    chunk_hgrn = fla("fla.ops.hgrn", "chunk_hgrn")
    for D in ((16,) if SMOKE else (64, 128)):
        a = 0.9 + 0.1 * uni(B, T, H, D); b = rnd(B, T, H, D); h0 = rnd(B, H, D)
        douts = [rnd(B, T, H, D)]
        impls = {"triton": (lambda a, b, h0: linear_scan(a, b, h0, impl="triton")[0], False),
                 "torch chunk": (lambda a, b, h0: linear_scan(a, b, h0, impl="chunk")[0], True)}
        extra = {}
        if chunk_hgrn is not None:   # h = exp(g) h + x over [B, T, H*D]
            x, g = b.reshape(B, T, -1), torch.log(a).reshape(B, T, -1)
            for dt in (torch.float32, torch.bfloat16):
                extra[f"fla chunk_hgrn {str(dt)[6:]}"] = (lambda x, g: chunk_hgrn(x, g)[0], [x, g], [douts[0].reshape(B, T, -1)], dt)
        case(f"linear_scan D={D}", dict(B=B, T=T, H=H, D=D), impls, [a, b, h0], douts, ["h", "da", "db", "dh0"],
             {torch.float32: TOL[torch.float32]["scan"], torch.bfloat16: TOL[torch.bfloat16]}, extra_time=extra)

elif FAM == "delta":
    from memnb.delta_rule import delta_rule
    B, T, H = (1, 70, 2) if SMOKE else (8, 2048, 8)
    fla_gdr = fla("fla.ops.gated_delta_rule", "chunk_gated_delta_rule")
    for D in ((16,) if SMOKE else (ARG,) if ARG else (64, 128)):
        q, k, v = rnd(B, T, H, D), F.normalize(rnd(B, T, H, D), dim=-1), rnd(B, T, H, D)
        beta, g = uni(B, T, H), F.logsigmoid(rnd(B, T, H) + 4.0)
        douts = [rnd(B, T, H, D)]
        impls = {"triton": (lambda q, k, v, beta, g: delta_rule(q, k, v, beta, g, impl="triton")[0], False),
                 "torch chunk": (lambda q, k, v, beta, g: delta_rule(q, k, v, beta, g, impl="chunk")[0], True)}
        if fla_gdr is not None:
            impls["fla chunk_gated_delta_rule"] = (lambda q, k, v, beta, g: fla_gdr(q, k, v, g, beta)[0], False)
        extra = {}
        if CUDA:   # softmax attention of the same size: SDPA's flash kernel (bf16), and flash-attn if installed
            from torch.nn.attention import SDPBackend, sdpa_kernel
            def sdpa(q, k, v):
                with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True).transpose(1, 2)
            extra["sdpa flash bf16"] = (sdpa, [q, k, v], douts, torch.bfloat16)
            try:
                from flash_attn import flash_attn_func
                extra["flash_attn bf16"] = (lambda q, k, v: flash_attn_func(q, k, v, causal=True), [q, k, v], douts, torch.bfloat16)
            except Exception:
                pass
        case(f"gated delta_rule D={D}", dict(B=B, T=T, H=H, K=D, V=D, chunk=64), impls, [q, k, v, beta, g], douts,
             ["o", "dq", "dk", "dv", "dbeta", "dg"],
             {torch.float32: TOL[torch.float32]["delta"], torch.bfloat16: TOL[torch.bfloat16]}, extra_time=extra)
elif FAM == "cdm":
    from memnb.cdm import dock_readout
    B, T, D, K = (2, 20, 8, 3) if SMOKE else (8, 2048, 512, 16)
    for exclusive in (True, False):
        p = torch.softmax(2 * rnd(B, T, K), -1); write = 0.5 * p
        xs = [rnd(B, T, D), write, 1 - write, p, rnd(K, D) * D ** -0.5]
        douts = [rnd(B, T, D), rnd(B, K, D)]
        f = lambda impl: (lambda v, w, kp, r, s0: dock_readout(v, w, kp, r, s0, exclusive=exclusive, impl=impl, output_final_state=True))
        case(f"dock_readout exclusive={exclusive}", dict(B=B, T=T, D=D, K=K),
             {"triton": (f("triton"), False), "torch chunk": (f("chunk"), True)}, xs, douts,
             ["out", "S", "dv", "dwrite", "dkeep", "dread", "ds0"],
             {torch.float32: TOL[torch.float32]["cdm"], torch.bfloat16: TOL[torch.bfloat16]})

elif FAM == "ram":
    from memnb.ramnet import ram_memory
    B, T, k, N, Dm, C = (2, 23, 2, 27, 8, 4) if SMOKE else (8, 2048, 8, 512, 64, 32)
    idx = uni(B, T, N).topk(k, -1).indices
    xs = [idx, torch.softmax(rnd(B, T, k), -1), rnd(B, T, Dm), 0.1 * rnd(N, Dm)]
    douts = [rnd(B, T, Dm)]
    f = lambda impl: (lambda i, w, v, m0: ram_memory(i, w, v, m0, chunk=C, decay=0.99, impl=impl)[0])
    case("ram_memory", dict(B=B, T=T, k=k, N=N, Dm=Dm, chunk=C), {"triton": (f("triton"), False), "torch chunk": (f("chunk"), True)},
         xs, douts, ["reads", "dweights", "dvalues", "dmemory0"], {torch.float32: TOL[torch.float32]["ram"], torch.bfloat16: TOL[torch.bfloat16]})
    try:   # atomics in the gather backward: are two identical runs bitwise equal?
        g1, g2 = (fwd_bwd(f("triton"), xs, douts, torch.float32) for _ in range(2))
        res["ram_triton_backward_bitwise_deterministic"] = all(torch.equal(a, b) for a, b in zip(g1, g2))
    except Exception as e:
        res["ram_determinism_error"] = repr(e)[:300]
    save()

elif FAM == "probe":   # what only a GPU can show: head dim 256 and float64 on the state kernels, bf16 autocast
    from memnb.delta_rule import delta_rule, DeltaNet
    probes = res.setdefault("probes", {})
    # initial state + final state (the HAS_H0 / HAS_DS kernel variants), ragged T, non-power-of-two K and V
    B2, T2, H2, K2, V2 = (1, 37, 2, 12, 10) if SMOKE else (4, 1000, 4, 96, 80)
    xs = [rnd(B2, T2, H2, K2), F.normalize(rnd(B2, T2, H2, K2), dim=-1), rnd(B2, T2, H2, V2), uni(B2, T2, H2),
          F.logsigmoid(rnd(B2, T2, H2) + 4.0), rnd(B2, H2, K2, V2)]
    douts = [rnd(B2, T2, H2, V2), rnd(B2, H2, K2, V2)]
    run = lambda impl: (lambda q, k, v, beta, g, h0: delta_rule(q, k, v, beta, g, initial_state=h0, output_final_state=True, impl=impl))
    case("delta_rule h0+final state, ragged T, K=96 V=80", dict(B=B2, T=T2, H=H2, K=K2, V=V2),
         {"triton": (run("triton"), False), "torch chunk": (run("chunk"), True)}, xs, douts,
         ["o", "S", "dq", "dk", "dv", "dbeta", "dg", "dh0"], {torch.float32: TOL[torch.float32]["delta"], torch.bfloat16: TOL[torch.bfloat16]})

    def probe(name, fn):
        if time.time() > DEADLINE:
            probes[name] = "skipped: budget"; save(); return
        try:
            fn(); sync(); probes[name] = "ran"
        except Exception as e:
            probes[name] = f"{type(e).__name__}: {e}"[:400]
        save()
    def dr(K, V, dtype, T=128):
        xs = [rnd(1, T, 2, K), F.normalize(rnd(1, T, 2, K), dim=-1), rnd(1, T, 2, V), uni(1, T, 2), F.logsigmoid(rnd(1, T, 2) + 4)]
        xs = [x.to(dtype).requires_grad_() for x in xs]
        delta_rule(*xs, impl="triton")[0].sum().backward()
    def autocast_layer():
        layer = DeltaNet(64 if SMOKE else 256, 4, 16 if SMOKE else 64, gated=True).to(DEV)
        x = rnd(2, 40, layer.q_proj.in_features)
        with torch.autocast(DEV, dtype=torch.bfloat16):
            y, _ = layer(x)
        y.float().sum().backward()
    probe("DeltaNet under torch.autocast bf16 (the trainer's default on CUDA)", autocast_layer)
    def autocast_cortex():
        from memnb.mixers import CortexMixer
        m = CortexMixer(64, 2, window=16, mem_heads=2, mem_head_dim=16).to(DEV)
        with torch.autocast(DEV, dtype=torch.bfloat16):
            y, _ = m(rnd(2, 40, 64))
        y.float().sum().backward()
    probe("CortexMixer under torch.autocast bf16", autocast_cortex)
    # the state kernels hold the state as four 64-row slabs at K=256 (compile_report: they fit in shared memory)
    probe("delta_rule triton fp32 K=V=256", lambda: dr(256 if not SMOKE else 80, 256 if not SMOKE else 24, torch.float32))
    if not SMOKE:   # the interpreter's bfloat16 dot is not trustworthy; float64 dots are IEEE on CUDA cores
        probe("delta_rule triton bf16 K=V=256", lambda: dr(256, 256, torch.bfloat16))
        probe("delta_rule triton fp64 K=V=128", lambda: dr(128, 128, torch.float64))
def kernel_stats():
    "Registers, spills and shared memory of every memnb kernel compiled in this process (as loaded on the GPU)."
    import importlib
    out = {}
    for mod in (importlib.import_module(f"memnb.{m}") for m in ("scan", "delta_rule", "cdm", "ramnet")):
        for name, fn in vars(mod).items():
            caches = getattr(fn, "device_caches", None)
            if not name.endswith("_kernel") or not caches: continue
            for entry in list(caches.values()):
                for key, k in (entry[0] if isinstance(entry, tuple) else entry).items():
                    try:
                        md = k.metadata
                        out.setdefault(name, []).append({"regs": getattr(k, "n_regs", None), "spills": getattr(k, "n_spills", None),
                            "shared": getattr(md, "shared", None), "warps": getattr(md, "num_warps", None),
                            "stages": getattr(md, "num_stages", None), "key": str(key)[:160]})
                    except Exception as e:
                        out.setdefault(name, []).append({"error": repr(e)[:120]})
    return out
if CUDA:
    try: res["kernels"] = kernel_stats()
    except Exception as e: res["kernels_error"] = repr(e)[:200]
save()
print(json.dumps(res, indent=1, default=str)[:6000])
EOF

bench() { local fam=$1 cap=$2 arg=${3:-}; local l; l=$(left); (( cap > l )) && cap=$l
          step "bench_$fam$arg" "$cap" "$PY" "$OUT/gpu_bench.py" "$fam" "$OUT/res_$fam$arg.json" "$(( cap - 5 ))" $arg; }
bench scan 45
bench delta 55 64
[ "$SMOKE" = 1 ] || bench delta 55 128   # the smoke runs one tiny head dim
bench cdm 55
bench ram 40
bench probe 50

# ---------------------------------------------------------------- 4. the notebooks' `#| triton` cells, with what time is left
nbcells() {
  command -v nbdev_test >/dev/null || { echo "nbdev_test not installed: notebook triton cells not run"; return 0; }
  local nbs="nbs/01_scan.ipynb nbs/02_delta_rule.ipynb nbs/03_cdm.ipynb nbs/04_ramnet.ipynb nbs/05_cumscan.ipynb"
  [ "$GPU_CHECK_SMOKE" = 1 ] && nbs="nbs/01_scan.ipynb"
  local rc=0
  for nb in $nbs; do
    nbdev_test --flags triton --path "$nb" || { echo "FAILED: $nb"; rc=1; }
  done
  return $rc   # a failing notebook fails the step (after every notebook has run)
}
export -f nbcells
if (( $(left) > 60 )); then step nb_triton_cells $(( $(left) - 15 )) nbcells; fi

# ---------------------------------------------------------------- 5. one JSON, and a summary
"$PY" - "$OUT" <<'EOF'
import glob, json, os, sys
import xml.etree.ElementTree as ET
out = sys.argv[1]
R = {"steps": {}, "pytest_triton": None, "bench": {}}
for line in open(f"{out}/steps.tsv"):
    name, rc, s = line.rstrip("\n").split("\t")
    R["steps"][name] = {"rc": rc, "seconds": int(s), "timed_out": rc in ("124", "137")}
if os.path.exists(f"{out}/env.json"): R["env"] = json.load(open(f"{out}/env.json"))
P = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0, "failed": [], "files": {}}
for x in sorted(glob.glob(f"{out}/pytest_*.xml")):
    s = ET.parse(x).getroot(); s = s if s.tag == "testsuite" else s.find("testsuite")
    for k in ("tests", "failures", "errors", "skipped"): P[k] += int(s.get(k, 0))
    P["files"][os.path.basename(x)] = {k: int(s.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    P["failed"] += [{"test": f"{c.get('classname')}::{c.get('name')}", "message": (e.get("message") or "")[:300]}
                    for c in s.iter("testcase") for e in c if e.tag in ("failure", "error")]
for name, st in R["steps"].items():   # a file whose step timed out wrote no XML
    if name.startswith("pytest_") and st["timed_out"]: P["failed"].append({"test": name, "message": "timed out (no results)"})
R["pytest_triton"] = P
for f in sorted(glob.glob(f"{out}/res_*.json")):
    r = json.load(open(f)); R["bench"][r["family"]] = r
json.dump(R, open(f"{out}/gpu_check.json", "w"), indent=1)
print("\n================ summary (", f"{out}/gpu_check.json", ")")
print("steps:", {k: v["rc"] for k, v in R["steps"].items()})
if R["pytest_triton"]["files"] or R["pytest_triton"]["failed"]:
    p = R["pytest_triton"]; print(f"pytest -m triton: {p['tests']} tests, {p['failures']} failed, {p['errors']} errors, {p['skipped']} skipped")
    for f in p["failed"]: print("   FAIL", f["test"], "|", f["message"][:150])
for fam, r in R["bench"].items():
    for c in r.get("cases", []):
        print(f"-- {c['case']} {c.get('skipped', '')}")
        for key, ok in c.get("ok", {}).items():
            e = c["errors"][key]; worst = max(e, key=e.get)
            t = c["ms"].get(key, {})
            base = c["ms"].get("torch chunk " + key.split()[-1], {}).get("median_ms")
            ratio = f"  = {t['median_ms'] / base:5.2f}x torch chunk" if base and t.get("median_ms") else ""
            print(f"   {key:34s} ok={ok!s:5s} worst rel err {e[worst]:.2e} ({worst})  fwd+bwd {t.get('median_ms', float('nan')):9.3f} ms"
                  f"  first call {t.get('first_call_s', float('nan')):.1f}s{ratio}")
        for key, t in c.get("ms", {}).items():
            if key not in c.get("ok", {}): print(f"   {key:34s} (timing only)               fwd+bwd {t['median_ms']:9.3f} ms")
        for key, msg in c.get("failures", {}).items(): print(f"   FAIL {key}: {msg[:200]}")
    for k in ("probes",):
        for name, msg in r.get(k, {}).items(): print(f"   probe {name}: {msg[:200]}")
    for kname, ks in r.get("kernels", {}).items():
        for k in ks: print(f"   kernel {kname}: regs={k.get('regs')} spills={k.get('spills')} shared={k.get('shared')} warps={k.get('warps')} stages={k.get('stages')}")
    if "ram_triton_backward_bitwise_deterministic" in r: print("   ram triton backward deterministic:", r["ram_triton_backward_bitwise_deterministic"])
EOF
echo "total ${SECONDS}s"
