"""A generator or a dataset as a pipeline's input, as transformers' pipelines take them:

    >>> for out in pipe(line for line in open("prompts.txt"))  # or KeyDataset(dataset, "text")
    ...     print(out)

The call returns an iterator that yields each item's result (what a call on a list gives for that
item), reading the input `batch_size` items at a time: the input may be larger than memory, or
endless. The first batch runs before the call returns, so a bad keyword or value is its one-line
error there, not at the first `next()`.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

from lmforge.errors import LmforgeError
from lmforge.inference.options import FIRST_ITEM, check_options

KEYWORDS = ("inputs", "text_inputs", "text")  # transformers' names for a pipeline's input, and lmforge's


def is_stream(inputs: Any) -> bool:
    """An iterator (a generator, map, ...) or a torch Dataset (transformers' KeyDataset is one)."""
    return isinstance(inputs, Iterator | torch.utils.data.Dataset)


def _items(inputs: Any) -> Iterator[Any]:
    if isinstance(inputs, Iterator):
        return inputs
    if isinstance(inputs, torch.utils.data.IterableDataset):  # even one with a __len__
        return iter(inputs)
    if hasattr(inputs, "__len__"):  # a map-style dataset: by index, as a DataLoader reads it
        return (inputs[i] for i in range(len(inputs)))
    return iter(inputs)


def streams(
    default_size: Callable[[Any], int | None],
    each: Callable[[Any], Any] = lambda r: r,
    listed: Callable[..., list[Any]] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorates a pipeline's __call__ (whose first argument, or a keyword of KEYWORDS, is the input): on a
    stream it yields `each(result)` per item, batch_size items at a time (the call's, else
    default_size(pipeline)'s, else 1); any other input goes to __call__ as it is. listed(pipeline,
    items, **keywords): the items' results as a list, where a call on a list of one gives that
    one's result alone (question-answering, as transformers'); else the call itself."""

    def decorate(call: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(call)  # keeps the signature: keyword checks and help() read it
        def __call__(self: Any, *args: Any, **kwargs: Any) -> Any:
            kwargs = {**getattr(self, "call_defaults", {}), **kwargs}  # pipeline()'s, a call's own win
            named = [k for k in KEYWORDS if is_stream(kwargs.get(k))]
            if args and is_stream(args[0]):
                inputs, args = args[0], args[1:]
            elif not args and named:
                inputs = kwargs.pop(named[0])
            else:
                return call(self, *args, **kwargs)
            size = kwargs.get("batch_size")
            if size is not None:
                check_options(batch_size=size)
            size = size or default_size(self) or 1

            def run(batch: list[Any]) -> Iterable[Any]:
                results = (listed or call)(self, batch, *args, **kwargs)
                return (each(result) for result in results)

            return _stream(run, _items(inputs), size)

        return __call__

    return decorate


def _stream(run: Callable[[list[Any]], Iterable[Any]], items: Iterator[Any], size: int) -> Iterator[Any]:
    first = list(itertools.islice(items, size))
    done = list(run(first)) if first else []  # now: its errors are the call's

    def rest() -> Iterator[Any]:
        yield from done
        read = len(first)
        while batch := list(itertools.islice(items, size)):
            numbered = FIRST_ITEM.set(read + 1)  # a bad item is named by its place in the input
            try:
                results = list(run(batch))
            except LmforgeError as e:  # name the batch too: the caller holds no list to count in
                raise LmforgeError(f"{e} (in items {read + 1}-{read + len(batch)} of the input)") from None
            finally:
                FIRST_ITEM.reset(numbered)
            read += len(batch)
            yield from results

    return rest()
