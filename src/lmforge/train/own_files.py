"""Which entries of a run's model folders (model/, best/, checkpoints/step_N/) train wrote: a fixed
set of names from the writers (run_outputs.write_model_dir, engines/state.py, checkpoint.py), never
what is found on disk, so that a user's file in one folder cannot pass for train's in another.
--overwrite refuses a folder holding anything else, and pruning an old checkpoint keeps it."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from lmforge.formats.chat_files import CHAT_TEMPLATE, GENERATION_CONFIG, TOKENIZER_CONFIG, is_templates_folder
from lmforge.formats.directory import WEIGHTS
from lmforge.formats.peft import LORA_FILE
from lmforge.tokenization.marian import FILES as MARIAN_FILES
from lmforge.train.engines.state import OPTIMIZER, SCHEDULER

# model/, best/ and every checkpoint as a model directory: the weights (LoRA: the adapters and
# lora.json), config.json, the tokenizer's files (tokenizer.json, or Marian's), the chat files
# (additional_chat_templates/ is judged by is_templates_folder)
MODEL_DIR_FILES = frozenset(
    {WEIGHTS, LORA_FILE, "config.json", "tokenizer.json", CHAT_TEMPLATE, GENERATION_CONFIG, TOKENIZER_CONFIG}
    | set(MARIAN_FILES)
)
# ... and what a checkpoint adds: the engine's state, the trainer's state, RNG states, the manifest
CHECKPOINT_FILES = MODEL_DIR_FILES | {
    OPTIMIZER,
    SCHEDULER,
    "trainer.json",
    "rng.safetensors",
    "manifest.json",
}


def is_own(path: Path, names: frozenset[str]) -> bool:
    """Whether `path` is an entry train writes among `names`: a plain file of that name (a link or
    a folder of that name is not train's), or the named chat templates' folder."""
    if path.name in names:
        return path.is_file() and not path.is_symlink()
    return is_templates_folder(path)


def foreign_names(folder: Path, names: frozenset[str]) -> list[str]:
    """The entries of `folder` that train did not write, sorted."""
    return sorted(p.name for p in folder.iterdir() if not is_own(p, names))


def prune_checkpoint(checkpoint: Path, say: Callable[[str], None]) -> None:
    """Delete an old checkpoint (train.keep_checkpoints): whole when it holds only train's files;
    else only train's files, keeping the folder with the others, said in one line. A link in place
    of the folder is removed as a link: what it points to stays."""
    if checkpoint.is_symlink():
        checkpoint.unlink()
        return
    foreign = foreign_names(checkpoint, CHECKPOINT_FILES)
    if not foreign:
        shutil.rmtree(checkpoint, ignore_errors=True)
        return
    own = [p for p in checkpoint.iterdir() if p.name not in foreign]
    if not own:  # pruned before: only the user's files are left, said then
        return
    for path in own:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
    say(
        f"{checkpoint}: pruned (train.keep_checkpoints) but kept, with {shown}, which train did not"
        " write: its checkpoint files were removed"
    )
