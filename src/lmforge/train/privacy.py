"""Differentially private training: DP-SGD (Abadi et al. 2016) on THE loop, with Opacus' accountants.

With `[privacy] enabled = true` the loop computes each optimizer step's gradient here instead of
by one backward over the batch:

1. per-example gradients with `torch.func` (`vmap` over `grad` of the task's own loss on one
   example; tied embeddings, rotary tables, norms and LoRA's frozen base need nothing special:
   `functional_call` keeps tied weights tied and only trained parameters get gradients);
2. each example's gradient (all trained parameters as one vector) scaled down to L2 norm
   `max_grad_norm` = C, and the clipped gradients summed over every micro-batch of the step
   (gradient accumulation makes one logical batch: the global batch);
3. Gaussian noise N(0, (sigma C)^2) added once per step, the sum divided by the global batch B,
   and written to `.grad` for the engine's optimizer step (which then does not clip again);
4. the step recorded in an Opacus accountant (RDP or PRV) at sampling rate q = B / N.

Sampling: the loaders deal shuffled fixed-size batches (each example once per epoch); the
accountant assumes Poisson sampling at the same rate, the approximation most DP-SGD results use.
The formal guarantee is for Poisson sampling; docs/privacy.md says what that means.

A unit of privacy is one training example: for language modelling one window of
data.seq_len (default block_size) + 1 tokens. The noise comes from torch's seeded generator
(exact resume), not a cryptographic one.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from lmforge.config import Config, PrivacyConfig
from lmforge.data.loader import IGNORE
from lmforge.errors import LmforgeError
from lmforge.formats.directory import resolve_model_dir
from lmforge.train.engines.base import Engine
from lmforge.train.tasks.base import Autocast, Task

Batch = tuple[torch.Tensor, ...]
LossFn = Callable[..., torch.Tensor]


def _opacus() -> Any:
    try:
        import opacus.accountants as accountants
        import opacus.accountants.utils as utils
    except ImportError:
        raise LmforgeError(
            "[privacy] needs Opacus' accountants: pip install opacus"
            " (in a checkout of lmforge: pip install -e '.[privacy]')"
        ) from None
    return accountants, utils


# Opacus' RDP analysis warns (UserWarning) when its best order is the first or last of its alphas.
# get_noise_multiplier's search trips it on every trial noise far from the one it picks, and early
# steps trip it too: noise for the user, so it is hidden; `_alpha_note` says it in our words when it
# matters (the chosen noise's epsilon at the planned steps).
_ALPHA_WARNING = r"Optimal order is the (smallest|largest) alpha"


@contextlib.contextmanager
def _no_alpha_warning() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_ALPHA_WARNING, category=UserWarning)
        yield


class _Loss(nn.Module):
    """The task's loss as a module, so functional_call can swap the model's parameters."""

    def __init__(self, model: nn.Module, loss_fn: LossFn) -> None:
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, *batch: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(self.model, *batch)


def per_sample_grads(
    model: nn.Module, loss_fn: LossFn, batch: Batch
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """(gradients by trained parameter name, each (B, *shape), summed losses (B,), targets (B,)).

    Example i's gradient is that of its loss per target (its summed loss over its own target
    count), so clipping bounds an example's influence whatever its length. batch: tensors (B, ...)
    whose last holds the targets, as the task's loss takes them."""
    wrapper = _Loss(model, loss_fn)
    trained = {f"model.{n}": p.detach() for n, p in model.named_parameters() if p.requires_grad}
    fixed = {f"model.{n}": p.detach() for n, p in model.named_parameters() if not p.requires_grad}
    fixed.update({f"model.{n}": b for n, b in model.named_buffers()})

    def one(params: dict[str, torch.Tensor], *example: torch.Tensor) -> tuple[torch.Tensor, Any]:
        batch1 = tuple(t.unsqueeze(0) for t in example)  # a batch of one example
        summed = functional_call(wrapper, {**fixed, **params}, batch1)
        count = (example[-1] != IGNORE).sum()
        return summed / count.clamp(min=1), (summed.detach(), count)

    in_dims = (None,) + (0,) * len(batch)
    grads, (summed, counts) = vmap(grad(one, has_aux=True), in_dims=in_dims, randomness="different")(
        trained, *batch
    )
    return {n.removeprefix("model."): g for n, g in grads.items()}, summed, counts


def clip_and_sum(
    grads: dict[str, torch.Tensor], max_norm: float
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Scale each example's gradient to L2 norm <= max_norm (over all parameters together, as
    Opacus does) and sum over examples; returns (sums by name, the per-example norms (B,))."""
    norms = torch.stack([g.flatten(1).float().norm(dim=1) for g in grads.values()]).norm(dim=0)  # (B,)
    factor = (max_norm / (norms + 1e-6)).clamp(max=1.0)  # (B,)
    sums = {n: torch.einsum("b,b...->...", factor.to(g.dtype), g) for n, g in grads.items()}
    return sums, norms


class DPSGD:
    """One run's DP-SGD: the gradient of each step, and the privacy spent so far."""

    def __init__(
        self,
        cfg: PrivacyConfig,
        batch_size: int,
        n_examples: int,
        planned_steps: int,
    ) -> None:
        accountants, utils = _opacus()
        self.cfg, self.batch_size, self.n_examples = cfg, batch_size, n_examples
        self.sample_rate = min(1.0, batch_size / n_examples)
        self.delta = cfg.delta or min(1e-5, 1.0 / n_examples)
        if cfg.delta > 1.0 / n_examples:  # releasing one example whole meets such a delta
            print(
                f"lmforge: warning: privacy.delta={cfg.delta:g} is above 1/N = 1/{n_examples:,} (the"
                " examples sampled from): the (epsilon, delta) bound then allows a record to leak whole;"
                " the usual choice is at most 1/N (0, the default: min(1e-5, 1/N))",
                file=sys.stderr,
            )
        self.planned_steps = planned_steps
        self.noise_multiplier = cfg.noise_multiplier
        if cfg.target_epsilon > 0:
            try:
                with _no_alpha_warning():
                    self.noise_multiplier = utils.get_noise_multiplier(
                        target_epsilon=cfg.target_epsilon,
                        target_delta=self.delta,
                        sample_rate=self.sample_rate,
                        steps=planned_steps,
                        accountant=cfg.accountant,
                    )
            except ValueError as e:  # Opacus: "The privacy budget is too low."
                raise LmforgeError(
                    f"privacy.target_epsilon={cfg.target_epsilon}: no noise multiplier reaches it at"
                    f" delta {self.delta:g} over {planned_steps} steps at sampling rate"
                    f" {self.sample_rate:.4g} ({e})"
                ) from None
        self.accountant = accountants.create_accountant(cfg.accountant)
        # earlier_privacy's record of train.init_from's own DP-SGD, if any (build_privacy sets it)
        self.earlier: dict[str, Any] | None = None
        self.init_from = ""
        self._epsilon: tuple[int, float] = (0, 0.0)  # (steps, epsilon): a cache, PRV takes ~1 s

    @property
    def steps(self) -> int:
        return sum(n for _, _, n in self.accountant.history)

    def forward_backward(
        self,
        module: nn.Module,
        engine: Engine,
        micro_batches: list[Batch],
        autocast: Autocast,
        loss_fn: LossFn,
    ) -> float:
        """The loop's forward_backward under DP-SGD: leaves the noised mean of clipped per-example
        gradients in `.grad` and returns the step's loss per target (as the plain one does)."""
        trained = {n: p for n, p in module.named_parameters() if p.requires_grad}
        total = {n: torch.zeros_like(p) for n, p in trained.items()}
        loss_sum, targets = 0.0, 0
        for batch in micro_batches:
            batch = tuple(t.to(engine.device) for t in batch)
            with autocast():
                grads, summed, counts = per_sample_grads(module, loss_fn, batch)
            sums, _ = clip_and_sum(grads, self.cfg.max_grad_norm)
            for name, s in sums.items():
                total[name] += s
            loss_sum += float(summed.double().sum())
            targets += int(counts.sum())
        std = self.noise_multiplier * self.cfg.max_grad_norm
        for name, p in trained.items():
            noise = torch.normal(0.0, std, size=p.shape, device=p.device) if std > 0 else 0.0
            p.grad = ((total[name] + noise) / self.batch_size).to(p.dtype)  # B: the logical batch
        self.accountant.step(noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate)
        return loss_sum / max(targets, 1)

    def epsilon(self) -> float:
        """Epsilon at self.delta spent by the steps taken so far (inf without noise)."""
        if self._epsilon[0] != self.steps:
            if self.steps == 0:
                value = 0.0
            elif self.noise_multiplier == 0:
                value = math.inf
            else:
                with _no_alpha_warning():
                    value = float(self.accountant.get_epsilon(delta=self.delta))
            self._epsilon = (self.steps, value)
        return self._epsilon[1]

    def state_dict(self) -> dict[str, Any]:
        """Everything the accountant needs to continue exactly: plain JSON (trainer.json)."""
        return {
            "accountant": self.cfg.accountant,
            "history": [list(h) for h in self.accountant.history],
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "delta": self.delta,
            "planned_steps": self.planned_steps,
        }

    def load_state_dict(self, state: dict[str, Any] | None, source: str) -> None:
        if not state:
            raise LmforgeError(f"{source}: checkpoint was trained without [privacy]; its epsilon is unknown")
        if state.get("accountant") != self.cfg.accountant:
            raise LmforgeError(
                f"{source}: checkpoint's privacy accountant is {state.get('accountant')!r},"
                f" privacy.accountant={self.cfg.accountant!r}"
            )
        try:
            history = [(float(s), float(q), int(n)) for s, q, n in state["history"]]
            self.noise_multiplier = float(state["noise_multiplier"])
            self.sample_rate, self.delta = float(state["sample_rate"]), float(state["delta"])
            self.planned_steps = int(state["planned_steps"])
        except (KeyError, TypeError, ValueError):
            raise LmforgeError(f"{source}: trainer.json: malformed 'privacy' state") from None
        self.accountant.history = history

    def _alpha_note(self) -> str:
        """What Opacus' hidden warning would say, for the noise chosen at the planned steps: "" unless
        RDP's best order is an end of its alpha range, where the epsilon is looser than need be."""
        if self.cfg.accountant != "rdp" or self.noise_multiplier == 0:
            return ""
        accountants, _ = _opacus()
        probe = accountants.RDPAccountant()
        probe.history = [(self.noise_multiplier, self.sample_rate, max(self.planned_steps, 1))]
        with _no_alpha_warning():
            _, best = probe.get_privacy_spent(delta=self.delta)
        alphas = probe.DEFAULT_ALPHAS
        if best not in (min(alphas), max(alphas)):
            return ""
        return (
            f"; RDP's best order is alpha {best:g}, the end of the range tried, so epsilon is an upper"
            " bound looser than need be (privacy.accountant=prv is tighter)"
        )

    def describe(self) -> str:
        c = self.cfg
        source = (
            f"for epsilon {c.target_epsilon:g} after {self.planned_steps} steps"
            if c.target_epsilon
            else "given"
        )
        return (
            f"  privacy DP-SGD: each example clipped to {c.max_grad_norm:g}, noise multiplier"
            f" {self.noise_multiplier:.4g} ({source}), sampling rate {self.sample_rate:.4g}"
            f" ({self.batch_size} of {self.n_examples:,} examples, shuffled batches accounted as"
            f" Poisson), delta {self.delta:.3g}, {c.accountant} accountant; train.grad_clip not applied"
            f"{self._alpha_note()}"
        ) + (f"\n  privacy note: {self.earlier_note()}" if self.earlier else "")

    def earlier_note(self) -> str:
        assert self.earlier is not None
        return earlier_privacy_note(self.init_from, self, self.earlier)

    def composed_epsilon(self, earlier: dict[str, Any], steps: int | None = None) -> float:
        """Epsilon at self.delta of `earlier` (earlier_privacy's) and this run's steps (or `steps`
        at this run's noise and rate) together: the privacy loss of examples both runs read."""
        accountants, _ = _opacus()
        both = accountants.create_accountant(self.cfg.accountant)
        own = self.accountant.history if steps is None else [(self.noise_multiplier, self.sample_rate, steps)]
        both.history = [*earlier["history"], *own]
        if self.noise_multiplier == 0 or any(noise == 0 for noise, _, _ in earlier["history"]):
            return math.inf
        with _no_alpha_warning():
            return float(both.get_epsilon(delta=max(self.delta, earlier["delta"])))

    def summary(self) -> dict[str, Any]:
        """summary.json's privacy figures."""
        return {
            "epsilon": self.epsilon(),
            "privacy": {
                "delta": self.delta,
                "accountant": self.cfg.accountant,
                "noise_multiplier": self.noise_multiplier,
                "max_grad_norm": self.cfg.max_grad_norm,
                "sample_rate": self.sample_rate,
                "batch_size": self.batch_size,
                "examples": self.n_examples,
                "steps": self.steps,
            },
        } | ({"epsilon_with_init_from": self.composed_epsilon(self.earlier)} if self.earlier else {})


def build_privacy(cfg: Config, task: Task, engine: Engine) -> DPSGD | None:
    """The run's DP-SGD when [privacy] is enabled (config validation has refused other engines)."""
    earlier = _earlier(cfg.train.init_from) if cfg.train.init_from else None
    if not cfg.privacy.enabled:
        if earlier and engine.rank == 0:
            print(
                f"lmforge: note: {earlier_privacy_note(cfg.train.init_from, None, earlier)}", file=sys.stderr
            )
        return None
    from lmforge.train.engines.local import LocalEngine

    if type(engine) is not LocalEngine:  # DDP and FSDP subclass it but reduce across ranks
        raise LmforgeError(f"privacy.enabled runs on engine.name=local only, not {engine.name!r}")
    engine.grad_clip = 0.0  # each example is clipped; clipping the noised mean again would shrink steps
    t = cfg.train
    n_examples = task.loader.steps_per_epoch * t.batch_size  # one epoch visits each example once
    privacy = DPSGD(cfg.privacy, t.batch_size, n_examples, t.max_steps)
    privacy.earlier, privacy.init_from = earlier, cfg.train.init_from
    return privacy


def _earlier(init_from: str) -> dict[str, Any] | None:
    try:
        return earlier_privacy(init_from)
    except LmforgeError:  # not a model directory: the run's own loading says so
        return None


def earlier_privacy(init_from: str) -> dict[str, Any] | None:
    """The DP-SGD that trained train.init_from's weights where an lmforge run did, from its
    checkpoint's trainer.json or, for a run's model/, its summary.json: {"history": the accountant's
    [(noise, sample rate, steps)], "delta", "epsilon", "file"}; None for weights trained without it,
    or made elsewhere (an import: nothing says)."""
    directory = resolve_model_dir(init_from)
    try:
        if (directory / "trainer.json").is_file():
            file = directory / "trainer.json"
            state = json.loads(file.read_text()).get("privacy")
            history, delta = (state["history"], state["delta"]) if state else ([], 0.0)
            accountant = state["accountant"] if state else "rdp"
        elif directory.name == "model" and (directory.parent / "summary.json").is_file():
            file = directory.parent / "summary.json"
            state = json.loads(file.read_text()).get("privacy")  # one noise and rate: resume keeps them
            history = [(state["noise_multiplier"], state["sample_rate"], state["steps"])] if state else []
            delta, accountant = (state["delta"], state["accountant"]) if state else (0.0, "rdp")
        else:
            return None
        history = [(float(s), float(q), int(n)) for s, q, n in history]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # a checkpoint's own checks name a damaged file when it is loaded
    if not history:
        return None
    accountants, _ = _opacus()
    probe = accountants.create_accountant(accountant if accountant in ("rdp", "prv") else "rdp")
    probe.history = history
    with _no_alpha_warning():
        epsilon = math.inf if any(s == 0 for s, _, _ in history) else float(probe.get_epsilon(delta=delta))
    return {"history": history, "delta": float(delta), "epsilon": epsilon, "file": str(file)}


def earlier_privacy_note(init_from: str, privacy: DPSGD | None, earlier: dict[str, Any]) -> str:
    """What the start-up lines say of a train.init_from trained with DP-SGD: a run's epsilon
    counts its own steps, so a run continuing on the same examples spends both runs' budgets."""
    steps = sum(n for _, _, n in earlier["history"])
    was = (
        f"train.init_from={init_from!r} was trained with DP-SGD (epsilon"
        f" {earlier['epsilon']:.3g} at delta {earlier['delta']:.3g} over {steps} steps, {earlier['file']})"
    )
    if privacy is None:
        return (
            f"{was}; this run trains without [privacy]: the model it writes has no DP guarantee for"
            " the examples this run reads"
        )
    both = privacy.composed_epsilon(earlier, privacy.planned_steps)
    return (
        f"{was}; this run's epsilon counts its own steps only: for examples both runs read, the"
        f" model's privacy loss is the two composed, epsilon {both:.3g} after this run's"
        f" {privacy.planned_steps} steps (summary.json's epsilon_with_init_from)"
    )
