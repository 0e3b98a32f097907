"""Fuzzed readers: every corrupted input is read correctly or refused naming the file.

One tiny PCFG run is trained per module; each example copies the file it corrupts into a fresh
directory. The outcome classes and the strategies are in `tests/fuzzing.py`; the counts per
reader are printed at the end of the module (`pytest -s`) and written to
`$WRAPPERLENS_FUZZ_COUNTS` when set.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import types
import typing
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from tests.fuzzing import (Tally, bit_flips, classify, dumps, fuzz_settings,
                           json_corruptions, text_corruptions, tree_bytes, truncations)
from tests.helpers import tiny_pcfg_spec
from wrapperlens.checkpoints import hooked_config_to_dict
from wrapperlens.config import load_config_file
from wrapperlens.experiments.pcfg.stages import resolve_configs, saved_run
from wrapperlens.runs import RunDir, read_metrics
from wrapperlens.stages import run_stage
from wrapperlens.sweeps import InlineExecutor, Job, recorded_outcomes, run_sweep
from wrapperlens.training import train

TALLY = Tally()
MODEL_SIZES = ("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "n_ctx", "d_vocab",
               "d_vocab_out", "multiple_of", "text_length", "count_window")


@pytest.fixture(scope="module", autouse=True)
def _summary():
    yield
    TALLY.write(__name__)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """One finished tiny run (6 steps), shared by every example (which copies its files)."""
    path = tmp_path_factory.mktemp("fuzz") / "run"
    run_stage(tiny_pcfg_spec(), path, progress=False)
    return path



def _with_file(run_dir: Path, name: str, data: bytes, needs: tuple[str, ...] | None = None) -> Path:
    """A copy of `run_dir` (of its files `needs` only, when given) whose `name` holds `data`."""
    target = Path(tempfile.mkdtemp(prefix="fz_")) / "run"
    if needs is None:
        shutil.copytree(run_dir, target)
    else:
        target.mkdir()
        for other in needs:
            shutil.copyfile(run_dir / other, target / other)
    (target / name).write_bytes(data)
    return target


def _json_inputs(path: Path, size_keys=(), skip=lambda p: False, int_only=lambda p: True):
    data = path.read_bytes()
    obj = json.loads(data)
    return st.one_of(text_corruptions(data),
                     json_corruptions(obj, size_keys=size_keys, skip=skip,
                                      int_only=int_only).map(
                         lambda d: (d[0], dumps(d[1]))))


# ------------------------------------------------------------------------------ config.json
@given(data=st.data())
@fuzz_settings(1100)
def test_config_json_is_read_or_refused_by_name(run_dir, data):
    expected = saved_run(run_dir).to_json()
    what, blob = data.draw(_json_inputs(run_dir / "config.json", MODEL_SIZES))
    target = _with_file(run_dir, "config.json", blob, needs=())
    outcome, detail = classify(lambda: saved_run(target).to_json(), expected, ["config.json"])
    TALLY.check("config.json (saved_run)", outcome, detail, what)
    shutil.rmtree(target.parent)


@pytest.mark.parametrize("section", ["task", "model", "train"])
def test_a_saved_config_without_a_section_is_refused_by_name(run_dir, section):
    config = json.loads((run_dir / "config.json").read_text())
    del config[section]
    target = _with_file(run_dir, "config.json", dumps(config))
    with pytest.raises(ValueError, match=rf"config\.json.*{section}"):
        saved_run(target)


# ------------------------------------------------------------------------- model directories
def _model_result(model):
    return hooked_config_to_dict(model.cfg), {k: v.clone() for k, v in model.state_dict().items()}


def _same_model(a, b) -> bool:
    return a[0] == b[0] and a[1].keys() == b[1].keys() and all(
        a[1][k].dtype == b[1][k].dtype and torch.equal(a[1][k], b[1][k]) for k in a[1])


@given(data=st.data())
@fuzz_settings(1100)
def test_model_json_is_read_or_refused_by_name(run_dir, data):
    expected = _model_result(RunDir(run_dir).load_model())
    what, blob = data.draw(_json_inputs(run_dir / "model.json", MODEL_SIZES,
                                        int_only=lambda p: p[0] in TL_INT_FIELDS))
    target = _with_file(run_dir, "model.json", blob, needs=("model.json", "model.safetensors", "provenance.json"))
    outcome, detail = classify(lambda: _model_result(RunDir(target).load_model()), expected,
                               ["model.json"], equal=_same_model)
    TALLY.check("model.json (load_model)", outcome, detail, what)
    shutil.rmtree(target.parent)


def _int_fields() -> frozenset[str]:
    from transformer_lens import HookedTransformerConfig

    hints = typing.get_type_hints(HookedTransformerConfig)
    return frozenset(k for k, t in hints.items() if t is int or t == typing.Optional[int])


TL_INT_FIELDS = _int_fields()
DTYPES = [torch.float16, torch.bfloat16, torch.float64, torch.int32, torch.int64, torch.uint8]


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), framework="pt") as f:
        return load_file(str(path)), dict(f.metadata() or {})


def _tensor_edits(path: Path, metadata_edits: list[tuple[str, dict]] = ()):
    """Structural edits of a safetensors file: a tensor cast to another dtype, reshaped,
    dropped, duplicated under another name, or with a NaN / inf / huge element; and
    `metadata_edits` (description, new metadata)."""
    tensors, meta = _read_safetensors(path)
    names = sorted(tensors)
    floats = [n for n in names if tensors[n].is_floating_point() and tensors[n].numel()]

    def save(new_tensors, new_meta=meta) -> bytes:
        with tempfile.TemporaryDirectory() as tmp:
            save_file(new_tensors, f"{tmp}/x", metadata=new_meta)
            return Path(f"{tmp}/x").read_bytes()

    def cast(nd):
        n, d = nd
        return f"{n} cast to {d}", save({**tensors, n: tensors[n].to(d)})

    def reshape(nk):
        n, kind = nk
        t = tensors[n]
        new = {"flat": t.flatten(), "unsqueeze": t.unsqueeze(0),
               "short": t.flatten()[:-1] if t.numel() > 1 else t.flatten().repeat(2)}[kind]
        return f"{n} {kind}", save({**tensors, n: new.clone()})

    def drop(n):
        return f"dropped {n}", save({k: v for k, v in tensors.items() if k != n})

    def extra(n):
        return f"extra copy of {n}", save({**tensors, n + ".extra": tensors[n].clone()})

    def poison(ni):
        n, (i, value) = ni
        t = tensors[n].clone()
        t.view(-1)[i % t.numel()] = value
        return f"{n}[{i}] = {value}", save({**tensors, n: t})

    strategies = [
        st.tuples(st.sampled_from(names), st.sampled_from(DTYPES))
        .filter(lambda nd: tensors[nd[0]].dtype != nd[1]).map(cast),
        st.tuples(st.sampled_from(names), st.sampled_from(["flat", "unsqueeze", "short"]))
        .filter(lambda nk: nk[1] != "flat" or tensors[nk[0]].ndim != 1).map(reshape),
        st.sampled_from(names).map(drop),
        st.sampled_from(names).map(extra),
        st.tuples(st.sampled_from(floats), st.tuples(
            st.integers(0, 10**6), st.sampled_from([math.nan, math.inf, -math.inf, 1e30])))
        .map(poison),
    ]
    if metadata_edits:
        strategies.append(st.sampled_from(list(metadata_edits)).map(
            lambda dm: (dm[0], save(tensors, dm[1]))))
    return st.one_of(strategies)


@given(data=st.data())
@fuzz_settings(1100)
def test_model_safetensors_is_read_or_refused_by_name(run_dir, data):
    path = run_dir / "model.safetensors"
    blob = path.read_bytes()
    expected = _model_result(RunDir(run_dir).load_model())
    what, new = data.draw(st.one_of(bit_flips(blob), truncations(blob), _tensor_edits(path)))
    target = _with_file(run_dir, "model.safetensors", new, needs=("model.json", "model.safetensors", "provenance.json"))
    outcome, detail = classify(lambda: _model_result(RunDir(target).load_model()), expected,
                               ["model.safetensors"], equal=_same_model)
    TALLY.check("model.safetensors (load_model)", outcome, detail, what)
    shutil.rmtree(target.parent)


# ------------------------------------------------------------------------- resume from state
BAD_STEPS = ["-1", "7", "1e3", " 6", "6 ", "abc", "", "\u0666", "6.0", "true", "0x6", "+6",
             "99999999999999999999"]


def _state_metadata_edits(path: Path) -> list[tuple[str, dict]]:
    from wrapperlens.runs import state_hash

    tensors, meta = _read_safetensors(path)
    plain = {k: v for k, v in meta.items() if k != "sha256"}
    edits = []
    for rehash in (False, True):
        def m(new):
            return {**new, "sha256": state_hash(tensors, new)} if rehash else {**new, "sha256": meta["sha256"]}
        tag = " (rehashed)" if rehash else ""
        for step in BAD_STEPS + ([] if rehash else ["3", "0"]):
            edits.append((f"step {step!r}{tag}", m({**plain, "step": step})))
        for steps in ["", "[]", "null", "{", '{"blocks.0.attn.W_Q": "x"}',
                      '{"blocks.0.attn.W_Q": NaN}', '{"nope": 1.0}', "1e999"]:
            edits.append((f"optimizer_steps {steps!r}{tag}", m({**plain, "optimizer_steps": steps})))
        for key in plain:
            edits.append((f"no {key}{tag}", m({k: v for k, v in plain.items() if k != key})))
        edits.append((f"extra key{tag}", m({**plain, "extra": "1"})))
    return edits


def _resume_result(run: Path):
    spec = tiny_pcfg_spec()
    model = spec.build_model()
    train(model, spec.train, spec.batch, run, evaluate=None, resume=True, progress=False)
    return ({k: v.clone() for k, v in model.state_dict().items()},
            (run / "metrics.jsonl").read_bytes())


def _same_resume(a, b) -> bool:
    return a[1] == b[1] and a[0].keys() == b[0].keys() and all(
        torch.equal(a[0][k], b[0][k]) for k in a[0])


@pytest.fixture(scope="module")
def resumed(run_dir):
    """What resuming the uncorrupted run gives (its step is train.steps: nothing to train)."""
    target = _with_file(run_dir, "config.json", (run_dir / "config.json").read_bytes())
    return _resume_result(target)


@given(data=st.data())
@fuzz_settings(1100)
def test_resume_from_a_corrupted_trainer_state_is_refused_leaving_every_file(
        run_dir, resumed, data):
    path = run_dir / "trainer_state.safetensors"
    blob = path.read_bytes()
    what, new = data.draw(st.one_of(
        bit_flips(blob), truncations(blob),
        _tensor_edits(path, _state_metadata_edits(path))))
    target = _with_file(run_dir, "trainer_state.safetensors", new)
    before = tree_bytes(target)
    outcome, detail = classify(lambda: _resume_result(target), resumed,
                               ["trainer_state.safetensors"], equal=_same_resume)
    if outcome == "refused_named" and tree_bytes(target) != before:
        outcome, detail = "emptied", f"changed {sorted(k for k, v in tree_bytes(target).items() if before.get(k) != v)}"
    TALLY.check("trainer_state.safetensors (resume)", outcome, detail, what)
    shutil.rmtree(target.parent)


# ------------------------------------------------------------------------------ metrics.jsonl
def _metric_inputs(data: bytes):
    lines = data.decode().split("\n")[:-1]
    records = [json.loads(line) for line in lines]

    def with_record(i, record):
        new = list(lines)
        new[i] = json.dumps(record) if not isinstance(record, str) else record
        return ("\n".join(new) + "\n").encode()

    def bad_value(iv):
        (i, key), value = iv
        return f"line {i} {key} = {value!r}", with_record(i, {**records[i], key: value})

    keys = [(i, k) for i, r in enumerate(records) for k in r]
    wrong = [True, False, None, "0.5", [], {}, [1.0]]
    steps = [(i, "step") for i in range(len(records))]
    return st.one_of(
        text_corruptions(data),
        st.tuples(st.sampled_from(keys), st.sampled_from(wrong)).map(bad_value),
        st.tuples(st.sampled_from(steps), st.sampled_from(
            [math.nan, math.inf, -1, 2.5, "3", 10**30 * -1])).map(bad_value),
        st.tuples(st.integers(0, len(records) - 1), st.sampled_from(
            ["[]", "null", "3", '"x"', "{}", '{"loss": 1.0}', "  ", "\t"]))
        .map(lambda ir: (f"line {ir[0]} = {ir[1]!r}", with_record(*ir))),
        st.tuples(st.integers(0, len(records) - 1), st.integers(0, len(records) - 1))
        .filter(lambda ij: ij[0] != ij[1])
        .map(lambda ij: (f"line {ij[0]} duplicated at {ij[1]}", with_record(ij[1], lines[ij[0]]))),
    )


def _expected_metrics(original: list[dict], data: bytes, blob: bytes, what: str) -> list[dict]:
    """The records a correct reader returns: all of them, or for a truncation the lines that
    survive whole (a torn last line is a run killed mid-write)."""
    if not what.startswith("truncated"):
        return original
    text = blob.decode()
    complete = text.split("\n")
    last = complete.pop()
    n = len(complete)
    whole = data.decode().split("\n")
    return original[:n] + ([original[n]] if last and last == whole[n] else [])


@given(data=st.data())
@fuzz_settings(1100)
def test_metrics_jsonl_is_read_or_refused_by_name(run_dir, data):
    raw = (run_dir / "metrics.jsonl").read_bytes()
    original = read_metrics(run_dir)
    what, blob = data.draw(_metric_inputs(raw))
    target = _with_file(run_dir, "metrics.jsonl", blob, needs=())
    expected = _expected_metrics(original, raw, blob, what)
    outcome, detail = classify(lambda: RunDir(target).metrics(), expected, ["metrics.jsonl"],
                               equal=lambda a, b: json.dumps(a) == json.dumps(b))
    TALLY.check("metrics.jsonl (read_metrics)", outcome, detail, what)
    shutil.rmtree(target.parent)


# ---------------------------------------------------------------------------- provenance.json
@given(data=st.data())
@fuzz_settings(1100)
def test_provenance_json_is_read_or_refused_by_name(run_dir, data):
    expected = RunDir(run_dir).provenance()
    what, blob = data.draw(_json_inputs(run_dir / "provenance.json"))
    target = _with_file(run_dir, "provenance.json", blob, needs=())
    outcome, detail = classify(lambda: RunDir(target).provenance(), expected, ["provenance.json"])
    TALLY.check("provenance.json (provenance)", outcome, detail, what)
    shutil.rmtree(target.parent)


def test_a_weights_file_that_does_not_match_its_recorded_sha256_is_refused_by_name(run_dir):
    target = _with_file(run_dir, "config.json", (run_dir / "config.json").read_bytes())
    tensors, meta = _read_safetensors(target / "model.safetensors")
    tensors["embed.W_E"][0, 0] += 1.0
    save_file(tensors, str(target / "model.safetensors"), metadata=meta)
    with pytest.raises(ValueError, match=r"model\.safetensors.*sha256.*provenance\.json"):
        RunDir(target).load_model()


# ----------------------------------------------------------------- overrides and --config files
def _equivalent(raw, value, annotation) -> bool:
    """Whether `value` (a field after an override) is what `raw` says, for its annotation."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return (raw is None and value is None) or any(
            _equivalent(raw, value, a) for a in args if a is not type(None))
    if origin is tuple:
        items = raw if isinstance(raw, list) else [p.strip() for p in str(raw).split(",") if p.strip()]
        return isinstance(value, tuple) and len(items) == len(value) and all(
            _equivalent(r, v, args[0] if args else str) for r, v in zip(items, value))
    if annotation is bool:
        truthy = raw is True or (isinstance(raw, str) and raw.lower() in ("true", "1", "yes"))
        falsy = raw is False or (isinstance(raw, str) and raw.lower() in ("false", "0", "no"))
        return isinstance(value, bool) and ((value and truthy) or (not value and falsy))
    if annotation in (int, float):
        if isinstance(raw, bool) or isinstance(value, bool):
            return False
        try:
            if annotation is int and int(raw) == value:
                return isinstance(value, int)
        except (TypeError, ValueError):
            pass
        try:
            number = float(raw)
        except (TypeError, ValueError):
            return False
        kind_ok = isinstance(value, int) if annotation is int else isinstance(value, float)
        return kind_ok and math.isfinite(number) and number == value
    if annotation is str:
        return raw == value
    return raw == value


def _field(run, dotted: str):
    import dataclasses

    section, key = dotted.split(".", 1)
    cfg = run.sections[section]
    hints = typing.get_type_hints(type(cfg))
    return getattr(cfg, key), hints[key], {f.name for f in dataclasses.fields(cfg)}


TINY = resolve_configs("pretrain", "tiny")
KNOWN_KEYS = sorted(f"{s}.{f}" for s, cfg in TINY.sections.items()
                    for f in cfg.__dataclass_fields__)
RAW_VALUES = st.one_of(
    st.sampled_from(["", "0", "1", "-1", "2", "3", "4", "7", "1.5", "1e-3", "1e15", "1e400",
                     "nan", "inf", "-inf", "true", "false", "yes", "None", "null", "0x10",
                     " 4", "C,CC", "C,,I", "mingpt", "llama", "rotary", "LN", "10" * 12,
                     "\u0663", "\udcff"]),
    st.text(max_size=12))


@given(key=st.one_of(st.sampled_from(KNOWN_KEYS), st.sampled_from(
    ["train", "train.", ".lr", "nosuch.x", "train.nosuch", "model._x", "train.lr.x"])),
    raw=RAW_VALUES)
@fuzz_settings(1100)
def test_overrides_are_applied_as_written_or_refused_naming_the_key(key, raw):
    def read():
        run = resolve_configs("pretrain", "tiny", overrides={key: raw})
        return _field(run, key)

    outcome, detail = classify(read, None, [key], equal=lambda got, _: _equivalent(
        raw, got[0], got[1]))
    TALLY.check("--section.key=value (overrides)", outcome, detail, f"--{key}={raw!r}")


CONFIG_FILE = {"train": {"lr": 0.01, "steps": 5, "schedule": "constant"},
               "model": {"d_model": 32, "n_heads": 4}, "task": {"families": ["C", "I"]}}


@given(data=st.data(), suffix=st.sampled_from([".json", ".toml"]))
@fuzz_settings(1100)
def test_config_files_are_applied_as_written_or_refused_naming_the_file(data, suffix, tmp_path):
    if suffix == ".json":
        original = dumps(CONFIG_FILE)
        what, blob = data.draw(st.one_of(text_corruptions(original), json_corruptions(
            CONFIG_FILE, size_keys=MODEL_SIZES).map(lambda d: (d[0], dumps(d[1])))))
    else:
        original = ("[train]\nlr = 0.01\nsteps = 5\nschedule = \"constant\"\n[model]\n"
                    "d_model = 32\nn_heads = 4\n[task]\nfamilies = [\"C\", \"I\"]\n").encode()
        what, blob = data.draw(text_corruptions(original))
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(blob)

    def read():
        flat = load_config_file(path)
        run = resolve_configs("pretrain", "tiny", overrides=flat)
        return {k: _field(run, k) for k in flat}, flat

    def same(got, _):
        fields, flat = got
        return all(_equivalent(flat[k], *fields[k][:2]) for k in flat)

    try:  # a value error names the key of the file (the CLI merges files and flags)
        parsed = load_config_file(path)
    except ValueError:
        parsed = {}
    names = [path.name] + list(parsed)
    outcome, detail = classify(read, None, names, equal=same)
    # A truncated TOML file can be a valid, shorter one: then every key it holds must apply.
    TALLY.check("--config FILE (load_config_file)", outcome, detail, what)


# --------------------------------------------------------------------------- sweep outcomes
@pytest.fixture(scope="module")
def jobs_dir(tmp_path_factory) -> tuple[Path, Job]:
    root = tmp_path_factory.mktemp("sweep")
    job = Job("a/b=1", "json:dumps", {"obj": [1, 2]})
    run_sweep([job], root / "jobs", InlineExecutor())
    return root / "jobs", job


@given(data=st.data())
@fuzz_settings(1100)
def test_sweep_outcome_files_are_read_or_refused_by_name(jobs_dir, data):
    from wrapperlens.sweeps import _recorded

    directory, job = jobs_dir
    path = directory / "a" / "b=1.json"
    expected = (recorded_outcomes([job], directory), _recorded(directory, job))
    # "value" is the job's own return value: any JSON is valid there.
    what, blob = data.draw(_json_inputs(path, skip=lambda p: p[0] == "value"))
    target = Path(tempfile.mkdtemp(prefix="fz_")) / "jobs"
    shutil.copytree(directory, target)
    (target / "a" / "b=1.json").write_bytes(blob)

    def read():
        return recorded_outcomes([job], target), _recorded(target, job)

    def same(got, want):
        # A changed target or args is another job: it is not reused (None), which is right.
        other_job = what.startswith(("('target'", "('args'", "removed ('args'", "added ('args'"))
        return got[0] == want[0] and (got[1] == want[1] or (other_job and got[1] is None))

    outcome, detail = classify(read, expected, ["b=1.json"], equal=same)
    TALLY.check("jobs/<key>.json (sweep outcomes)", outcome, detail, what)
    shutil.rmtree(target.parent)
