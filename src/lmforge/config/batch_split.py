"""The global batch split over ranks: each rank's micro-batch and its accumulation steps, or one
line saying which batch size or number of ranks would split it."""

from __future__ import annotations

from lmforge.errors import LmforgeError


def split_batch(
    batch_size: int, world_size: int, micro_batch_size: int, resuming: bool = False
) -> tuple[int, int]:
    """(micro-batch, accumulation steps) of the global batch over world_size ranks; micro_batch_size
    0 is one micro-batch per rank. Raises LmforgeError, saying what to set, where it does not split
    (a resumed run keeps its batch size: then only the number of ranks)."""
    per_rank, rest = divmod(batch_size, world_size)
    if rest:
        unit = world_size * (micro_batch_size or 1)
        low, high = batch_size // unit * unit, (batch_size // unit + 1) * unit
        what = f"world_size x train.micro_batch_size = {unit}" if micro_batch_size else str(world_size)
        ranks = _ranks_that_split(batch_size, world_size, micro_batch_size or 1)
        uneven = f"train.batch_size={batch_size} does not split evenly over world_size={world_size} ranks"
        if resuming:  # micro_batch_size may change: 0 where the one set divides no rank's share
            run = ranks or f"{_ranks_that_split(batch_size, world_size, 1)} with --train.micro_batch_size=0"
            raise LmforgeError(f"{uneven}, and a resumed run keeps its batch size: run {run}")
        raise LmforgeError(
            f"{uneven}: set train.batch_size to a multiple of {what} ({f'{low} or ' if low else ''}{high})"
            + (f", or run {ranks}" if ranks else "")
        )
    micro = micro_batch_size or per_rank
    if per_rank % micro:  # only a micro_batch_size the user set can fail here
        raise LmforgeError(
            f"train.batch_size={batch_size} must split into world_size={world_size}"
            f" x micro_batch_size={micro} x accumulation steps"
        )
    return micro, per_rank // micro


def _ranks_that_split(batch_size: int, world_size: int, micro: int) -> str:
    """The numbers of ranks nearest world_size, below and above, over which the batch splits into
    micro-batches of `micro` (`2 or 4 ranks`); '' when none does (micro does not divide it)."""
    fits = [r for r in range(1, batch_size // micro + 1) if batch_size % (r * micro) == 0]
    below = [r for r in fits if r < world_size][-1:]
    above = [r for r in fits if r > world_size][:1]
    near = below + above
    return f"{' or '.join(map(str, near))} rank{'s' if near[-1] > 1 else ''}" if near else ""
