"""Where a trained model came from, in one shape for every model family.

Every segmenter exposes ``.provenance`` (a :class:`Provenance`), read from its checkpoint: the cases it was
trained and tuned on (``brats compare --use-shipped`` refuses a model that has seen a test case), its
validation scores, how long training took and on what machine.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import date


@dataclass(frozen=True)
class Provenance:
    """The training record of one checkpoint; ``None`` where the checkpoint did not record it."""

    train_cases: tuple[str, ...] = ()
    #: Cases used for validation or tuning (thresholds, early stopping): seen by the model, never test cases.
    val_cases: tuple[str, ...] = ()
    #: Scores measured without the test cases (validation or leave-one-out Dice), by name.
    cv_scores: Mapping[str, float] | None = None
    train_seconds: float | None = None
    hardware: str | None = None
    #: ISO date the checkpoint was written.
    created: str | None = None

    @property
    def seen_cases(self) -> tuple[str, ...]:
        """Every case the checkpoint was trained or tuned on."""
        return (*self.train_cases, *self.val_cases)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["train_cases"], data["val_cases"] = list(self.train_cases), list(self.val_cases)
        data["cv_scores"] = None if self.cv_scores is None else dict(self.cv_scores)
        return data

    @classmethod
    def from_dict(cls, data: Mapping) -> Provenance:
        known = {key: data[key] for key in ("cv_scores", "train_seconds", "hardware", "created") if key in data}
        return cls(train_cases=_ids(data.get("train_cases")), val_cases=_ids(data.get("val_cases")), **known)


def _ids(values: Iterable[str] | None) -> tuple[str, ...]:
    return tuple(str(v) for v in values or ())


def this_machine() -> str:
    """Platform and CPU count of the running machine, for :attr:`Provenance.hardware`."""
    return f"{platform.platform()}, {os.cpu_count()} CPUs"


def today() -> str:
    return date.today().isoformat()
