"""Bad configs and bad inputs give one-line errors that name the key, file or line."""

from __future__ import annotations

import gzip
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lmforge.config import config_to_toml, load_config
from lmforge.data.report import Report
from lmforge.data.shards import open_split, prepare_corpus, read_meta
from lmforge.data.sources import read_documents
from lmforge.errors import LmforgeError

ROOT = Path(__file__).resolve().parents[1]


def _recipe(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.toml"
    path.write_text(text)
    return path


def test_overrides_are_typed(tmp_path: Path) -> None:
    cfg = load_config(
        None, ["--train.lr=3e-4", "--model.bias=false", "--train.max_steps=700", "--data.input=x"]
    )
    assert (cfg.train.lr, cfg.model.bias, cfg.train.max_steps, cfg.data.input) == (3e-4, False, 700, "x")


def test_overrides_in_one_string_are_split_as_a_shell_would() -> None:
    """From Python, lmforge.train(recipe, "--train.lr=3e-4 ...") once failed on "-", its first letter."""
    cfg = load_config(None, "--train.lr=3e-4 --data.input='a path with spaces'")
    assert (cfg.train.lr, cfg.data.input) == (3e-4, "a path with spaces")


def test_overrides_as_a_dict_and_anything_else_is_one_line() -> None:
    """lmforge.train(recipe, {"data.input": ...}) once failed with a bare KeyError: 0."""
    cfg = load_config(None, {"train.lr": 3e-4, "model.bias": False, "--data.input": "a b"})
    assert (cfg.train.lr, cfg.model.bias, cfg.data.input) == (3e-4, False, "a b")
    with pytest.raises(LmforgeError, match="^overrides must be a list of .* or a dict, not int$"):
        load_config(None, 3)  # type: ignore[arg-type]
    with pytest.raises(LmforgeError, match="^overrides must be a list of .* not list$"):
        load_config(None, [("train.lr", 1)])  # type: ignore[list-item]


def test_resolved_config_round_trips(tmp_path: Path) -> None:
    cfg = load_config(None, ['--data.input=a "quoted" path', "--model.pos=rope", "--train.lr=0.001"])
    assert load_config(_recipe(tmp_path, config_to_toml(cfg))) == cfg
    # the keys chosen, even at their default (train.lr), and only those: a recipe of the command
    chosen = load_config(_recipe(tmp_path, config_to_toml(cfg, chosen_only=True)))
    assert chosen == cfg and set(chosen.given) == {"data.input", "model.pos", "train.lr"}


@pytest.mark.parametrize(
    ("recipe", "overrides", "message"),
    [
        (
            "[train]\nmax_step = 5\n",
            [],
            r"r.toml: unknown config key 'train.max_step' \(did you mean 'train.max_steps'\?\)$",
        ),
        (
            "[trian]\nmax_steps = 5\n",
            [],
            r"unknown config key 'trian.max_steps' \(did you mean \[train\]\? sections: data,",
        ),
        (
            "[train]\nzzz = 5\n",
            [],
            r"unknown config key 'train.zzz' \(known in \[train\]: max_steps, batch_size, ",
        ),
        ("[train]\nmax_steps = 'many'\n", [], r"r.toml: train.max_steps='many' must be an integer, not str"),
        ("", ["--train.lr=fast"], r"command line: train.lr='fast' is not a number"),
        ("", ["--model.n_head=5"], r"n_embd=128 is not divisible by model.n_head=5$"),
        # a rule across keys says which the recipe set (it named no file)
        (
            "[model]\nn_embd = 30\nn_head = 4\n",
            [],
            r"n_embd=30 is not divisible by model.n_head=4 \(model.n_embd and model.n_head from .*r.toml\)$",
        ),
        (
            "[model]\nn_embd = 30\n",
            ["--model.n_head=4"],
            r"by model.n_head=4 \(model.n_embd from .*r.toml\)$",
        ),
        # a key the message names without its value: nothing attributed (epochs came from the command line)
        (
            "[train]\nmax_minutes = 5\n",
            ["--train.epochs=-1"],
            r"^train.max_minutes and train.epochs must be >= 0$",
        ),
        ("", ["--train.min_lr=0.1"], r"train.min_lr=0.1 is above train.lr=0.001, where the cosine would end"),
        ("", ["--train.min_lr=-1"], r"train.min_lr=-1 must be >= 0"),
        ("", ["--train.max_steps=0"], r"train.max_steps=0 must be > 0"),
        ("", ["--train.checkpoint_interval=0"], r"train.checkpoint_interval=0 must be > 0"),
        ("", ["--model.n_embd=100", "--model.n_head=4", "--model.pos=rope"], r"even head size, not .* = 25"),
        ("", ["--train.micro_batch_size=5"], r"batch_size=12 is not divisible by train.micro_batch_size=5"),
        ("[train\n", [], r"r.toml: invalid TOML"),
        ("", ["train.lr"], r"must look like --section.key=value"),
        (
            "",
            ["--train.lr"],
            r"^override --train\.lr has no value: give --train\.lr=VALUE \(or --train\.lr VALUE\)$",
        ),
        ("[train]\ncompile = true\n", [], r"r.toml: train.compile=True must be a string, not bool"),
        ("", ["--train.compile=yes"], r"train.compile='yes' must be auto, on or off"),
        ("", ["--train.compile=on", "--engine.name=deepspeed"], r"train.compile='on' runs on engine.name="),
        (
            "",
            ["--train.compile=on", "--privacy.enabled=true", "--privacy.noise_multiplier=1"],
            r"train.compile='on' does not combine with privacy.enabled",
        ),
    ],
)
def test_bad_config(tmp_path: Path, recipe: str, overrides: list[str], message: str) -> None:
    with pytest.raises(LmforgeError, match=message) as info:
        load_config(_recipe(tmp_path, recipe), overrides)
    assert "\n" not in str(info.value)


def test_a_yaml_or_json_recipe_is_named_as_such_and_deepspeed_keys_do_nothing_elsewhere(
    tmp_path: Path,
) -> None:
    """A .yaml recipe said `invalid TOML: Expected '='`; engine.offload=all on the local engine was
    refused for its ZeRO stage, though DeepSpeed's keys do nothing on the other engines."""
    for name, text in (("r.yaml", "train:\n  max_steps: 5\n"), ("r.json", '{"train": {"max_steps": 5}}')):
        (tmp_path / name).write_text(text)
        with pytest.raises(
            LmforgeError, match=rf"{name}: a recipe is TOML \(\[sections\] of key = value\), not "
        ):
            load_config(tmp_path / name, [])
    assert load_config(None, ["--engine.offload=all"]).engine.offload == "all"
    with pytest.raises(LmforgeError, match="needs engine.zero_stage=3"):
        load_config(None, ["--engine.offload=all", "--engine.name=deepspeed", "--engine.zero_stage=2"])


def test_a_fine_tuning_lr_below_the_default_min_lr_needs_min_lr_only_for_the_cosine() -> None:
    # min_lr is where the cosine ends: linear ends at 0 and constant stays at lr, so neither asks for it
    for schedule in ("linear", "constant"):
        assert load_config(None, ["--train.lr=2e-5", f"--train.schedule={schedule}"]).train.lr == 2e-5
    assert load_config(None, ["--train.lr=2e-5", "--train.min_lr=2e-6"]).train.min_lr == 2e-6


def test_cli_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, "[model]\nwidth = 3\n")
    proc = subprocess.run(
        [sys.executable, "-m", "lmforge", "train", str(recipe)], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "unknown config key 'model.width'" in proc.stderr


def test_non_utf8_file_is_repaired_and_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"hello \xff\xfe world")
    report = Report()
    assert [d.text for d in read_documents(bad, report=report)] == ["hello \ufffd\ufffd world"]
    convert = f"if it is Latin-1 or Windows-1252: iconv -f WINDOWS-1252 -t UTF-8 {bad}"
    assert report.problems == [
        f"{bad}:1: invalid UTF-8 (first at byte 6; 1 line(s) repaired with U+FFFD; {convert})"
    ]
    assert report.skipped() == [f"repaired {report.problems[0]}"]  # kept, not skipped, as warned
    report.problem(f"{bad}:2", "not valid JSON")
    assert report.skipped()[1] == f"skipped {bad}:2: not valid JSON"


def test_bad_jsonl_line_is_skipped_and_named(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write('{"text": "fine"}\n{"txt": "no field"}\n')
    report = Report()
    assert [d.text for d in read_documents(path, report=report)] == ["fine"]
    assert report.problems == [f"{path}:2: no string field ('text'; the line has 'txt')"]


def test_empty_corpus_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(LmforgeError, match="empty"):
        prepare_corpus(tmp_path / "empty.txt", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_input_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(LmforgeError, match="no such file"):
        list(read_documents(tmp_path / "nope.txt"))


def test_corrupt_shard_is_named(tmp_path: Path, corpus: Path) -> None:
    out = tmp_path / "shards"
    prepare_corpus(corpus, out)
    with open(out / "val_00000.bin", "ab") as f:
        f.write(b"\x01")  # an odd byte: no longer whole uint16 tokens
    with pytest.raises(LmforgeError, match=r"val_00000.bin: corrupt shard"):
        open_split(out, "val")
    np.array([1, 2], dtype="<u2").tofile(out / "val_00000.bin")
    with pytest.raises(LmforgeError, match=r"val shards hold 2 tokens, meta.json says"):
        open_split(out, "val")


@pytest.mark.parametrize("recipe", sorted((ROOT / "configs").glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_recipe_reads_and_validates(recipe: Path) -> None:
    # a recipe whose model comes from a package names it on the command line, as its header shows
    given = ["--train.init_from=MODEL"] if "--train.init_from=" in recipe.read_text() else []
    config = load_config(recipe, given)
    assert config.train.max_steps > 0 and config.data.input


def test_train_refuses_a_tokenizer_or_split_its_prepared_data_was_not_made_with(
    tmp_path: Path, corpus: Path
) -> None:
    # A prepared directory fixes the tokenizer and the split: a different data.tokenizer or
    # data.val_fraction would be ignored while config.toml recorded it, so it is refused before
    # the run directory is made or an earlier run is moved aside. The same value, or a key left
    # at its default, trains.
    from conftest import TINY

    from lmforge import train

    prepared = tmp_path / "prepared"
    prepare_corpus(corpus, prepared, val_fraction=0.2)  # the char tokenizer, the default
    tiny = [f"--data.input={prepared}", *TINY, "--train.max_steps=2"]
    run = tmp_path / "run"
    refused = {
        "--data.tokenizer=bpe": r"^data\.tokenizer='bpe' differs from the 'char' that",
        "--data.val_fraction=0.3": r"^data\.val_fraction=0\.3 differs from the 0\.2 that",
    }
    named = r" data\.input='[^']*prepared' was prepared with \(its meta\.json\)"
    for given, message in refused.items():
        with pytest.raises(LmforgeError, match=message + named) as error:
            train(None, [*tiny, given], run, quiet=True)
        assert "\n" not in str(error.value) and not run.exists()
    recipe = _recipe(tmp_path, f'[data]\ninput = "{prepared}"\ntokenizer = "bpe"\n')
    with pytest.raises(LmforgeError, match=r"^data\.tokenizer='bpe' differs"):  # in the recipe too
        train(recipe, [*TINY, "--train.max_steps=2"], run, quiet=True)
    assert not run.exists()

    train(None, tiny, run, quiet=True)  # the keys left unset: config.toml records the prepared ones
    assert load_config(run / "config.toml").data.val_fraction == 0.2
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(LmforgeError, match=r"^data\.val_fraction=0\.3 differs"):
        train(None, [*tiny, "--data.val_fraction=0.3"], run, overwrite=True, quiet=True)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before  # nothing moved aside
    train(None, [*tiny, "--data.val_fraction=0.2", "--data.tokenizer=char"], run, overwrite=True, quiet=True)
    assert load_config(run / "config.toml").data.val_fraction == 0.2


def test_a_key_set_to_its_default_is_still_a_choice_a_prepared_directory_can_refuse(
    tmp_path: Path, corpus: Path
) -> None:
    # data.tokenizer="char" and data.vocab_size=4096 are the defaults, but naming them is a choice:
    # on data prepared with a 300-token BPE they would be ignored, so they are refused, on the
    # command line and in a recipe alike. Left unset, the run trains and its config.toml records
    # what it trained on.
    from conftest import TINY

    from lmforge import train

    prepared = tmp_path / "prepared"
    prepare_corpus(corpus, prepared, tokenizer="bpe", vocab_size=300)
    assert read_meta(prepared)["vocab_target"] == 300
    tiny = [f"--data.input={prepared}", *TINY, "--train.max_steps=2"]
    run = tmp_path / "run"
    refused = {
        "--data.tokenizer=char": r"^data\.tokenizer='char' differs from the 'bpe' that",
        "--data.vocab_size=4096": r"^data\.vocab_size=4096 differs from the 300 that",
        "--data.val_fraction=0.1": None,  # the value it was prepared with: accepted
    }
    for given, message in refused.items():
        if message is not None:
            with pytest.raises(LmforgeError, match=message):
                train(None, [*tiny, given], run, quiet=True)
            assert not run.exists()
    recipe = _recipe(tmp_path, f'[data]\ninput = "{prepared}"\nvocab_size = 4096\n')
    with pytest.raises(LmforgeError, match=r"^data\.vocab_size=4096 differs"):
        train(recipe, [*TINY, "--train.max_steps=2"], run, quiet=True)
    train(None, [*tiny, "--data.val_fraction=0.1", "--data.vocab_size=300"], run, quiet=True)
    recorded = load_config(run / "config.toml").data
    assert (recorded.tokenizer, recorded.vocab_size, recorded.val_fraction) == ("bpe", 300, 0.1)
    train(None, ["--train.max_steps=3"], resume=run, quiet=True)  # the recorded keys resume as they are


def test_a_model_key_train_init_from_would_override_is_refused(tmp_path: Path, corpus: Path) -> None:
    # train.init_from brings its architecture: --model.n_layer=6 on a 2-layer model was dropped
    # without a word. A [model] key chosen otherwise is refused before training; the same value,
    # dropout, or the key left unset trains.
    from conftest import TINY

    from lmforge import train

    base = tmp_path / "base"
    train(None, [f"--data.input={corpus}", *TINY, "--train.max_steps=2"], base, quiet=True)
    tuned = [f"--data.input={corpus}", f"--train.init_from={base}", "--train.max_steps=2"]
    run = tmp_path / "run"
    for given in ("--model.n_layer=6", "--model.block_size=64", "--model.pos=rope"):
        key, _, value = given.removeprefix("--").partition("=")
        message = rf"^{key}='?{value}'? \(on the command line\) differs from the .* of train\.init_from="
        with pytest.raises(LmforgeError, match=message):
            train(None, [*tuned, given], run, quiet=True)
        assert not run.exists()
    train(None, [*tuned, "--model.n_layer=2", "--model.dropout=0.1"], run, quiet=True)
    assert load_config(run / "config.toml").model.dropout == 0.1


def test_a_fine_tune_takes_the_models_dropout_unless_set(
    tmp_path: Path, corpus: Path, capsys: pytest.CaptureFixture
) -> None:
    """As transformers fine-tunes with the config's dropout: an imported GPT-2's 0.1 (until
    2026-12-07 the recipe's default 0.0 replaced it), said on a start-up line; --model.dropout wins."""
    from hf_helpers import make_hf_model

    from lmforge import train

    make_hf_model("gpt2", tmp_path / "gpt2")  # GPT2Config's dropouts: 0.1
    tuned = [f"--data.input={corpus}", f"--train.init_from={tmp_path / 'gpt2'}", "--train.max_steps=1"]
    train(None, tuned, tmp_path / "run", quiet=False)
    assert load_config(tmp_path / "run" / "config.toml").model.dropout == 0.1
    assert "model.dropout=0.1 from train.init_from's config" in capsys.readouterr().out
    train(None, [*tuned, "--model.dropout=0"], tmp_path / "run0", quiet=True)
    assert load_config(tmp_path / "run0" / "config.toml").model.dropout == 0.0


def test_a_recipes_model_yields_to_init_from_on_the_command_line(
    tmp_path: Path, corpus: Path, capsys: pytest.CaptureFixture
) -> None:
    """`lmforge train recipe.toml --init-from DIR` (docs/huggingface.md): the command line outranks
    the recipe, as every override does, so the recipe's [model] gives way, with a note naming it.
    Both in one recipe contradict each other: refused, naming the file."""
    from conftest import TINY

    from lmforge import train

    base = tmp_path / "base"
    train(None, [f"--data.input={corpus}", *TINY, "--train.max_steps=2"], base, quiet=True)
    recipe = _recipe(tmp_path, f'[data]\ninput = "{corpus}"\n[model]\nn_layer = 6\nn_embd = 64\n')
    capsys.readouterr()
    train(recipe, [f"--train.init_from={base}", "--train.max_steps=2"], tmp_path / "run")
    out = capsys.readouterr().out
    assert f"train.init_from='{base}' (on the command line) brings its own architecture, so {recipe}'s" in out
    assert "[model] n_layer=6, n_embd=64 do not apply" in out
    assert f"preparing {corpus} -> {tmp_path / 'run' / 'data'} (train.init_from's tokenizer)" in out
    assert load_config(tmp_path / "run" / "config.toml").model.n_layer == 2
    text = f'[data]\ninput = "{corpus}"\n[model]\nn_layer = 6\n[train]\ninit_from = "{base}"\n'
    both = _recipe(tmp_path, text)
    with pytest.raises(LmforgeError, match=rf"^model\.n_layer=6 \(in {re.escape(str(both))}\) differs"):
        train(both, ["--train.max_steps=2"], tmp_path / "run2", quiet=True)
    assert not (tmp_path / "run2").exists()


def test_a_recipes_data_settings_yield_to_prepared_data_on_the_command_line(
    tmp_path: Path, corpus: Path, capsys: pytest.CaptureFixture
) -> None:
    """The README's "your own text": prep with BPE, then `lmforge train configs/shakespeare-char.toml
    --data.input=PREPARED`. The recipe's tokenizer='char' was chosen for its own data.input, so it
    yields to the command line's prepared directory, with a note (it was refused)."""
    from conftest import TINY

    from lmforge import train

    prepared = tmp_path / "prepared"
    prepare_corpus(corpus, prepared, tokenizer="bpe", vocab_size=300)
    shipped = Path(__file__).resolve().parents[1] / "configs" / "shakespeare-char.toml"
    assert load_config(shipped).data.tokenizer == "char"
    capsys.readouterr()
    train(shipped, [f"--data.input={prepared}", *TINY, "--train.max_steps=2"], tmp_path / "run")
    out = capsys.readouterr().out
    assert f"note: data.input='{prepared}' (on the command line) was prepared with its own settings" in out
    assert f"so {shipped}'s [data] tokenizer='char' does not apply" in out
    assert load_config(tmp_path / "run" / "config.toml").data.tokenizer == "bpe"


@pytest.mark.parametrize(
    ("task", "key"),
    [("qa", "train.head_only=true"), ("chat", "train.from_scratch=true"), ("lm", "data.max_len=8"),
     ("translation", "train.pooling=cls"), ("lm", "train.label_smoothing=0.1"),
     ("classification", "data.doc_stride=4")],
)  # fmt: skip
def test_a_key_the_task_does_not_read_is_refused(task: str, key: str) -> None:
    """A QA run with train.head_only trained the whole encoder, unsaid."""
    overrides = [f"--data.task={task}", f"--{key}", "--train.init_from=m"]
    arch = ["--model.arch=seq2seq"] if task == "translation" else []
    said = (
        rf"^{re.escape(key.split('=')[0])}=.* is read only by data\.task=.*; this run's data\.task='{task}'"
    )
    with pytest.raises(LmforgeError, match=said):
        load_config(None, [*overrides, *arch])


def test_enabled_false_on_the_command_line_switches_a_recipes_lora_or_privacy_off(tmp_path: Path) -> None:
    """--lora.enabled=false on a recipe with a [lora] section was refused (lora.rank is set but
    lora.enabled is false), so comparing against a full fine-tune meant editing the recipe; now the
    recipe's keys give way, with a note. A key given beside it on the command line is still refused."""
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        "[lora]\nenabled = true\nrank = 4\nalpha = 8.0\n[privacy]\nenabled = true\nnoise_multiplier = 1.0\n"
    )
    cfg = load_config(recipe, ["--lora.enabled=false", "--privacy.enabled=false"])
    assert cfg.lora == type(cfg.lora)() and cfg.privacy == type(cfg.privacy)()
    assert cfg.notes == [
        f"lmforge: note: lora.enabled=False (on the command line) switches it off, so {recipe}'s [lora]"
        " rank=4, alpha=8.0 do not apply",
        f"lmforge: note: privacy.enabled=False (on the command line) switches it off, so {recipe}'s [privacy]"
        " noise_multiplier=1.0 does not apply",
    ]
    with pytest.raises(LmforgeError, match=r"lora.rank=16 is set but lora.enabled is false"):
        load_config(recipe, ["--lora.enabled=false", "--lora.rank=16"])


def test_a_section_that_forgot_its_switch_is_refused_even_at_default_values(tmp_path: Path) -> None:
    """A [privacy] section without `enabled = true` whose keys equal the defaults trained without
    DP and no word (the check compared values only). A run's config.toml, which writes
    `enabled = false` beside every key, still loads."""
    recipe = tmp_path / "r.toml"
    recipe.write_text('[privacy]\nmax_grad_norm = 1.0\naccountant = "rdp"\n')
    with pytest.raises(LmforgeError, match=r"privacy.max_grad_norm=1.0 is set but privacy.enabled is false"):
        load_config(recipe)
    recipe.write_text("[lora]\nrank = 8\n")
    with pytest.raises(LmforgeError, match=r"lora.rank=8 is set but lora.enabled is false"):
        load_config(recipe)
    written = tmp_path / "config.toml"
    written.write_text(config_to_toml(load_config(None)))
    assert load_config(written).privacy == load_config(None).privacy
