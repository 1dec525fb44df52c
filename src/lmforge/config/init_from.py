"""train.init_from's architecture in place of [model]: one check for `lmforge train`
(train/run_inputs.py, the classification and qa tasks) and `lmforge plan` (tools/plan_recipe.py),
so that plan refuses a conflicting [model] key in the same line train does."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from lmforge.config.checks import yield_note
from lmforge.config.model_section import ModelConfig
from lmforge.config.run_config import COMMAND_LINE, Config
from lmforge.errors import LmforgeError


def adopted_model(cfg: Config, own: ModelConfig, say: Callable[[str], None] | None = None) -> ModelConfig:
    """train.init_from's architecture (`own`) with its dropout unless the recipe or the command line
    sets model.dropout (as transformers fine-tunes with the config's dropout: until 2026-12-07 the
    recipe's default 0.0 replaced an imported BERT's or GPT-2's 0.1): what replaces [model]. A
    [model] key chosen otherwise (Config.is_set; vocab_size 0 means "the tokenizer's") would be
    ignored, so it is refused; except a recipe's, when train.init_from came from the command line:
    the later, more specific choice, as every override beats its recipe (told to `say`)."""
    yielded = []
    for f in dataclasses.fields(ModelConfig):
        given, theirs = getattr(cfg.model, f.name), getattr(own, f.name)
        if f.name == "dropout" or given == theirs or (f.name == "vocab_size" and given == 0):
            continue
        if f.name == "head_dim" and cfg.model.head_size() == own.head_size():  # 0: n_embd / n_head
            continue
        where = cfg.given.get(f"model.{f.name}")
        if cfg.outranked(f"model.{f.name}", by="train.init_from"):
            yielded.append(f"{f.name}={given!r}")
        elif cfg.is_set(f"model.{f.name}"):
            where = f" ({'on the' if where == COMMAND_LINE else 'in'} {where})" if where else ""
            raise LmforgeError(
                f"model.{f.name}={given!r}{where} differs from the {theirs!r} of train.init_from="
                f"{cfg.train.init_from!r}: the starting model brings its architecture, so leave"
                " [model] keys other than dropout unset"
            )
    if yielded and say is not None:
        say(yield_note(cfg, "train.init_from", "brings its own architecture", "model", yielded))
    if cfg.is_set("model.dropout"):
        return dataclasses.replace(own, dropout=cfg.model.dropout)
    if own.dropout and say is not None:
        say(f"model.dropout={own.dropout} from train.init_from's config (--model.dropout=0 trains without)")
    return own
