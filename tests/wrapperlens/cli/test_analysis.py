"""The analysis commands on tiny trainer runs: outputs written, the pretrained run found through
`parent`, self-comparisons that must give zero, and clear errors."""

import hashlib
import json

import pytest

from wrapperlens.cli import build_parser, main
from wrapperlens.cli.analysis import ANALYSIS_COMMANDS
from wrapperlens.experiments.pcfg.stages import resolve_configs
from wrapperlens.stages import run_stage

SMALL = {"train.batch_size": 16, "train.eval_samples": 40, "train.checkpoint_every": 50}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_chain):
    return tiny_chain(tmp_path_factory.mktemp("cli_runs"), 8, 6, 5)


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("command", ANALYSIS_COMMANDS)
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exit:
        main([command, "--help"])
    assert exit.value.code == 0
    text = capsys.readouterr().out
    assert "--from RUN" in text and "--out DIR" in text and "--run" not in text


def test_prune_parses_the_random_control_flags():
    args = build_parser().parse_args(["prune", "--from", "r", "--random-draws", "4",
                                      "--random-seed", "9"])
    assert (args.random_draws, args.random_seed) == (4, 9)
    defaults = build_parser().parse_args(["prune", "--from", "r"])
    assert (defaults.random_draws, defaults.random_seed) == (0, 0)  # no control unless asked


def test_prune_writes_a_sweep_and_leaves_the_run_alone(runs, tmp_path, capsys):
    before = sha(runs / "ft" / "model.safetensors")
    argv = ["prune", "--from", str(runs / "ft"), "--out", str(tmp_path), "--ks", "0-2",
            "--samples", "32", "--eval-samples", "30", "--eligible", "mlp_out_and_attn_out",
            "--random-draws", "2"]
    assert main(argv) == 0
    result = json.loads((tmp_path / "prune.json").read_text())
    assert result["ks"] == [0, 1, 2] and len(result["units"]) == 2
    control = result["random"]
    assert control["draws"] == 2 and control["ks"] == [0, 1, 2] and control["seed"] == 0
    assert control["metrics"][0] == result["metrics"][0]  # K = 0: the same unpruned model
    assert [len(d["units"]) for d in control["per_draw"]] == [2, 2]
    assert result["grad_samples"] == 32
    assert set(result["metrics"][0]) >= {  # (pcfg.py may add further test sets)
        "acc/O_PT/cte0",
        "acc/O_FT/cte0",
        "acc/O_PT/cte1",
        "acc/O_FT/cte1",
    }
    assert (tmp_path / "prune.png").stat().st_size > 0
    assert sha(runs / "ft" / "model.safetensors") == before
    assert "O_PT/cte0" in capsys.readouterr().out


def test_probe_compares_pretrained_finetuned_and_random(runs, tmp_path):
    argv = ["probe", "--from", str(runs / "ft"), "--out", str(tmp_path), "--samples", "120",
            "--prompt", "b", "--label", "a", "--random-inits", "2"]
    assert main(argv) == 0
    result = json.loads((tmp_path / "probe.json").read_text())
    assert set(result["accuracy"]) == {"pretrained", "fine-tuned", "random init", "random init #2"}
    assert result["baselines"] == ["random init", "random init #2"]
    assert result["point_names"] == ["B0", "B1"]  # one-layer tiny model
    assert result["prompt"] == "C_b" and result["label"] == "C_a answer"
    assert (tmp_path / "probe.png").exists()


def test_patch_defaults_to_the_parent_and_self_patching_is_zero(runs, tmp_path):
    argv = ["patch", "--from", str(runs / "ft"), "--out", str(tmp_path / "pair"), "--samples", "8"]
    assert main(argv) == 0
    pair = json.loads((tmp_path / "pair" / "patch.json").read_text())
    assert pair["pretrained"] == str(runs / "pt")
    assert pair["axes"] == ["layer", "pos"] and len(pair["effect"]) == 1
    assert len(pair["effect"][0]) == len(pair["str_tokens_example"])
    assert max(abs(v) for v in pair["effect"][0]) > 0
    # The fine-tuned model patched with its own activations: nothing changes.
    argv = ["patch", "--from", str(runs / "ft"), "--pretrained", str(runs / "ft"),
            "--out", str(tmp_path / "self"), "--samples", "8", "--component", "z"]
    assert main(argv) == 0
    same = json.loads((tmp_path / "self" / "patch.json").read_text())
    assert same["axes"] == ["layer", "pos", "head"]
    assert all(abs(v) < 1e-6 for pos in same["effect"][0] for v in pos)
    assert (tmp_path / "self" / "patch.png").exists()


def test_attribute_with_exact_comparison(runs, tmp_path):
    argv = ["attribute", "--from", str(runs / "ft"), "--out", str(tmp_path), "--samples", "8",
            "--components", "resid_pre,z", "--all-positions", "--compare-exact"]
    assert main(argv) == 0
    result = json.loads((tmp_path / "attribute.json").read_text())
    assert set(result["components"]) == {"resid_pre", "z"}
    z = result["components"]["z"]
    assert z["axes"] == ["layer", "head"] and len(z["exact"][0]) == 2 and -1 <= z["spearman"] <= 1
    assert (tmp_path / "attribute_z.png").exists()


def test_attention_page(runs, tmp_path):
    argv = ["attention", "--from", str(runs / "ft"), "--out", str(tmp_path), "--example", "1"]
    assert main(argv) == 0
    page = (tmp_path / "attention.html").read_text()
    assert "pretrained" in page and "fine-tuned" in page and "CircuitsVis.render" in page


def test_wrapper_map_of_a_run_with_itself_is_empty(runs, tmp_path):
    argv = ["wrapper-map", "--from", str(runs / "ft"), "--out", str(tmp_path / "pair"),
            "--samples", "16"]
    assert main(argv) == 0
    rows = json.loads((tmp_path / "pair" / "wrapper_map.json").read_text())["rows"]
    assert len(rows) == 1 * (2 + 128 + 2)  # heads, neurons, attn + mlp of one layer
    assert any(r["weight_change"] > 0 for r in rows)
    assert (tmp_path / "pair" / "wrapper_map.png").exists()
    argv = ["wrapper-map", "--from", str(runs / "ft"), "--pretrained", str(runs / "ft"),
            "--out", str(tmp_path / "self"), "--samples", "8", "--no-neuron-patching"]
    assert main(argv) == 0
    rows = json.loads((tmp_path / "self" / "wrapper_map.json").read_text())["rows"]
    assert all(r["weight_change"] == 0 for r in rows)
    assert all(r["patch_effect"] is None for r in rows if r["kind"] == "neuron")


def test_default_out_is_inside_the_run(runs):
    assert main(["attention", "--from", str(runs / "ft")]) == 0
    assert (runs / "ft" / "analysis" / "attention" / "attention.html").exists()


def test_scratch_baseline_trains_once_and_compares(runs, tmp_path, capsys):
    argv = ["scratch-baseline", "--from", str(runs / "reft"), "--out", str(tmp_path)]
    assert main([*argv, "--no-progress", "--threshold", "0"]) == 0
    result = json.loads((tmp_path / "reft_vs_scratch.json").read_text())
    assert result["iterations_to_threshold"] == {"reFT reft": 0, "Scr.+FT": 0}
    assert result["same_eval_strings"] == {"reFT reft": True}
    scratch = json.loads((tmp_path / "pretrain" / "config.json").read_text())
    assert scratch["task"]["prior"] == "a=0.001,b=0.999,c=0"
    assert scratch["preset"] == "tiny"  # the --from run's preset, without --preset
    assert "not reached" not in capsys.readouterr().out
    weights = tmp_path / "finetune" / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert main([*argv, "--no-progress", "--threshold", "1"]) == 0  # reuses the finished runs
    assert weights.stat().st_mtime_ns == stamp
    assert (tmp_path / "reft_vs_scratch.png").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["prune", "--from", "{pt}"], "needs a finetune or reft run"),
        (["patch", "--from", "{pt}"], "is a pretraining run"),
        (["patch", "--from", "{missing}"], "file not found"),
        (["probe", "--from", "{ft}", "--prompt", "z"], "'z' is not a terminal"),
        (["attribute", "--from", "{ft}", "--components", "resid_pre,nope"], "unknown ['nope']"),
        (["prune", "--from", "{ft}", "--train.lr=1"], "prune takes no config overrides"),
        (["patch", "--from", "{ft}", "--c-te", "2"], "PatchOptions.c_te: expected a number in"),
        (["probe", "--from", "{ft}", "--samples", "0"], "ProbeOptions.samples: expected a posit"),
        (["probe", "--from", "{ft}", "--probe-preset", "slow"], "ProbeOptions.probe_preset"),
        (["scratch-baseline", "--from", "{ft}", "--out", "{missing}", "--threshold", "2"],
         "--threshold: expected a number in [0, 1]"),
    ],
)
def test_errors_name_the_problem(runs, argv, message, capsys):
    argv = [a.format(pt=runs / "pt", ft=runs / "ft", missing=runs / "missing") for a in argv]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_a_pretrained_run_of_another_shape_is_refused(runs, tmp_path, capsys):
    other = resolve_configs(
        "pretrain", "tiny", overrides={**SMALL, "train.steps": 1, "model.d_model": 16}
    )
    run_stage(other.spec(), tmp_path / "other", progress=False)
    argv = ["patch", "--from", str(runs / "ft"), "--pretrained", str(tmp_path / "other")]
    assert main(argv) == 2
    assert "differ in cfg.d_model" in capsys.readouterr().err


def test_a_list_that_is_not_integers_is_an_argparse_error(runs, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["prune", "--from", str(runs / "ft"), "--ks", "a-b"])
    assert exit.value.code == 2
    assert "expected integers like '0-15'" in capsys.readouterr().err


def test_scratch_baseline_takes_a_device_and_passes_it_to_training(monkeypatch, tmp_path, capsys):
    from wrapperlens.experiments.pcfg import scratch_baseline

    with pytest.raises(SystemExit):
        main(["scratch-baseline", "--help"])
    assert "--device" in capsys.readouterr().out

    class Called(Exception):
        pass

    def fake(out, preset, **kwargs):
        raise Called(kwargs["device"])

    monkeypatch.setattr(scratch_baseline, "run_scratch_baseline", fake)
    with pytest.raises(Called, match="^cpu$"):
        main(["scratch-baseline", "--from", str(tmp_path), "--out", str(tmp_path / "s"),
              "--preset", "tiny", "--device", "cpu"])
