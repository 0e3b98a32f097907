"""`wrapperlens tinystories ...` (through `wrapperlens.cli.main`
with "tinystories" in front)."""

import json
import subprocess
import sys

import pytest
import torch
from transformers import GPTNeoConfig, GPTNeoForCausalLM

from wrapperlens.cli import main as wrapperlens_main
from wrapperlens.cli.tinystories import COMMANDS, STARTS_FROM_A_RUN, add_tinystories_commands


def main(argv):
    """`wrapperlens tinystories ARGV`."""
    return wrapperlens_main(["tinystories", *argv])
from wrapperlens.cli.options import Parser
from tinystories.experiments import load_story_model
from tinystories.tokenizer import load_tokenizer, save_tokenizer

pytestmark = pytest.mark.slow


def test_every_command_has_help_with_its_defaults(capsys):
    for command, (_, sections, _) in COMMANDS.items():
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        text = " ".join(capsys.readouterr().out.split())
        assert "--out" in text
        if sections:
            assert "defaults per preset" in text and "cpu" in text and "paper" in text
        if command in STARTS_FROM_A_RUN:
            assert "--from" in text and "(default: the --from run's preset, else cpu)" in text
        elif sections:
            assert "--preset NAME scale of the defaults: paper | cpu | tiny (default: cpu)" in text


def test_commands_register_on_a_wrapperlens_style_parser():
    parser = Parser(prog="wrapperlens")
    add_tinystories_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["tinystories", "delete", "--from", "a", "--out", "b",
                              "--protocol", "F+MM", "--eta", "S"])
    assert (args.command, args.ts_command, args.protocol, args.eta) == ("tinystories", "delete",
                                                                      "F+MM", "S")
    assert args.run == "a" and args.command_name == "tinystories delete"
    assert args.sections == ("batches", "train", "eval")  # the overrides it takes
    assert callable(args.handler)  # what wrapperlens.cli.main calls
    args = parser.parse_args(["tinystories", "compare", "--from", "pt=a", "b", "--out", "c"])
    assert args.runs == ["pt=a", "b"]


def test_importing_the_cli_module_is_light():
    code = ("import sys, wrapperlens.cli.tinystories, wrapperlens.cli; "
            "print(any(m in sys.modules for m in ('torch', 'transformer_lens', 'datasets')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """prepare -> tokenizer -> pretrain -> delete through the CLI, at the tiny scale."""
    out = tmp_path_factory.mktemp("cli")
    fast = ["--preset", "tiny"]
    assert main(["prepare", *fast, "--out", str(out / "prep"), "--prepare.n_stories=160"]) == 0
    assert main(["tokenizer", *fast, "--data", str(out / "prep"), "--out", str(out / "tok")]) == 0
    assert main(["pretrain", *fast, "--data", str(out / "prep"), "--tokenizer", str(out / "tok"),
                 "--out", str(out / "pt"), "--train.steps=4", "--no-progress"]) == 0
    assert main(["delete", "--from", str(out / "pt"), "--protocol", "F+MM", "--eta", "S",
                 "--out", str(out / "del"), "--train.steps=3", "--no-progress",
                 "--device", "cpu"]) == 0
    return out


def test_stage_commands_write_runs_with_their_overrides(runs):
    config = json.loads((runs / "del" / "config.json").read_text())
    assert config["preset"] == "tiny"  # from the parent
    assert config["data"]["protocol"] == "filter_mix_match" and config["eta"] == "S"
    assert config["train"]["steps"] == 3 and config["train"]["lr"] == 1e-4
    assert (runs / "prep" / "twist_classifier" / "classifier.json").is_file()


def test_probe_generate_and_compare_commands(runs, capsys):
    models = [f"pt={runs / 'pt'}", f"del={runs / 'del'}"]
    assert main(["probe", "--from", *models, "--out", str(runs / "probe"),
                 "--probe.steps=20", "--probe_data.n_stories=40"]) == 0
    report = json.loads((runs / "probe" / "report.json").read_text())
    assert set(report["accuracy"]) == {"pt", "del", "random init"}
    assert main(["generate", "--from", str(runs / "del"), "--out", str(runs / "gen"),
                 "--eval.n_generations=3"]) == 0
    assert len((runs / "gen" / "generations.jsonl").read_text().splitlines()) == 3
    assert "twist_score" in json.loads((runs / "gen" / "scores.json").read_text())
    assert main(["compare", "--from", *models, "--out", str(runs / "cmp"),
                 "--n-stories", "8", "--probe.steps=20", "--probe_data.n_stories=40"]) == 0
    assert json.loads((runs / "cmp" / "report.json").read_text())["reference"] == "pt"
    capsys.readouterr()


def test_bad_overrides_and_arguments_are_errors_that_name_them(runs, capsys):
    code = main(["probe", "--from", str(runs / "pt"), "--out", str(runs / "x"), "--train.lr=1"])
    assert code == 2 and "sections ['train'] do not apply" in capsys.readouterr().err
    code = main(["export-neo", "--from", str(runs / "pt"), "--out", str(runs / "x"), "--eval.n=1"])
    message = "tinystories export-neo takes no config overrides (got --eval.n)"
    assert code == 2 and message in capsys.readouterr().err
    code = main(["reft", "--from", str(runs / "del"), "--out", str(runs / "y"), "--train.nope=1"])
    assert code == 2 and "train.nope" in capsys.readouterr().err


def test_gpt_neo_import_fine_tune_and_export(runs, tmp_path):
    tokenizer = load_tokenizer(runs / "tok")
    config = GPTNeoConfig(vocab_size=len(tokenizer), max_position_embeddings=256, hidden_size=32,
                          num_layers=2, attention_types=[[["global", "local"], 1]], num_heads=2,
                          window_size=16, bos_token_id=tokenizer.bos_token_id,
                          eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    GPTNeoForCausalLM(config).save_pretrained(tmp_path / "hf")
    save_tokenizer(tokenizer, tmp_path / "hf")
    assert main(["import-neo", "--from", str(tmp_path / "hf"), "--out", str(tmp_path / "neo"),
                 "--data", str(runs / "prep")]) == 0
    assert main(["delete", "--preset", "tiny", "--from", str(tmp_path / "neo"), "--protocol", "F",
                 "--out", str(tmp_path / "neo_del"), "--train.steps=3", "--no-progress"]) == 0
    assert main(["export-neo", "--from", str(tmp_path / "neo_del"),
                 "--out", str(tmp_path / "hf_del")]) == 0
    tuned = load_story_model(tmp_path / "neo_del")
    assert not torch.equal(tuned.W_E, load_story_model(tmp_path / "neo").W_E)
    assert tuned.blocks[0].attn.b_Q.abs().max() == 0  # GPT-Neo's absent biases stayed frozen
    exported = GPTNeoForCausalLM.from_pretrained(tmp_path / "hf_del").eval()
    tokens = torch.tensor([tokenizer("Story: Once upon a time")["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(exported(tokens).logits, tuned(tokens), atol=1e-4)


def test_missing_directories_and_an_offline_hub_are_clean_errors(tmp_path, capsys):
    code = main(["tokenizer", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "t")])
    assert code == 2 and "run prepare_stories" in capsys.readouterr().err
    code = main(["import-neo", "--from", "roneneldan/TinyStories-1M", "--out", str(tmp_path / "n")])
    assert code == 2 and "local" in capsys.readouterr().err  # says how to pass a local directory
