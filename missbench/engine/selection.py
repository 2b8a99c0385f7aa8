"""Model selection on the validation split: the weights that score best are kept and restored after training."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from missbench.core.method import Method

log = logging.getLogger("missbench")


@dataclass
class Selection:
    """``score(method)`` (higher is better) every ``period`` iterations after the method's last stage and
    at the end; the best weights are kept (in the checkpoint too)."""

    score: Callable[[Method], float]
    period: int
    #: What the score is, for meta.json.
    criterion: str
    best_step: int = -1
    best_score: float = -math.inf
    best_model: dict[str, torch.Tensor] | None = None
    history: list[tuple[int, float]] = field(default_factory=list)

    def update(self, step: int, method: Method) -> None:
        method.eval()
        with torch.inference_mode():
            value = float(self.score(method))
        method.train()
        self.history.append((step, value))
        if value > self.best_score:
            self.best_step, self.best_score = step, value
            self.best_model = {k: v.detach().clone() for k, v in method.state_dict().items()}
        log.info("iteration %d validation score %.4f (best %.4f at iteration %d)", step, value, self.best_score, self.best_step)

    def state(self) -> dict[str, Any]:
        return {"best_step": self.best_step, "best_score": self.best_score, "best_model": self.best_model, "history": list(self.history)}

    def load(self, state: dict[str, Any]) -> None:
        self.best_step, self.best_score, self.best_model = state["best_step"], state["best_score"], state["best_model"]
        self.history = list(state["history"])

    def meta(self) -> dict[str, Any]:
        """What meta.json records about the selection."""
        return {"split": "val", "score": self.criterion, "selected_iteration": self.best_step,
                "val_score": self.best_score, "history": self.history}
