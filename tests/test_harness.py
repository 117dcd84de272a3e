"""End-to-end: `memnb train` on a real corpus sample, eval and generate from its folder; atomic checkpoints under a
crash mid-write; the NaN guard; a two-process DDP run on the gloo backend."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from memnb.cli import main
from memnb.model import MemLM, MemLMConfig
from memnb.tasks import TaskData
from memnb.train import TrainConfig, checkpoint_dir, load_checkpoint, train

DATA = os.environ.get("MEMNB_DATA")
needs_data = pytest.mark.skipif(not DATA, reason="MEMNB_DATA is not set")


@needs_data
def test_cli_train_eval_generate(tmp_path, capsys):
    src = str(Path(DATA) / "tinystories" / "valid-v1.txt")
    out = tmp_path / "run"
    rc = main(["train", "--preset", "flashlm-cortex8", "--data", src, "--tokenizer", "bpe:512", "--n-layers", "1",
               "--seq-len", "64", "--batch-size", "8", "--max-steps", "60", "--eval-every", "30", "--lr", "3e-3",
               "--objective", "value=0.1", "--objective", "mtp=0.2", "--word-dropout", "0.05",
               "--out", str(out), "--json", str(tmp_path / "train.json")])
    assert rc == 0
    res = json.loads((tmp_path / "train.json").read_text())
    evals = [h for h in res["history"] if "val_loss" in h]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 0.3, evals     # visibly learning
    assert res["val_loss_before"] > evals[0]["val_loss"]                  # measured on the same batches before step 1
    model = load_checkpoint(out, "best")
    assert isinstance(model, MemLM) and model.config.vocab_size == 512
    assert main(["eval", str(out), "--data", src, "--split", "val", "--seq-len", "64", "--batches", "2",
                 "--json", str(tmp_path / "e.json")]) == 0
    ev = json.loads((tmp_path / "e.json").read_text())
    assert 0 < ev["bpb"] < 10 and ev["loss"] == pytest.approx(evals[-1]["val_loss"], rel=0.3)
    capsys.readouterr()
    assert main(["generate", str(out), "--prompt", "Once upon a time", "--max-new-tokens", "12", "--greedy"]) == 0
    assert capsys.readouterr().out.startswith("Once upon a time")
    assert model.value is not None and model.mtp is not None       # the heads the objectives asked for were trained and saved
    assert main(["generate", str(out), "--prompt", "Once upon a time", "--max-new-tokens", "8", "--value-search", "3",
                 "--repetition-penalty", "1.3"]) == 0
    assert capsys.readouterr().out.startswith("Once upon a time")


def test_checkpoint_survives_a_crash_mid_write(tmp_path, monkeypatch):
    data = TaskData.make("mqar", 64, 16, seq_len=32, n_kv=4, vocab_size=64)
    model = MemLM(MemLMConfig(vocab_size=64, d_model=16, n_layers=1, n_heads=2, d_ff=32))
    cfg = TrainConfig(max_steps=10, eval_every=5, out_dir=str(tmp_path), progress=False, stop_at=5)
    train(model, data, cfg)
    good = checkpoint_dir(tmp_path, "last")
    import memnb.train as T

    def crash(model, d):   # dies after writing part of the new checkpoint
        Path(d).mkdir(parents=True, exist_ok=True)
        (Path(d) / "model.safetensors").write_bytes(b"partial")
        raise KeyboardInterrupt("killed")
    monkeypatch.setattr(T, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        train(model, data, TrainConfig(max_steps=10, eval_every=5, out_dir=str(tmp_path), progress=False))
    assert checkpoint_dir(tmp_path, "last") == good                 # the pointer still names the complete folder
    load_checkpoint(tmp_path, "last")                                # and it loads
    monkeypatch.undo()
    res = train(model, data, TrainConfig(max_steps=10, eval_every=5, out_dir=str(tmp_path), progress=False))
    assert res.step == 10


def test_nan_guard_stops_with_a_clear_message():
    data = TaskData.make("mqar", 64, 16, seq_len=32, n_kv=4, vocab_size=64)
    model = MemLM(MemLMConfig(vocab_size=64, d_model=16, n_layers=1, n_heads=2, d_ff=32))
    with torch.no_grad():
        model.embed.weight[0, 0] = float("nan")
    with pytest.raises(RuntimeError, match="non-finite"):
        train(model, data, TrainConfig(max_steps=5, max_bad_steps=3, progress=False))


DDP_SCRIPT = """
import sys, torch, torch.distributed as dist
from pathlib import Path
from memnb.model import MemLM, MemLMConfig
from memnb.tasks import TaskData
from memnb.train import TrainConfig, train
torch.manual_seed(0)
data = TaskData.make("mqar", 128, 16, seq_len=32, n_kv=4, vocab_size=64)
model = MemLM(MemLMConfig(vocab_size=64, d_model=16, n_layers=1, n_heads=2, d_ff=32))
res = train(model, data, TrainConfig(max_steps=4, eval_every=4, progress=False))
w = torch.cat([p.detach().flatten() for p in model.parameters()])
gathered = [torch.zeros_like(w) for _ in range(dist.get_world_size())]
dist.all_gather(gathered, w)
assert dist.get_world_size() == 2 and torch.equal(gathered[0], gathered[1]), "replicas diverged"
Path(sys.argv[1], f"rank{dist.get_rank()}.txt").write_text(f"ok {res.step}")  # one file per rank: stdout interleaves
dist.destroy_process_group()
"""


def test_ddp_two_cpu_processes(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(script), str(tmp_path)], capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    assert [(tmp_path / f"rank{r}.txt").read_text() for r in range(2)] == ["ok 4", "ok 4"]


def test_cli_probe_on_python_code(tmp_path, capsys):
    import inspect

    from memnb.data import load_tokenizer
    torch.manual_seed(0)
    model = MemLM(MemLMConfig(vocab_size=257, d_model=32, n_layers=2, n_heads=2, d_ff=64, mixer="attention+cdm",
                              mixer_kwargs={"cdm": {"n_slots": 8}}))
    ck = tmp_path / "ck"
    model.save(ck)
    load_tokenizer("bytes").save(ck / "tokenizer.json")
    code = tmp_path / "code.py"
    code.write_text(inspect.getsource(json.decoder))             # real, indented Python
    out = tmp_path / "probe"
    assert main(["probe", str(ck), "--text", str(code), "--out", str(out), "--seq-len", "128", "--permutations", "20",
                 "--json", str(tmp_path / "p.json")]) == 0
    rep = json.loads((tmp_path / "p.json").read_text())
    assert len(rep["routing"]) == 2 and {"slot_usage.png", "decay_spectrum.png", "scope_register_mi.png"} <= {p.name for p in out.iterdir()}
    mi = rep["scope_register_mi"]
    assert 0 <= mi["baseline_mean"] <= mi["baseline_p95"] and mi["ci_low"] <= mi["ci_high"] and 0 < mi["h_y"] <= 1.1
    assert "MI(slot; depth)" in capsys.readouterr().out
    assert main(["probe", str(ck), "--text", str(tmp_path / "missing.py")]) == 2


@needs_data
def test_cli_compare_presets_on_text(tmp_path):
    src = str(Path(DATA) / "tinystories" / "valid-v1.txt")
    out = tmp_path / "cmp"
    assert main(["compare", "--presets", "flashlm-nova,cpuflow-v97", "--data", src, "--tokenizer", "bytes", "--seq-len", "64",
                 "--n-layers", "1", "--d-model", "64", "--minutes", "0.3", "--out", str(out), "--json", str(tmp_path / "c.json")]) == 0
    rows = json.loads((tmp_path / "c.json").read_text())["rows"]
    assert [r["mechanism"] for r in rows] == ["flashlm-nova", "cpuflow-v97"]
    steps = lambda r: r["steps"] if isinstance(r["steps"], list) else [r["steps"]]      # one per seed
    assert all(0 < r["bpb"] < 8.5 and min(steps(r)) > 0 for r in rows), rows     # bytes: a blind model: 8 bits per byte
    assert (out / "compare.png").exists()


def test_curriculum_follows_the_step_budget():
    "The trainer reports its progress before every step; the curriculum's stages follow it in order, validation stays on the task."
    from memnb.tasks import Curriculum
    cur = Curriculum.mqar(32, 4, 64, n_train=64, n_test=8)
    seen = []
    class Spy(Curriculum):
        def batch(self, split, batch_size, generator=None, device="cpu"):
            x, y = super().batch(split, batch_size, generator, device)
            if split == "train": seen.append(x.shape)
            else: assert x.shape[1] == 32
            return x, y
    spy = Spy(cur.stages, cur.until)
    model = MemLM(MemLMConfig(vocab_size=64, d_model=16, n_layers=1, n_heads=2, d_ff=32, mixer="deltanet"))
    res = train(model, spy, TrainConfig(batch_size=4, max_steps=9, lr=1e-3, eval_every=100, eval_batches=1, progress=False))
    assert res.step == 9
    assert [s[1] for s in seen] == [8] * 3 + [16] * 3 + [32] * 3          # thirds of the budget, short to long
    assert all(s[0] * s[1] == 4 * 32 for s in seen)                         # the same tokens every step
