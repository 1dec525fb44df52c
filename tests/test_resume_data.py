"""A resume on other training data than the checkpoint's is refused (its loader's data digest is
in every checkpoint): an edited input whose RUN/data was prepared again, or a chat file edited
between starts, continued at the saved position on other examples, unsaid."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, make_text

from lmforge.data.fingerprint import digest_of, shards_digest
from lmforge.errors import LmforgeError
from lmforge.train.loop import train


def test_a_changed_input_prepared_again_is_refused_and_the_same_input_resumes(tmp_path: Path) -> None:
    text = make_text(lines=300)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(text)
    run = tmp_path / "run"
    overrides = [f"--data.input={corpus}", *TINY, "--train.checkpoint_interval=2"]
    train(overrides=[*overrides, "--train.max_steps=2"], out=run, quiet=True)
    trainer = json.loads((run / "checkpoints" / "step_00000002" / "trainer.json").read_text())
    assert len(trainer["data"]) == 16
    lines = text.splitlines()
    corpus.write_text("\n".join([lines[1], lines[0], *lines[2:]]) + "\n")  # the same characters, moved
    shutil.rmtree(run / "data")
    with pytest.raises(
        LmforgeError, match=r"step_00000002: the training data is not what this run trained on"
    ):
        train(resume=run, overrides=["--train.max_steps=4"], quiet=True)
    corpus.write_text(text)  # restored: the run goes on
    shutil.rmtree(run / "data")
    train(resume=run, overrides=["--train.max_steps=4"], quiet=True)
    assert json.loads((run / "summary.json").read_text())["steps"] == 4


@dataclasses.dataclass
class _Row:
    ids: np.ndarray
    label: int


def test_digests_tell_layouts_and_values_apart() -> None:
    a = np.arange(6, dtype=np.int64)
    assert digest_of([a]) == digest_of([a.copy()]) == digest_of([torch.arange(6)])
    assert digest_of([a]) != digest_of([a.reshape(2, 3)]) != digest_of([a.astype(np.int32)])
    assert digest_of([("ab", 1)]) != digest_of([("a", "b1")]) != digest_of([["ab", 1]] * 2)
    assert digest_of([_Row(a, 1)]) != digest_of([_Row(a, 2)])
    shard = np.arange(20_000, dtype=np.uint16)
    changed = shard.copy()
    changed[-1] = 7
    assert shards_digest([shard]) != shards_digest([changed]) != shards_digest([shard[:-1]])
    with pytest.raises(TypeError, match="cannot digest a dict"):
        digest_of([{}])
