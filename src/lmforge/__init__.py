"""lmforge: from raw text to a trained Transformer language model, in one small codebase.

Every CLI verb is a function here with the same arguments: `lmforge train X.toml` is
`lmforge.train("X.toml")`. `import lmforge` is cheap: each name is imported from its module
the first time it is used (module `__getattr__`), so `lmforge --help` does not load torch.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers and editors; at run time the names load lazily
    from lmforge.config import Config, load_config
    from lmforge.data.pairs import prepare_pairs
    from lmforge.data.prep import prep
    from lmforge.errors import LmforgeError
    from lmforge.formats.directory import load_model as load
    from lmforge.formats.hf_export import export_hf
    from lmforge.formats.hf_files import import_hf
    from lmforge.formats.onnx_export import export_onnx
    from lmforge.formats.peft import merge_lora
    from lmforge.inference.ask import ask
    from lmforge.inference.chat import chat
    from lmforge.inference.classify import classify, eval_classify
    from lmforge.inference.embed import embed
    from lmforge.inference.generate import generate
    from lmforge.inference.instruct_eval import eval_instruct
    from lmforge.inference.onnx_runner import generate_onnx, translate_onnx
    from lmforge.inference.perplexity import evaluate
    from lmforge.inference.qa_eval import eval_qa
    from lmforge.inference.translate import eval_translate, translate
    from lmforge.pipelines import pipeline
    from lmforge.server.serve import serve
    from lmforge.tools.audit import audit
    from lmforge.tools.inspect import inspect
    from lmforge.tools.plan import plan
    from lmforge.train.classify import finetune_classify
    from lmforge.train.loop import train

# public name -> "module:attribute"
_API: dict[str, str] = {
    "Config": "lmforge.config:Config",
    "ask": "lmforge.inference.ask:ask",
    "audit": "lmforge.tools.audit:audit",
    "chat": "lmforge.inference.chat:chat",
    "classify": "lmforge.inference.classify:classify",
    "LmforgeError": "lmforge.errors:LmforgeError",
    "embed": "lmforge.inference.embed:embed",
    "eval_classify": "lmforge.inference.classify:eval_classify",
    "eval_instruct": "lmforge.inference.instruct_eval:eval_instruct",
    "eval_qa": "lmforge.inference.qa_eval:eval_qa",
    "eval_translate": "lmforge.inference.translate:eval_translate",
    "evaluate": "lmforge.inference.perplexity:evaluate",
    "export_hf": "lmforge.formats.hf_export:export_hf",
    "export_onnx": "lmforge.formats.onnx_export:export_onnx",
    "finetune_classify": "lmforge.train.classify:finetune_classify",
    "generate": "lmforge.inference.generate:generate",
    "generate_onnx": "lmforge.inference.onnx_runner:generate_onnx",
    "translate_onnx": "lmforge.inference.onnx_runner:translate_onnx",
    "import_hf": "lmforge.formats.hf_files:import_hf",
    "inspect": "lmforge.tools.inspect:inspect",
    "load": "lmforge.formats.directory:load_model",
    "load_config": "lmforge.config:load_config",
    "merge_lora": "lmforge.formats.peft:merge_lora",
    "pipeline": "lmforge.pipelines:pipeline",
    "plan": "lmforge.tools.plan:plan",
    "prep": "lmforge.data.prep:prep",
    "prepare_pairs": "lmforge.data.pairs:prepare_pairs",
    "serve": "lmforge.server.serve:serve",
    "train": "lmforge.train.loop:train",
    "translate": "lmforge.inference.translate:translate",
}

__all__ = [
    "Config",
    "LmforgeError",
    "ask",
    "audit",
    "chat",
    "classify",
    "embed",
    "eval_classify",
    "eval_instruct",
    "eval_qa",
    "eval_translate",
    "evaluate",
    "export_hf",
    "export_onnx",
    "finetune_classify",
    "generate",
    "generate_onnx",
    "translate_onnx",
    "import_hf",
    "inspect",
    "load",
    "load_config",
    "merge_lora",
    "pipeline",
    "plan",
    "prep",
    "prepare_pairs",
    "serve",
    "train",
    "translate",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'lmforge' has no attribute {name!r}")
    module, _, attribute = _API[name].partition(":")
    value = getattr(importlib.import_module(module), attribute)
    if name != "train":  # cached; `train` stays with the property below
        globals()[name] = value
    return value


def __dir__() -> list[str]:
    return [*__all__, "__version__"]


class _Package(types.ModuleType):
    """`lmforge.train` is the function although lmforge/train/ is a subpackage: importing any
    lmforge.train.* module binds the subpackage as an attribute of this package, which would hide
    `__getattr__`. A property on the module's class wins over that binding (and ignores it)."""

    @property
    def train(self) -> Any:
        return __getattr__("train")

    @train.setter
    def train(self, _subpackage: Any) -> None:
        pass


sys.modules[__name__].__class__ = _Package
