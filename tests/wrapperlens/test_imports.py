"""Importing the project leaves other libraries' log levels as they were.

Each check runs in a fresh interpreter (`sys.executable -c ...`): what matters is the first
import of TransformerLens in a process, which raises the `transformers` log level to ERROR unless
the project's import guard (wrapperlens/log_levels.py) puts it back.
"""

import json
import subprocess
import sys
import textwrap

import pytest

_SNAPSHOT = """
import json, logging, sys

def levels():
    loggers = list(logging.root.manager.loggerDict.items())
    out = {name: lg.level for name, lg in loggers if isinstance(lg, logging.Logger)}
    out["<root>"] = logging.root.level
    return out
"""


def _run(code: str) -> dict:
    """Run `code` in a fresh interpreter; it prints one JSON object as its last line."""
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_SNAPSHOT) + textwrap.dedent(code)],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return {"result": json.loads(out.stdout.strip().splitlines()[-1]), "stderr": out.stderr}


@pytest.mark.parametrize("verbosity", ["INFO", "WARNING"])
def test_importing_the_project_keeps_every_existing_log_level(verbosity):
    result = _run(f"""
        # torch and datasets (re)configure their own loggers on first import; the question is
        # what importing the project does to loggers of libraries already loaded.
        import datasets, torch, transformers
        transformers.logging.set_verbosity(logging.{verbosity})
        logging.root.setLevel(logging.INFO)
        logging.getLogger("datasets").setLevel(logging.CRITICAL)
        logging.getLogger("torch").setLevel(logging.DEBUG)
        logging.getLogger("my_app.worker").setLevel(logging.WARNING)
        before = levels()
        verbosity = transformers.logging.get_verbosity()
        import wrapperlens, tinystories, wrapperlens.models, tinystories.gpt_neo
        after = levels()
        print(json.dumps({{
            "imported": "transformer_lens.model_bridge.sources.transformers" in sys.modules,
            "changed": {{k: [v, after[k]] for k, v in before.items() if after[k] != v}},
            "verbosity": [verbosity, transformers.logging.get_verbosity()],
        }}))
    """)["result"]
    # The import that sets `transformers` to ERROR really ran, so the check can fail.
    assert result["imported"]
    assert result["changed"] == {}
    level = {"INFO": 20, "WARNING": 30}[verbosity]
    assert result["verbosity"] == [level, level]


def test_transformers_keeps_its_default_level_when_the_project_imports_it_first():
    # Nothing imported before the project: `transformers` must end at its own default (WARNING),
    # not at the ERROR TransformerLens sets.
    result = _run("""
        import tinystories.gpt_neo
        import transformers
        print(json.dumps(transformers.logging.get_verbosity()))
    """)["result"]
    assert result == 30


def test_missing_weight_report_of_transformers_shows_after_importing_the_project(tmp_path):
    run = _run(f"""
        import tinystories.gpt_neo  # imports TransformerLens
        import torch
        from safetensors.torch import load_file, save_file
        from transformers import GPTNeoConfig, GPTNeoForCausalLM
        config = GPTNeoConfig(vocab_size=50, max_position_embeddings=16, hidden_size=16,
                              num_layers=2, attention_types=[[["global", "local"], 1]],
                              num_heads=2, window_size=4)
        GPTNeoForCausalLM(config).save_pretrained({str(tmp_path)!r})
        path = {str(tmp_path / "model.safetensors")!r}
        tensors = load_file(path)
        del tensors["transformer.h.1.mlp.c_fc.weight"]
        save_file(tensors, path, metadata={{"format": "pt"}})
        _, info = GPTNeoForCausalLM.from_pretrained({str(tmp_path)!r}, output_loading_info=True)
        print(json.dumps(sorted(info["missing_keys"])))
    """)
    assert run["result"] == ["transformer.h.1.mlp.c_fc.weight"]
    # transformers' own report, on stderr as a user would see it.
    assert "transformer.h.1.mlp.c_fc.weight" in run["stderr"] and "MISSING" in run["stderr"]


def test_tasks_does_not_import_transformer_lens():
    result = _run("""
        import tasks, tasks.grammar, tasks.data
        print(json.dumps("transformer_lens" in sys.modules))
    """)["result"]
    assert result is False
