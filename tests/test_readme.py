"""Every command the README shows is run here, at the `tiny` scale, in the README's order.

The README's shell blocks are read as they are; each `&&`-joined command is run in one scratch
directory (so `runs/pt` made by one line is the `--from` of the next), in this process through
`wrapperlens.cli.main` (one TransformerLens import for all of them) or, for `torchrun`, as a
subprocess. The only rewrites, each needed to run them in seconds and offline:

| README | here | why |
|---|---|---|
| `--preset demo`, `--preset cpu`, `--preset paper` | `--preset tiny` | minutes to days on 2 cores |
| `--device cuda` | `--device cpu` | no GPU in CI |
| a hub name (`roneneldan/...`) | run as written, must fail at once naming the hub; then with a local stand-in | nothing can be downloaded |
| `stories.txt` (plain stories) | 400 real stories, the excerpt in `tests/data/tinystories` (generated ones without it) | a file the user brings |

The set-up commands (`python3 -m venv`, `. .venv/bin/activate`, `pip install ...`,
`python -m pytest`) are what CI itself runs on a fresh machine (`.ci/run`); they are skipped here.
Python blocks are executed as they are, with `PRESET = "cpu"` read as `"tiny"`. Inline code
spans that start with `wrapperlens ` must parse, in the README and in the docs pages that hold what
moved out of it (`MOVED_PAGES`: measured results, TinyStories details, benchmarks); those pages
hold no shell blocks, every command block stays in the README.
"""

import contextlib
import io
import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SAMPLE = (README.parent / "tests" / "data" / "tinystories"  # real stories shipped for the tests
          / "tinystories_v1_train_head330000B.txt")
SETUP = ("python3 -m venv", ". .venv/bin/activate", "pip install", "python -m pytest")
HUB_NAMES = ("roneneldan/TinyStoriesInstruct", "roneneldan/TinyStories-33M")
MOVED_PAGES = tuple(README.parent / "docs" / name
                    for name in ("measured.md", "tinystories.md", "benchmarks.md"))

pytestmark = pytest.mark.slow


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def shell_commands() -> list[str]:
    """Every command of the README's bash blocks, comments and set-up commands removed."""
    commands = []
    for block in blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s#.*$", "", line).strip()
            if not line or line.startswith("#"):
                continue
            for command in (c.strip() for c in line.split("&&")):
                if not command.startswith(SETUP):
                    commands.append(command)
    return commands


def tiny(argv: list[str]) -> list[str]:
    """The README's rewrites (module docstring): tiny preset, CPU device."""
    out = []
    for i, arg in enumerate(argv):
        if i and argv[i - 1] == "--preset" and arg in ("cpu", "paper", "demo"):
            arg = "tiny"
        if i and argv[i - 1] == "--device" and arg.startswith("cuda"):
            arg = "cpu"
        out.append(arg)
    return out


def run_cli(argv: list[str]) -> tuple[int, str]:
    from wrapperlens.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse
            code = e.code if isinstance(e.code, int) else 2
    return code, err.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def local_gpt_neo(directory: Path) -> Path:
    """A small random GPT-Neo saved with `save_pretrained`, with the TinyStories tokenizer."""
    from transformers import GPTNeoConfig, GPTNeoForCausalLM

    from tinystories.tokenizer import load_tokenizer, save_tokenizer

    tokenizer = load_tokenizer(Path("runs/ts/tokenizer"))
    config = GPTNeoConfig(vocab_size=len(tokenizer), max_position_embeddings=256, hidden_size=32,
                          num_layers=2, num_heads=2, attention_types=[[["global", "local"], 1]],
                          window_size=16, intermediate_size=64)
    GPTNeoForCausalLM(config).save_pretrained(directory)
    save_tokenizer(tokenizer, directory)
    return directory


def plain_stories(path: Path, n: int = 400) -> None:
    """`n` `<|endoftext|>`-separated stories: the real sample's, else the story source's."""
    eot = "<|endoftext|>"
    if SAMPLE.is_file():
        stories = SAMPLE.read_text(encoding="utf-8").split(eot)[:n]
    else:
        from tinystories.story_source import StorySourceConfig, generate_records

        stories = [r["story"] for r in generate_records(StorySourceConfig(n_stories=n))]
    path.write_text("".join(s.strip() + "\n" + eot + "\n" for s in stories), encoding="utf-8")


def run_command(command: str) -> None:
    argv = tiny(shlex.split(command))
    if argv[0] == "torchrun":
        launcher = [sys.executable, "-m", "torch.distributed.run", "--master_port",
                    str(free_port())]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
        done = subprocess.run(launcher + argv[1:], env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, f"{command}\n{done.stderr[-3000:]}"
        return
    if argv[:3] == ["python", "-m", "wrapperlens"]:
        argv = ["wrapperlens", *argv[3:]]
    assert argv[0] == "wrapperlens", f"the README shows a command this test cannot run: {command}"
    trains = {"pretrain", "reproduce", "pipeline", "prepare", "tokenizer"} & set(argv[1:3])
    assert not trains or "--preset" in argv or "--from" in argv, (
        f"README: `{command}` trains without --preset (the default, cpu, takes minutes here); "
        "write the preset out so that this test can run it at the tiny scale")
    hub = [name for name in HUB_NAMES if any(name in arg for arg in argv)]
    if hub:
        code, err = run_cli(argv[1:])
        assert code != 0 and "hub" in err.lower(), f"{command}: expected a clear offline error\n{err}"
        if hub[0].endswith("TinyStories-33M"):  # then the same with a local model directory
            local = local_gpt_neo(Path("local-gpt-neo").resolve())
            argv = [str(local) if arg == hub[0] else arg for arg in argv]
        else:
            return
    code, err = run_cli(argv[1:])
    assert code == 0, f"{command} (run as {argv}) exited {code}\n{err[-3000:]}"


def test_every_readme_command_runs_at_the_tiny_scale(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TQDM_DISABLE", "1")
    plain_stories(tmp_path / "stories.txt")
    commands = shell_commands()
    assert any(c.startswith("wrapperlens reproduce") for c in commands)  # the main job
    for command in commands:
        run_command(command)
    for block in blocks("python"):
        code = block.replace('PRESET = "cpu"', 'PRESET = "tiny"')
        exec(compile(code, "README.md (python block)", "exec"), {"__name__": "readme"})


def test_the_moved_pages_hold_no_command_blocks():
    for page in MOVED_PAGES:
        assert not re.findall(r"```(?:bash|sh|shell|console)\n", page.read_text()), (
            f"{page.name}: a shell block outside the README is not run by this test; keep "
            "command blocks in the README")


def test_every_inline_readme_command_parses():
    from wrapperlens.cli import build_parser

    spans = re.findall(r"`(wrapperlens [^`]+)`", README.read_text())
    assert spans
    for page in MOVED_PAGES:
        spans += re.findall(r"`(wrapperlens [^`]+)`", page.read_text())
    for span in spans:
        argv = shlex.split(span)[1:]
        if any(a.isupper() for a in argv):  # a placeholder such as SUBCOMMAND
            continue
        try:
            build_parser().parse_known_args(tiny(argv))
        except SystemExit as e:
            pytest.fail(f"README: `{span}` does not parse (exit {e.code})")
