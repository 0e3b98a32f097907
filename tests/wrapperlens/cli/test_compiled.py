"""`wrapperlens compiled ...`: each command against an independent recomputation of what it
prints or writes (a fresh evaluation of the saved weights, brute-force answers and gradients)."""

from __future__ import annotations

import contextlib
import io
import json
import re

import pytest
import torch
import torch.nn.functional as F

from wrapperlens.cli import main
from wrapperlens.cli.compiled import COMPILED_COMMANDS, claims_text, table3_text
from wrapperlens.experiments.compiled.analysis import gradient_letters
from wrapperlens.experiments.compiled.presets import ETAS
from wrapperlens.experiments.compiled.stages import load_compiled_run
from wrapperlens.runs import RunDir

FAST = ["--train.steps=6", "--train.eval_every=3", "--train.checkpoint_every=3",
        "--train.eval_samples=100", "--no-progress"]
METRICS = ("acc/O_PT/cte1", "acc/O_FT/cte1", "acc/O_PT/cte0", "acc/O_FT/cte0")


def _run(*argv) -> str:
    """Run `wrapperlens compiled ARGV` in-process; its stdout (it must succeed)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["compiled", *map(str, argv)]) == 0
    return out.getvalue()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny compile -> finetune (η_S) -> reft chain, and an exact (noise-free) compile run."""
    root = tmp_path_factory.mktemp("compiled_cli")
    printed = {
        "compiled": _run("compile", "--preset", "tiny", "--out", root / "compiled"),
        "ft": _run("finetune", "--from", root / "compiled", "--out", root / "ft", "--eta", "S",
                   "--finetune.c_tr=0.5", *FAST),
        "reft": _run("reft", "--from", root / "ft", "--out", root / "reft", *FAST),
        "exact": _run("compile", "--preset", "tiny", "--out", root / "exact",
                      "--compile.noise_std=0"),
    }
    return root, printed


def _printed_accuracy(text: str, metric: str) -> float:
    return float(re.search(rf"{re.escape(metric)}\s+([\d.]+)%", text).group(1))


def test_the_chain_logs_and_prints_what_a_fresh_evaluation_of_its_weights_gives(runs):
    root, printed = runs
    for name, stage in (("compiled", "compile"), ("ft", "finetune"), ("reft", "reft")):
        run, model = load_compiled_run(root / name)
        fresh = run.evaluate(model)
        last = RunDir(root / name).metrics()[-1]
        assert run.stage == stage and last["step"] == (0 if stage == "compile" else 6)
        assert {k: last[k] for k in METRICS} == pytest.approx(fresh, abs=1e-9)
        for metric in METRICS:
            assert _printed_accuracy(printed[name], metric) == pytest.approx(
                100 * fresh[metric], abs=0.05)
    # the compile run's size as printed
    run, model = load_compiled_run(root / "compiled")
    assert f"{len(run.description.residual_labels)} residual labels" in printed["compiled"]
    assert f"n_layers {model.cfg.n_layers}," in printed["compiled"]
    # no --preset: the parent's (tiny), its named rates (η_S for finetune, η_VS for reft)
    ft, reft = (json.loads((root / n / "config.json").read_text()) for n in ("ft", "reft"))
    assert ft["preset"] == reft["preset"] == "tiny"
    assert (ft["train"]["lr"], reft["train"]["lr"]) == (ETAS["S"], ETAS["VS"])
    assert ft["finetune"]["c_tr"] == reft["finetune"]["c_tr"] == 0.5
    assert reft["parent"] == str(root / "ft")


def test_without_noise_the_compile_run_answers_every_o_pt_question(runs):
    root, printed = runs
    run, model = load_compiled_run(root / "exact")
    task = run.task
    assert RunDir(root / "exact").metrics()[0]["acc/O_PT/cte0"] == 1.0
    assert _printed_accuracy(printed["exact"], "acc/O_PT/cte1") == 100.0
    assert _printed_accuracy(printed["exact"], "acc/O_PT/cte0") == 100.0
    # against brute-force counts of `a` on both evaluation sets, drawn here
    for c_te in (0, 1):
        letters, _ = task.batch(task.eval_rng(f"cte{c_te}", 1000), 1000, float(c_te))
        with torch.no_grad():
            predicted = model(run.token_ids(letters))[:, -1].argmax(-1)
        assert [run.description.output_values[i] for i in predicted] == \
            list((letters == task.vocab.index("a")).sum(1))


def test_prune_k0_is_the_unpruned_model_and_the_top_weight_has_the_largest_gw(runs, tmp_path):
    root, _ = runs
    out = tmp_path / "prune.json"
    text = _run("prune", "--from", root / "ft", "--ks", "0,1,2", "--random-draws", "2",
                "--out", out)
    result = json.loads(out.read_text())
    run, model = load_compiled_run(root / "ft")
    unpruned = run.evaluate(model)
    assert result["ks"] == [0, 1, 2] and len(result["weights"]) == 2
    assert result["top"][0] == pytest.approx(unpruned) == result["random"][0]
    assert f"{100 * unpruned['acc/O_PT/cte0']:.1f}%" in text.splitlines()[2]
    assert all(label in text for label in result["weights"])
    # brute force: g·w of every block matrix for the O_PT loss on the held-out C_Te = 0 inputs
    letters = gradient_letters(run)
    tokens, classes = run.token_ids(letters), run.classes(letters, "a")
    params = {n: p for n, p in model.named_parameters()
              if re.fullmatch(r"blocks\.\d+\.(attn|mlp)\.W_\w+", n)}
    loss = F.cross_entropy(model(tokens[:512])[:, -1], classes[:512])
    grads = torch.autograd.grad(loss, list(params.values()))
    best = max(((float(s.max()), n, s.argmax()) for (n, p), g in zip(params.items(), grads)
                for s in [(g * p).detach()]), key=lambda t: t[0])
    index = torch.unravel_index(best[2], params[best[1]].shape)
    assert result["weights"][0] == f"{best[1]}[{', '.join(str(int(i)) for i in index)}]"
    # K = 1 is the model with that weight zeroed by hand
    with torch.no_grad():
        params[best[1]][index] = 0.0
    assert result["top"][1] == pytest.approx(run.evaluate(model))


def test_attention_writes_an_offline_page_labelled_bos_and_letters(runs, tmp_path):
    root, _ = runs
    page = tmp_path / "views" / "attention.html"
    _run("attention", "--from", root / "ft", "--out", page)
    html = page.read_text()
    assert not re.search(r"<script[^>]*\bsrc\s*=\s*[\"']?https?://", html)
    run, _ = load_compiled_run(root / "ft")
    letters, _ = run.task.batch(run.task.eval_rng("cte0", 100), 100, 0.0)  # the first input
    assert "BOS " + " ".join(run.task.vocab[i] for i in letters[0]) in html
    # a given input, on the exact Counter: its answer is the brute-force count of a
    text = _run("attention", "--from", root / "exact", "--out", page, "--input", "abcab")
    assert "BOS a b c a b" in page.read_text()
    assert "answer at the last position: 2 (O_PT 'a': 2)" in text


@pytest.mark.parametrize("argv, message", [
    (["compile", "--out", "{new}", "--task.program=sorter"], "task.program='sorter'"),
    (["compile", "--out", "{new}", "--train.lr=1"], "sections ['train'] do not apply here"),
    (["compile", "--out", "{root}/compiled", "--compile.seed=5"],
     "holds a run with other configs"),
    (["finetune", "--from", "{root}/ft", "--out", "{new}"],
     "finetune starts from a compiled compile run, but"),
    (["reft", "--from", "{root}/compiled", "--out", "{new}"],
     "reft starts from a compiled finetune run, but"),
    (["reft", "--from", "{root}/ft", "--out", "{new}", "--eta", "S"], "is not below"),
    (["finetune", "--from", "{root}/compiled", "--out", "{new}", "--task.length=5"],
     "fixed by the parent run"),
    (["finetune", "--from", "{root}/compiled", "--out", "{new}", "--eta", "XL"],
     "eta 'XL': expected one of L, M, S, VS"),
    (["prune", "--from", "{root}/missing"], "missing/config.json: file not found"),
    (["prune", "--from", "{root}/ft", "--ks", "0,100000"], "k=100000 must be in [0,"),
    (["attention", "--from", "{root}/ft", "--out", "{new}.html", "--input", "abx"],
     "letters of abcdefghi expected, got 'x'"),
    (["attention", "--from", "{root}/ft", "--out", "{new}.html", "--input", "a" * 13],
     "reads at most 12"),
    (["grid", "--preset", "tiny", "--out", "{new}", "--programs", "counter,sorter"],
     "unknown or empty programs"),
])
def test_bad_input_exits_2_naming_the_problem(runs, tmp_path, capsys, argv, message):
    root, _ = runs
    argv = [a.format(root=root, new=tmp_path / "new") for a in argv]
    assert main(["compiled", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("wrapperlens: error: ") and message in err
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("command", COMPILED_COMMANDS)
def test_every_subcommand_has_help_with_an_example(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["compiled", command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "example:" in text and f"wrapperlens compiled {command} " in text
    if command in ("compile", "finetune", "reft"):
        assert "defaults per preset" in text and "tiny" in text


def test_grid_prints_the_table_and_claims_of_its_results(tmp_path):
    text = _run("grid", "--preset", "tiny", "--out", tmp_path, "--seeds", "1", "--programs",
                "counter", "--executor", "inline", "--no-progress")
    results = json.loads((tmp_path / "results.json").read_text())
    assert table3_text(results) in text and claims_text(results) in text
    # the η_S, C_Tr 1 row carries that run's final accuracies, from its own metrics file
    (run,) = [r for r in results["runs"] if r["key"] ==
              "program=counter/stage=finetune/eta=S/c_tr=1.0/seed=0"]
    final = RunDir(tmp_path / run["dir"]).metrics()[-1]
    (row,) = [line for line in text.splitlines() if re.match(r"counter\s+S\s+1\s", line)]
    for metric in METRICS:
        v = f"{100 * final[metric]:.1f}"
        assert f"{v} [{v}, {v}]" in row
    assert re.search(r"^counter\s+-\s+-\s", text, re.M)  # the compiled model's own row
    assert all(f"  {i:2d}  " in text for i in range(8, 13))


def test_table3_text_formats_mean_min_max_in_percent():
    cell = {"mean": (0.5 + 0.25 + 1.0) / 3, "min": 0.25, "max": 1.0}
    results = {"tables": {"table3": [
        {"program": "counter", "eta": "-", "c_tr": None, "seeds": 3,
         **{m: {"mean": 0.0, "min": 0.0, "max": 0.0} for m in METRICS}},
        {"program": "counter", "eta": "VS", "c_tr": 0.2, "seeds": 3, "acc/O_PT/cte1": cell,
         **{m: {"mean": 0.125, "min": 0.1, "max": 0.15} for m in METRICS[1:]}},
    ]}}
    lines = table3_text(results).splitlines()
    assert lines[1].split()[:3] == ["program", "η", "C_Tr"]
    assert lines[3].split()[:3] == ["counter", "-", "-"]
    assert lines[4].split()[:7] == ["counter", "VS", "0.2", "58.3", "[25.0,", "100.0]", "12.5"]
    assert lines[4].split()[-1] == "3"
    claims = {"claims": [
        {"id": 9, "status": "inconclusive", "mean": 0.1234, "spread": [-0.1, 0.15],
         "threshold": 0.6, "title": "One or a few weights hold the wrapper"},
        {"id": 11, "status": "not covered", "mean": None, "spread": None, "threshold": 0.3,
         "title": "Max-identifier sorting"}]}
    text = claims_text(claims)
    assert "   9  inconclusive     +0.123 [-0.100, +0.150]   > 0.6" in text
    assert re.search(r"11  not covered\s+-\s+> 0.3\s+Max-identifier sorting", text)
