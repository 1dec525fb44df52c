"""Model directories and the formats lmforge reads and writes (Hugging Face, GGUF, PEFT, ONNX).

Importing the package also installs the model package's route memory (model/route_memory.py):
every path that loads, trains or writes a model comes through here, and the kernel routes its
probes choose by timing are then kept for the machine in the autotune cache (tuning.py), so that
one command gives one result on one machine.
"""

from lmforge import tuning
from lmforge.model import route_memory

route_memory.install(tuning.remembered_route)
