"""lmforge's per-document cleaning stages as one datatrove `PipelineStep`, for datatrove's
executors (local, Slurm, Ray) when a corpus outgrows one machine.

    from datatrove.executor import SlurmPipelineExecutor   # or LocalPipelineExecutor, RayPipelineExecutor
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter
    from lmforge.data.datatrove_steps import CleaningStep

    pipeline = [JsonlReader("raw/"), CleaningStep("normalize,markup,whitespace,length,pii"),
                JsonlWriter("cleaned/")]
    SlurmPipelineExecutor(pipeline, tasks=64, time="4:00:00", partition="cpu",
                          logging_dir="logs/clean").run()

Then datatrove's own MinHash stages deduplicate across machines, and `lmforge prep cleaned/
--stages none` trains the tokenizer and writes the shards. Only the per-document stages fit a
step: `boilerplate`, `exact_dedup` and `near_dedup` need the whole corpus and are refused here.
"""

from __future__ import annotations

from typing import Any

from datatrove.pipeline.base import PipelineStep

from lmforge.config import PrepConfig
from lmforge.data.pipeline import CORPUS_STAGES, build_stage, parse_stages
from lmforge.data.report import StageStats
from lmforge.errors import LmforgeError


class CleaningStep(PipelineStep):
    name = "lmforge cleaning"
    type = "✂️ - FORMAT"

    def __init__(self, stages: str, **options: Any) -> None:
        super().__init__()
        names = parse_stages(stages)
        refused = [n for n in names if n in CORPUS_STAGES or n == "boilerplate"]
        if refused:
            verb = "needs" if len(refused) == 1 else "need"
            raise LmforgeError(
                f"CleaningStep: {', '.join(refused)} {verb} the whole corpus (use datatrove's dedup)"
            )
        settings = PrepConfig(**options).__dict__
        self.stages = [build_stage(n, settings) for n in names]

    def run(self, data: Any, rank: int = 0, world_size: int = 1) -> Any:
        for doc in data:
            self.stat_update("total")
            text: str | None = doc.text
            with self.track_time():
                for stage in self.stages:
                    stats = StageStats()
                    text = stage.apply(text, stats)
                    for reason in stats.dropped:
                        self.stat_update(f"{stage.name}: {reason}")
                    if text is None or not text.strip():
                        break
            if text is None or not text.strip():
                self.stat_update("dropped")
                continue
            doc.text = text
            self.stat_update("kept")
            yield doc
