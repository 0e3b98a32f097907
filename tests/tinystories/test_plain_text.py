"""Plain TinyStories text (no instruction, no Feature labels) on real stories.

The tests read the excerpt shipped in `tests/data/tinystories` (its README gives the provenance
and the CDLA-Sharing-1.0 notice), so they run on a fresh clone:
`tinystories_v1_train_head330000B.txt`, the first 330,000 bytes of `TinyStories-train.txt`
(400 complete stories, then one cut off), and `tinystories_hf_train_first100_ge128tok.json`,
100 of the same stories as the hub's `datasets` rows serve them, 11 with mojibake. The expected
counts and stories are read from the raw files here, independently of the loader. The larger
sample the excerpt was cut from is optional (`tests/data/tinystories/check_excerpt.py` checks
the excerpt against it where it is present).
"""

import collections
import hashlib
import json
import re
from pathlib import Path

import pytest
import torch

from tinystories.data import StoryDataConfig, load_stories
from tinystories.instruct import EOT
from tinystories.mojibake import repair_mojibake
from tinystories.prepare import (
    PrepareConfig,
    UnlabelledDataError,
    load_prepared,
    prepare_stories,
    prepared_info,
    training_texts,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "tinystories"
TXT = DATA / "tinystories_v1_train_head330000B.txt"
HF_JSON = DATA / "tinystories_hf_train_first100_ge128tok.json"
DELETION_PROTOCOLS = ("filter", "F+R", "filter_mix_match", "reft")


def _raw_stories() -> list[str]:
    """The complete stories of the .txt: text between separators (not after the last one)."""
    pieces = TXT.read_text(encoding="utf-8").split(EOT)[:-1]
    return [p.strip() for p in pieces if p.strip()]


def _norm(text: str) -> str:
    return " ".join(text.split())


def test_the_excerpt_is_the_files_its_readme_names():
    """The licence notice travels with the data: the README names each file and its sha256."""
    readme = (DATA / "README.md").read_text(encoding="utf-8")
    assert "CDLA-Sharing-1.0" in readme and "roneneldan/TinyStories" in readme
    for path in (TXT, HF_JSON):
        assert f"`{path.name}`" in readme
        assert hashlib.sha256(path.read_bytes()).hexdigest() in readme, path.name


@pytest.fixture(scope="module")
def plain_txt(tmp_path_factory):
    out = tmp_path_factory.mktemp("plain")
    return out, prepare_stories(PrepareConfig(source=str(TXT), test_fraction=0.1), out)


def test_plain_text_prepares_every_complete_story_as_unlabelled_pretraining_data(plain_txt):
    out, summary = plain_txt
    stories = _raw_stories()
    assert len(stories) == 400  # the excerpt's README
    assert summary["data"] == {"format": "plain", "labelled": False, "feature": "Twist",
                               "protocols": ["all"], "n_stories": 400}
    assert summary["records"]["all.train"] + summary["records"]["all.test"] == 400
    assert 20 < summary["records"]["all.test"] < 65  # 10 % of 400, by a hash of each story
    # The story cut off after the last separator is reported and dropped, not trained on.
    assert summary["parse"]["reasons"] == {"unterminated record": 1}
    assert json.loads((out / "prepare.json").read_text())["data"]["labelled"] is False
    assert sorted(p.name for p in out.glob("*.parquet")) == ["all.test.parquet",
                                                            "all.train.parquet"]
    info = prepared_info(out)
    assert (info.text_format, info.labelled, info.protocols) == ("plain", False, ("all",))


def test_training_texts_of_plain_stories_are_the_stories(plain_txt):
    out, _ = plain_txt
    train, test = training_texts(out, "all", "train"), training_texts(out, "all", "test")
    assert collections.Counter(train + test) == collections.Counter(_raw_stories())
    assert train == list(load_prepared(out, "all", "train")["story"])
    assert training_texts(out, "all", "train", shuffle_fields=False) == train  # nothing to shuffle
    assert training_texts(out, "all", "test", limit=5) == test[:5]
    assert not any(t.startswith(("Story:", "Features:", "Summary:")) for t in train + test)


@pytest.mark.parametrize("protocol", DELETION_PROTOCOLS)
def test_deletion_protocols_are_refused_naming_the_directory_and_the_labels(plain_txt, protocol):
    out, _ = plain_txt
    for read in (lambda: load_prepared(out, protocol, "train"),
                 lambda: training_texts(out, protocol, "test")):
        with pytest.raises(UnlabelledDataError, match="needs Feature labels") as error:
            read()
        assert str(out) in str(error.value) and "'Twist'" in str(error.value)
    assert isinstance(error.value, ValueError)  # the CLI's error boundary prints ValueErrors


def test_a_labelled_prepare_after_a_plain_one_and_back_leaves_no_stale_protocol(tmp_path):
    out = tmp_path / "prepared"
    labelled = prepare_stories(PrepareConfig(n_stories=60, story_seed=1), out)
    assert labelled["data"]["labelled"] and len(list(out.glob("*.parquet"))) == 10
    assert len(training_texts(out, "F+R", "train")) == labelled["records"]["filter_randomise.train"]
    prepare_stories(PrepareConfig(source=str(TXT), max_stories=40), out)
    assert sorted(p.name for p in out.glob("*.parquet")) == ["all.test.parquet",
                                                            "all.train.parquet"]
    with pytest.raises(UnlabelledDataError):
        load_prepared(out, "filter", "test")


def test_datasets_form_repairs_its_mojibake_into_the_original_stories(tmp_path):
    rows = json.loads(HF_JSON.read_text(encoding="utf-8"))
    damaged = [r for r in rows if "\u00e2\u20ac" in r]  # "â€": UTF-8 punctuation read as cp1252
    assert (len(rows), len(damaged)) == (100, 11)  # the excerpt's README
    originals = {_norm(s) for s in _raw_stories()}
    summary = prepare_stories(PrepareConfig(source=str(HF_JSON)), tmp_path / "hf")
    assert summary["data"]["n_stories"] == 100 and summary["data"]["format"] == "plain"
    assert summary["parse"]["n_repaired"] == 11 and summary["parse"]["n_malformed"] == 0
    texts = training_texts(tmp_path / "hf", "all", "train") + training_texts(tmp_path / "hf",
                                                                             "all", "test")
    assert len(texts) == 100
    # Every repaired row is now its story as the .txt holds it (whitespace aside).
    assert all(_norm(t) in originals for t in texts)
    assert not any("\u00e2\u20ac" in t for t in texts)
    unrepaired, report = load_stories(
        StoryDataConfig(str(HF_JSON), fix_mojibake=False, cache_dir=str(tmp_path / "c"))
    )
    assert report.n_repaired == 0
    kept = prepare_stories(PrepareConfig(source=str(HF_JSON), fix_mojibake=False), tmp_path / "raw")
    assert kept["parse"]["n_repaired"] == 0  # --prepare.fix_mojibake=false
    assert sum(_norm(s) in originals for s in unrepaired["story"]) == 89  # the README's overlap


def test_repair_mojibake_decodes_cp1252_read_utf8_and_leaves_good_text_alone():
    damaged = ("\u00e2\u20ac\u0153Hi,\u00e2\u20ac said Sue. It\u00e2\u20ac\u2122s a "
               "caf\u00c3\u00a9 \u00e2\u20ac\u201c ok")  # as the hub rows hold it
    assert repair_mojibake(damaged) == "“Hi,” said Sue. It’s a café – ok"
    good = "“Hi,” said Zoë. It’s a café… naïve — señor «ok»"
    assert repair_mojibake(good) == good
    assert repair_mojibake(good.encode("utf-8").decode("cp1252", errors="ignore")) == good
    plain = "Once upon a time, there was a dog."
    assert repair_mojibake(plain) is plain


def test_the_real_stories_have_no_mojibake_to_repair():
    stories = _raw_stories()
    assert sum(bool(re.search("[“”’]", s)) for s in stories) == 56  # proper Unicode quotes
    assert all(repair_mojibake(s) == s for s in stories)


def test_plain_evaluator_logs_held_out_test_loss_and_no_twist_scores(tmp_path):
    from tinystories.evaluation import (
        EvalConfig,
        StoryEvaluator,
        ensure_story_classifier,
        fit_story_classifier,
    )
    from wrapperlens.models import ModelConfig, build_model
    from tinystories.prepare import build_run_tokenizer
    from tinystories.tokenizer import TokenizerConfig, load_tokenizer
    from tinystories.twist_classifier import TwistClassifierConfig

    prepared = tmp_path / "prepared"
    prepare_stories(PrepareConfig(source=str(TXT), max_stories=200, test_fraction=0.2), prepared)
    classifier, info = ensure_story_classifier(prepared)
    assert classifier is None and "no 'Twist' labels" in info["skipped"]
    assert not (prepared / "twist_classifier").exists()
    with pytest.raises(UnlabelledDataError, match=str(prepared)):
        fit_story_classifier(prepared, TwistClassifierConfig(), tmp_path / "clf")
    tokenizer = load_tokenizer(build_run_tokenizer(prepared, tmp_path / "tok",
                                                   TokenizerConfig(vocab_size=300)))
    n_ctx = 64
    model = build_model(ModelConfig(architecture="llama", n_layers=1, d_model=32, n_heads=2,
                                    n_ctx=n_ctx), d_vocab=len(tokenizer))
    cfg = EvalConfig(n_loss_stories=6, n_generations=3, max_new_tokens=4, generation_batch_size=3)
    evaluator = StoryEvaluator(prepared, tokenizer, n_ctx, cfg, classifier=None)
    losses = evaluator.losses(model)
    assert set(losses) == {"test_loss"}
    # By hand: <|endoftext|> story <|endoftext|> of the first 6 test stories, cut to n_ctx + 1
    # tokens, token-weighted mean next-token loss, one unpadded story at a time.
    total, count = 0.0, 0
    with torch.no_grad():
        for story in list(load_prepared(prepared, "all", "test")["story"])[:6]:
            ids = [tokenizer.bos_token_id, *tokenizer(story, add_special_tokens=False)["input_ids"],
                   tokenizer.eos_token_id][: n_ctx + 1]
            tokens = torch.tensor([ids])
            logits = model(tokens[:, :-1])[0]
            total += torch.nn.functional.cross_entropy(logits, tokens[0, 1:], reduction="sum")
            count += len(ids) - 1
    assert losses["test_loss"] == pytest.approx(float(total) / count, rel=1e-5)
    metrics, rows = evaluator.generate(model)
    assert set(metrics) == {"gen_tokens"} and len(rows) == 3
    assert all(r["prompt"] == "" and "oracle" not in r for r in rows)  # unconditional stories
    evaluate = evaluator.callback([0], tmp_path / "run")
    assert set(evaluate(model, 0)) == {"test_loss", "gen_tokens"}
    assert set(evaluate(model, 1)) == {"test_loss"}  # generations only at the generation steps
    assert (tmp_path / "run" / "generations" / "step_000000.jsonl").is_file()


@pytest.mark.slow
def test_plain_text_runs_prepare_tokenizer_pretrain_generate_compare_through_the_cli(tmp_path):
    """The issue's path on real text, as a user types it (tiny scale, the excerpt's 400 stories)."""
    from wrapperlens.cli import main as wrapperlens_main

    def main(argv):
        return wrapperlens_main(["tinystories", *argv])
    from wrapperlens.runs import RunDir

    tiny = ["--preset", "tiny"]
    assert main(["prepare", *tiny, "--out", str(tmp_path / "prep"), f"--prepare.source={TXT}"]) == 0
    assert prepared_info(tmp_path / "prep").labelled is False
    assert main(["tokenizer", *tiny, "--data", str(tmp_path / "prep"),
                 "--out", str(tmp_path / "tok")]) == 0
    for name, seed in (("pt", 0), ("pt2", 1)):
        assert main(["pretrain", *tiny, "--data", str(tmp_path / "prep"), "--tokenizer",
                     str(tmp_path / "tok"), "--out", str(tmp_path / name), "--train.steps=12",
                     f"--train.seed={seed}", "--no-progress"]) == 0
    records = RunDir(tmp_path / "pt").metrics()
    assert records[-1]["step"] == 12 and records[-1]["test_loss"] < records[0]["test_loss"]
    assert "twist_loss" not in records[-1]
    assert main(["generate", "--from", str(tmp_path / "pt"), "--out", str(tmp_path / "gen"),
                 "--eval.n_generations=2", "--eval.max_new_tokens=8"]) == 0
    rows = [json.loads(x) for x in (tmp_path / "gen" / "generations.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    assert main(["compare", "--from", f"a={tmp_path / 'pt'}", f"b={tmp_path / 'pt2'}",
                 "--out", str(tmp_path / "cmp")]) == 0
    report = json.loads((tmp_path / "cmp" / "report.json").read_text())
    assert set(report["cosine"]) == {"b"} and all(v < 1.0 for v in report["cosine"]["b"])
