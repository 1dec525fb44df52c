"""lmforge: from raw text to a trained Transformer language model, in one small codebase.

Every CLI verb is a function here with the same arguments: `lmforge train X.toml` is
`lmforge.train("X.toml")`.
"""

from lmforge.config import Config, load_config
from lmforge.data.prep import prep
from lmforge.errors import LmforgeError
from lmforge.formats.directory import load_model as load
from lmforge.formats.hf_files import export_hf, import_hf
from lmforge.inference.generate import generate
from lmforge.inference.translate import eval_translate, translate
from lmforge.pipelines import pipeline
from lmforge.train.loop import train

__all__ = [
    "Config",
    "LmforgeError",
    "eval_translate",
    "export_hf",
    "generate",
    "import_hf",
    "load",
    "load_config",
    "pipeline",
    "prep",
    "train",
    "translate",
]
__version__ = "0.1.0"
