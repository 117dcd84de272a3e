"""Fault injection: kills during checkpoint writes with exact resume, flipped bytes, truncated files, an empty
pointer, read-only and foreign folders, NaN reaching a mechanism, and every bad command-line value (one line, exit 2,
no traceback)."""
import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from memnb.cli import main
from memnb.data import load_tokenizer
from memnb.model import CheckpointError, MemLM, MemLMConfig
from memnb.tasks import TaskData
from memnb.train import TrainConfig, checkpoint_dir, list_checkpoints, load_checkpoint, train

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

CHILD = """
import json, os, signal, sys, torch
torch.set_num_threads(1)
import memnb.train as T
from memnb.model import MemLM, MemLMConfig
from memnb.tasks import TaskData
out, where, nth = sys.argv[1], sys.argv[2], int(sys.argv[3])
if where != "none":                         # die (SIGKILL: no cleanup at all) on the nth call of `where`
    mod, name = (os, "replace") if where == "os.replace" else (torch, "save") if where == "torch.save" else (T, where)
    orig, calls = getattr(mod, name), [0]
    def dying(*a, **k):
        calls[0] += 1
        if calls[0] == nth:
            os.kill(os.getpid(), signal.SIGKILL)
        return orig(*a, **k)
    setattr(mod, name, dying)
torch.manual_seed(0)
data = TaskData.make("mqar", 64, 16, seq_len=32, n_kv=4, vocab_size=64)
model = MemLM(MemLMConfig(vocab_size=64, d_model=16, n_layers=1, n_heads=2, d_ff=32))
res = T.train(model, data, T.TrainConfig(max_steps=12, eval_every=2, lr=3e-3, warmup_steps=2, out_dir=out,
                                          progress=False, precision="fp32", optimizer="muon", keep=2))
print(json.dumps([h["loss"] for h in res.history]))
"""


def child(tmp_path, out, where="none", nth=0, wait=True):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    cmd = [sys.executable, str(script), str(out), where, str(nth)]
    if not wait:
        return subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    "The loss curve of an uninterrupted run."
    tmp = tmp_path_factory.mktemp("straight")
    run = child(tmp, tmp / "run")
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout)


def check_resumed(tmp_path, out, straight):
    run = child(tmp_path, out)
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout) == straight                                       # bit for bit
    assert not [p.name for p in out.rglob("*") if ".tmp" in p.name]                  # stale temporaries gone
    steps = [r["step"] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "loss" in r]
    assert steps == list(range(1, 13))                                               # no line lost, none twice


# inside the third checkpoint write: its folder written but unchecksummed, renamed but not pointed at, pointed at but
# older ones not pruned; and two renames (a folder and a pointer file half-way)
@pytest.mark.parametrize("where,nth", [("write_manifest", 3), ("_point", 3), ("_prune", 3), ("os.replace", 5),
                                       ("os.replace", 6)])
def test_kill_inside_a_checkpoint_write_resumes_exactly(tmp_path, straight, where, nth):
    out = tmp_path / "run"
    killed = child(tmp_path, out, where, nth)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    check_resumed(tmp_path, out, straight)


def test_kill_at_a_random_step_resumes_exactly(tmp_path, straight):
    out = tmp_path / "run"
    proc = child(tmp_path, out, wait=False)
    log = out / "log.jsonl"
    while proc.poll() is None and not (log.exists() and len(log.read_text().splitlines()) >= 5):
        time.sleep(0.01)
    proc.kill(); proc.wait()
    check_resumed(tmp_path, out, straight)


@pytest.fixture
def run_dir(tmp_path):
    "A finished 4-step run with checkpoints at steps 2 and 4."
    torch.manual_seed(0)
    data = TaskData.make("mqar", 64, 16, seq_len=32, n_kv=4, vocab_size=64)
    model = MemLM(MemLMConfig(vocab_size=64, d_model=16, n_layers=1, n_heads=2, d_ff=32))
    train(model, data, TrainConfig(max_steps=4, eval_every=2, out_dir=str(tmp_path / "run"), progress=False))
    load_tokenizer("bytes").save(tmp_path / "run" / "tokenizer.json")
    return tmp_path / "run", data


def resume(run, data, **kw):
    torch.manual_seed(0)
    model = MemLM(MemLMConfig(vocab_size=64, d_model=16, n_layers=1, n_heads=2, d_ff=32))
    return train(model, data, TrainConfig(max_steps=6, eval_every=2, out_dir=str(run), progress=False, **kw))


def cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as e:
            rc = e.code
    return rc, out.getvalue(), err.getvalue()


def one_line(rc, err, says):
    "Exit code 2 and one line of error (progress bars, redrawn with carriage returns, aside)."
    lines = [l for l in err.splitlines() if l.strip() and "\r" not in l]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err and says in lines[0], (rc, err)


@pytest.mark.parametrize("name,damage", [("model.safetensors", "flip"), ("train_state.pt", "flip"),
                                         ("model.safetensors", "truncate"), ("config.json", "truncate")])
def test_corrupt_checkpoint_is_one_line_naming_the_file(run_dir, name, damage):
    run, data = run_dir
    for f in run.glob(f"step-*/{name}"):                                              # every checkpoint, best and last
        blob = bytearray(f.read_bytes())
        if damage == "flip":
            for i in range(len(blob) // 2, len(blob) // 2 + 50): blob[i] ^= 0xFF     # 50 flipped bytes
        f.write_bytes(bytes(blob if damage == "flip" else blob[:len(blob) // 3]))
    with pytest.raises(CheckpointError, match=f"step-4/{name}: corrupt or truncated"):
        resume(run, data)
    if name != "train_state.pt":
        with pytest.raises(CheckpointError, match=name):
            load_checkpoint(run, "last")
    one_line(*cli("generate", run, "--prompt", "x")[::2], says=f"{name}: corrupt or truncated")


def test_empty_pointer_is_one_line_and_from_step_recovers(run_dir):
    run, data = run_dir
    (run / "last.json").write_text("")
    with pytest.raises(CheckpointError, match="last.json: empty or corrupt.*steps 2, 4"):
        resume(run, data)
    assert resume(run, data, from_step=4).step == 6                                 # an explicit checkpoint works
    assert json.loads((run / "last.json").read_text())["step"] == 6


def test_foreign_folder_is_refused_and_never_touched(tmp_path):
    p = tmp_path / "p"
    (p / "step-by-step").mkdir(parents=True); (p / "data").mkdir()
    (p / "step-by-step" / "README.md").write_text("x"); (p / "data" / "train.bin").write_text("y")
    base = ["train", "--preset", "flashlm-nova", "--n-layers", "1", "--task", "mqar", "--batch-size", "4",
            "--max-steps", "4", "--eval-every", "2", "--precision", "fp32", "--keep", "1", "--out", p]
    one_line(*cli(*base)[::2], says="is not a memnb run folder")
    assert cli(*base, "--overwrite")[0] == 0
    assert (p / "step-by-step" / "README.md").read_text() == "x" and (p / "data" / "train.bin").read_text() == "y"
    assert {"step-4", "step-by-step"} <= {d.name for d in p.glob("step-*")}


def test_read_only_output_and_checkpoint_folders(folders, tmp_path):
    one_line(*cli("train", "--preset", "flashlm-nova", "--task", "mqar", "--out", "/proc/memnb-out")[::2],
             says="cannot write to /proc/memnb-out")
    run = folders / "ck"
    text = tmp_path / "t.txt"; text.write_text("One story.\n\nIn one document.")
    before = sorted(str(p) for p in run.rglob("*"))
    os.chmod(run, 0o555)
    try:
        env = {"MEMNB_CACHE": str(tmp_path / "cache")}
        with pytest.MonkeyPatch.context() as mp:
            for k, v in env.items(): mp.setenv(k, v)
            rc, out, err = cli("eval", run, "--data", text, "--context", "8", "--stride", "4")
    finally:
        os.chmod(run, 0o755)
    assert rc == 0 and f"tokens {len(text.read_bytes())} " in out, err              # every byte of the file
    assert sorted(str(p) for p in run.rglob("*")) == before                           # nothing written beside it


def test_seed_makes_the_command_reproducible(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("<|endoftext|>".join(f"Story {i}: the cat sat on the mat and the dog ran. " * 3 for i in range(60)))
    def curve(name, seed):
        rc, _, err = cli("train", "--preset", "flashlm-nova", "--n-layers", "1", "--data", text, "--tokenizer", "bytes",
                         "--seq-len", "32", "--batch-size", "4", "--max-steps", "3", "--eval-every", "3", "--seed", seed,
                         "--out", tmp_path / name, "--json", tmp_path / f"{name}.json")
        assert rc == 0, err
        return [h["loss"] for h in json.loads((tmp_path / f"{name}.json").read_text())["history"]]
    assert curve("a", 1) == curve("b", 1) != curve("c", 2)


def test_resume_applies_a_new_lr_and_rollback_undoes_a_blowup(run_dir):
    run, data = run_dir
    res = resume(run, data, lr=100.0, warmup_steps=1, schedule="constant")           # blows the weights up
    assert res.events[-1]["applied"]["lr"] == [1e-3, 100.0]
    blown = load_checkpoint(run, "last")
    assert max(p.abs().max() for p in blown.parameters()) > 20
    torch.manual_seed(0)
    model = MemLM(MemLMConfig(vocab_size=64, d_model=16, n_layers=1, n_heads=2, d_ff=32))
    res = train(model, data, TrainConfig(max_steps=6, eval_every=2, out_dir=str(run), progress=False, from_step=4))
    assert res.step == 6 and max(p.abs().max() for p in model.parameters()) < 20
    log = [json.loads(l) for l in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == list(range(1, 7))              # the blown-up steps' lines dropped


def test_nan_reaching_product_topk_is_a_bad_step(tmp_path):
    from memnb.presets import build
    torch.manual_seed(0)
    model = build("cpuflow-v97", vocab_size=64, n_layers=1, d_model=64)
    mixer = next(m for m in model.modules() if type(m).__name__ == "CumScanMixer")
    calls = [0]
    def poison(module, args):                       # NaN into the memory's input on two training steps
        calls[0] += 1
        if module.training and calls[0] in (3, 4):
            return (args[0] * float("nan"),) + args[1:]
    mixer.register_forward_pre_hook(poison)
    data = TaskData.make("mqar", 64, 16, seq_len=32, n_kv=4, vocab_size=64)
    res = train(model, data, TrainConfig(max_steps=5, eval_every=5, progress=False, precision="fp32"))
    assert res.step == 5 and res.bad_steps == 2


def test_generate_keeps_what_it_made_when_stopped(folders, monkeypatch):
    import memnb.generate as G
    run = folders / "ck"
    calls = [0]
    def stopping(penalty):
        def proc(logits, out):
            calls[0] += 1
            if calls[0] == 4: raise KeyboardInterrupt
            return logits
        return proc
    monkeypatch.setattr(G, "repetition_penalty", stopping)
    rc, out, err = cli("generate", run, "--prompt", "ab", "--max-new-tokens", "20", "--repetition-penalty", "1.3")
    assert rc == 0 and out.startswith("ab") and len(out.rstrip("\n").encode("utf-8", "replace")) >= 3, (out, err)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    "A run folder (flashlm-nova, 1 layer) and a checkpoint with a 32-place position code and a byte tokenizer."
    from memnb.presets import build
    tmp = tmp_path_factory.mktemp("flags")
    rc, _, err = cli("train", "--preset", "flashlm-nova", "--n-layers", "1", "--task", "mqar", "--batch-size", "2",
                     "--max-steps", "1", "--eval-every", "1", "--precision", "fp32", "--out", tmp / "run")
    assert rc == 0, err
    torch.manual_seed(0)
    build("cpuflow-v97", vocab_size=257, n_layers=1, max_len=32).save(tmp / "ck")
    load_tokenizer("bytes").save(tmp / "ck" / "tokenizer.json")
    (tmp / "empty.txt").write_text("")
    (tmp / "t.txt").write_text("Once upon a time.")
    return tmp


T = ["train", "--preset", "flashlm-nova", "--task", "mqar", "--out", "{tmp}/new"]
BAD = [  # (argv, what the one line says)
    (T + ["--minutes", "0"], "--minutes: must be a positive number"),
    (T + ["--minutes", "-1"], "--minutes: must be a positive number"),
    (T + ["--eval-every", "0"], "--eval-every: must be an integer >= 1"),
    (T + ["--n-layers", "0"], "--n-layers: must be an integer >= 1"),
    (T + ["--seq-len", "0"], "--seq-len: must be an integer >= 1"),
    (T + ["--batch-size", "0"], "--batch-size: must be an integer >= 1"),
    (T + ["--max-steps", "-3"], "--max-steps: must be an integer >= 1"),
    (T + ["--lr", "0"], "--lr: must be a positive number"),
    (T + ["--lr", "fast"], "--lr: must be a positive number, got 'fast'"),
    (T + ["--word-dropout", "1"], "--word-dropout: must be a number in [0, 1)"),
    (T + ["--keep", "0"], "--keep: must be an integer >= 1"),
    (T + ["--from-step", "-1"], "--from-step: must be an integer >= 0"),
    (T + ["--precision", "fp8"], "invalid choice: 'fp8'"),
    (["train", "--preset", "gpt5", "--task", "mqar", "--out", "{tmp}/new"], "unknown preset 'gpt5'"),
    (["train", "--preset", "flashlm-nova", "--out", "{tmp}/new"], "give --data SOURCE"),
    (["train", "--preset", "flashlm-nova", "--data", "{tmp}/empty.txt", "--tokenizer", "bytes", "--out", "{tmp}/new"],
     "--data {tmp}/empty.txt is empty"),
    (["train", "--preset", "flashlm-nova", "--data", "{tmp}/missing.txt", "--out", "{tmp}/new"], "--data"),
    (["train", "--preset", "flashlm-cortex8", "--n-layers", "1", "--task", "mqar", "--out", "{tmp}/run"],
     "a checkpoint of a different model"),
    (["train", "--preset", "flashlm-nova", "--n-layers", "1", "--task", "mqar", "--out", "{tmp}/run", "--rollback"],
     "--rollback: {tmp}/run has no checkpoint before the last"),
    (["train", "--preset", "flashlm-nova", "--task", "mqar", "--out", "/proc/memnb-x"], "cannot write to /proc/memnb-x"),
    (["generate", "{tmp}/ck", "--prompt", ""], "--prompt is empty"),
    (["generate", "{tmp}/ck", "--prompt", "hi", "--temperature", "-1"], "--temperature: must be a number >= 0"),
    (["generate", "{tmp}/ck", "--prompt", "hi", "--top-k", "0"], "--top-k: must be an integer >= 1"),
    (["generate", "{tmp}/ck", "--prompt", "hi", "--top-p", "0"], "--top-p: must be a number in (0, 1]"),
    (["generate", "{tmp}/ck", "--prompt", "hi", "--max-new-tokens", "0"], "--max-new-tokens: must be an integer >= 1"),
    (["generate", "{tmp}/ck", "--prompt", "hi", "--max-new-tokens", "40"], "exceed the model's position limit of 32"),
    (["generate", "{tmp}/nowhere", "--prompt", "hi"], "not a memnb training folder"),
    (["eval", "{tmp}/ck", "--data", "{tmp}/t.txt", "--context", "0"], "--context: must be an integer >= 1"),
    (["eval", "{tmp}/ck", "--data", "{tmp}/t.txt", "--stride", "0"], "--stride: must be an integer >= 1"),
    (["eval", "{tmp}/ck", "--data", "{tmp}/t.txt", "--stride", "300"], "--stride 300 is larger than --context 256"),
    (["eval", "{tmp}/ck", "--data", "{tmp}/t.txt", "--tokenizer", "nope.json"], "--tokenizer nope.json"),
    (["compare", "--minutes", "0"], "--minutes"),
    (["compare", "--mechanisms", "attention,mamba"], "mamba"),
    (["bench", "scan", "--T", "0"], "--T: must be an integer >= 1"),
    (["fly"], "invalid choice: 'fly'"),
]
if os.environ.get("MEMNB_DATA"):      # the local GPT-2 tokenizer; nothing is downloaded
    BAD.append((["eval", "{tmp}/ck", "--data", "{tmp}/t.txt", "--tokenizer", "gpt2"],
                "50,257 tokens but the model's vocabulary is 257"))


@pytest.mark.parametrize("argv,says", BAD, ids=[" ".join(a[:1] + a[-2:]) for a, _ in BAD])
def test_every_bad_value_is_one_line_and_exit_2(folders, argv, says):
    fill = lambda s: s.replace("{tmp}", str(folders))
    one_line(*cli(*map(fill, argv))[::2], says=fill(says))
    assert not (folders / "new").exists()                                            # a failed run leaves nothing


def test_console_script_shows_no_traceback_unless_debug(folders):
    script = Path(sys.executable).parent / "memnb"
    if not script.exists():
        pytest.skip("memnb is not pip-installed here")
    argv = [str(script), "generate", str(folders / "nowhere"), "--prompt", "hi"]
    run = subprocess.run(argv, capture_output=True, text=True)
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "Traceback" not in run.stderr
    run = subprocess.run(argv + ["--debug"], capture_output=True, text=True)
    assert "Traceback" in run.stderr


def test_artifact_bomb_and_unknown_kind(tmp_path):
    import zlib
    from memnb.artifact import load_artifact, save_artifact
    m = MemLM(MemLMConfig(vocab_size=64, d_model=16, n_layers=1, n_heads=2, d_ff=32))
    (tmp_path / "bomb.bin").write_bytes(zlib.compress(b"\0" * 30_000_000, 9))
    with pytest.raises(ValueError, match="decompresses to more than"):
        load_artifact(MemLM(m.config), tmp_path / "bomb.bin")
    save_artifact(m, tmp_path / "ok.bin")
    raw = zlib.decompress((tmp_path / "ok.bin").read_bytes()).replace(b'"kind": "fp16"', b'"kind": "xx16"', 1)
    (tmp_path / "kind.bin").write_bytes(zlib.compress(raw))
    with pytest.raises(ValueError, match="known kind"):
        load_artifact(MemLM(m.config), tmp_path / "kind.bin")


def test_checkpoint_saved_before_manifests_still_loads_and_resumes(tmp_path):
    "tests/fixtures/run-v0.1: a training folder written before checksums and nested TrainConfig."
    fixture = Path(__file__).parent / "fixtures" / "run-v0.1"
    run = tmp_path / "run"
    shutil.copytree(fixture, run)
    expected = torch.load(run / "expected_logits.pt", weights_only=True)
    model = load_checkpoint(run, "last").eval()
    torch.testing.assert_close(model(expected["x"]), expected["logits"], rtol=1e-5, atol=1e-5)
    data = TaskData.make("mqar", 16, 4, seq_len=16, n_kv=2, vocab_size=32)
    res = train(model, data, TrainConfig(batch_size=2, max_steps=6, eval_every=2, eval_batches=1, out_dir=str(run),
                                         progress=False))
    assert res.step == 6 and res.events[0]["from"] == "step-4" and res.events[0]["applied"] == {"max_steps": [4, 6]}
    assert (run / "step-4").exists()                                                  # not this run's: never pruned
