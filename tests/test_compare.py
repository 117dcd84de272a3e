"""`memnb.compare`: resumable runs, the rows' statistics, the command line's options."""
import argparse
import json
import subprocess
import sys
import time

import pytest

from memnb.compare import add_compare_arguments, compare, load_runs, run_compare_cli, setting_key, summarize

TINY = dict(quick=True, steps=4, eval_every=2, progress=False)


def _lines(d):
    return [json.loads(l) for l in (d / "runs.jsonl").read_text().splitlines()]


def test_a_killed_run_resumes_where_it_stopped(tmp_path):
    "Kill a compare (for real, mid-run), rerun the same command: only the missing runs are trained."
    script = (f"from memnb.compare import compare\n"
              f"compare(['attention', 'cumulative-sum scan'], seeds=3, out_dir={str(tmp_path)!r}, **{TINY!r})\n")
    p = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.time() + 300
    while time.time() < deadline and not ((tmp_path / "runs.jsonl").exists() and len(_lines(tmp_path)) >= 2):
        time.sleep(0.05)
    p.kill(); p.wait()
    with (tmp_path / "runs.jsonl").open("a") as f:
        f.write('{"key": "torn line of a kil')                      # a kill can leave half a line
    before = _lines_ok = [l for l in (tmp_path / "runs.jsonl").read_text().splitlines() if l.endswith("}")]
    done = {(json.loads(l)["mechanism"], json.loads(l)["seed"]) for l in before}
    assert 2 <= len(done) < 6
    rows = compare(["attention", "cumulative-sum scan"], seeds=3, out_dir=tmp_path, **TINY)
    runs = json.loads((tmp_path / "compare.json").read_text())["runs"]
    assert len(runs) == 6 and {(r["mechanism"], r["seed"]) for r in runs} == {(m, s) for m in ("attention", "cumulative-sum scan") for s in range(3)}
    kept = [r for r in runs if (r["mechanism"], r["seed"]) in done]
    assert [json.loads(l) for l in before] == kept                  # the finished runs were read back, not retrained
    assert [r["seeds"] for r in rows] == [[0, 1, 2]] * 2


def test_a_different_setting_does_not_reuse_runs(tmp_path):
    compare(["attention"], seeds=1, out_dir=tmp_path, **TINY)
    compare(["attention"], seeds=1, out_dir=tmp_path, **{**TINY, "steps": 3})
    runs = _lines(tmp_path)
    assert len(runs) == 2 and runs[0]["key"] != runs[1]["key"] and [r["steps"] for r in runs] == [4, 3]
    assert len(load_runs(tmp_path / "runs.jsonl", runs[0]["key"])) == 1


def test_summarize_keeps_the_best_learning_rate_and_the_spread():
    run = lambda lr, seed, acc: {"mechanism": "m", "lr": lr, "seed": seed, "accuracy": acc, "loss": 1.0, "params": 1,
                                 "steps": 10, "seconds": 1.0, "tokens_per_s": 1.0, "curve": [], "bpb": None}
    rows = summarize([run(1e-3, 0, 0.2), run(1e-3, 1, 0.4), run(1e-2, 0, 0.9), run(1e-2, 1, 0.7)])
    (r,) = rows
    assert r["lr"] == 1e-2 and r["accuracies"] == [0.9, 0.7] and (r["lo"], r["hi"]) == (0.7, 0.9)
    assert r["lr_grid"] == {"0.001": pytest.approx(0.3), "0.01": pytest.approx(0.8)}
    assert r["std"] == pytest.approx(0.1414, abs=1e-3)


def test_setting_key_ignores_what_a_rerun_may_extend():
    s = {"task": "mqar", "steps": 5, "seeds": [0], "lrs": None}
    assert setting_key(s) == setting_key({**s, "seeds": [0, 1, 2], "lrs": [1e-3]})
    assert setting_key(s) != setting_key({**s, "steps": 6})


def _parse(argv):
    return add_compare_arguments(argparse.ArgumentParser(prog="memnb compare")).parse_args(argv)


@pytest.mark.parametrize("argv, message", [
    (["--mechanisms", "attention,mamba"], "unknown mechanism(s) ['mamba']"),
    (["--lr", "1e-3", "--lrs", "1e-2"], "--lr and --lrs cannot be combined"),
    (["--sweep", "--presets", "flashlm-nova"], "--sweep and --presets cannot be combined"),
    (["--quick", "--thorough"], "--quick and --thorough cannot be combined"),
    (["--sweep", "--n-kv", "8"], "--sweep takes its numbers of pairs from --pairs"),
    (["--presets", "nope"], "unknown preset(s) ['nope']"),
])
def test_bad_combinations_are_one_line_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        run_compare_cli(_parse(argv))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1]


@pytest.mark.parametrize("argv", [["--steps", "-3"], ["--lrs", "1e-3,x"], ["--seeds", "0"]])
def test_bad_values_are_refused_by_the_parser(argv):
    with pytest.raises(SystemExit):
        _parse(argv)


def test_the_command_runs_a_grid_and_a_sweep(tmp_path, capsys):
    assert run_compare_cli(_parse(["--quick", "--steps", "3", "--seeds", "1", "--mechanisms", "attention",
                                   "--lrs", "1e-3,1e-2", "--out", str(tmp_path / "c"), "--no-progress"])) == 0
    out = capsys.readouterr().out
    assert "ranking: attention" in out and "WARNING: no mechanism left chance" in out
    doc = json.loads((tmp_path / "c" / "compare.json").read_text())
    assert set(doc["rows"][0]["lr_grid"]) == {"0.001", "0.01"} and doc["rows"][0]["lr"] in (1e-3, 1e-2)
    assert run_compare_cli(_parse(["--sweep", "--quick", "--steps", "2", "--seeds", "1", "--mechanisms", "delta rule,ram-net kv",
                                   "--widths", "16,32", "--pairs", "2", "--seq-len", "32", "--out", str(tmp_path / "s"),
                                   "--no-progress"])) == 0
    pts = json.loads((tmp_path / "s" / "sweep.json").read_text())["points"]
    assert len(pts) == 4 and (tmp_path / "s" / "sweep.png").stat().st_size > 0
    size = {(p["mechanism"], p["d_model"]): p["state_bytes"] for p in pts}
    assert size[("delta rule", 16)] < size[("delta rule", 32)] < size[("ram-net kv", 16)]


def test_memnb_compare_through_the_cli_main(tmp_path, capsys):
    from memnb.cli import main
    out = tmp_path / "rows.json"
    assert main(["compare", "--quick", "--steps", "2", "--seeds", "1", "--mechanisms", "attention,ram-net kv",
                 "--out", str(tmp_path / "c"), "--no-progress", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert [r["mechanism"] for r in doc["rows"]] == ["attention", "ram-net kv"] and "ranking" in doc
    with pytest.raises(SystemExit) as e:
        main(["compare", "--mechanisms", "mamba"])
    assert e.value.code == 2 and "unknown mechanism(s) ['mamba']" in capsys.readouterr().err
