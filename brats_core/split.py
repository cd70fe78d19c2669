"""Patient-level train/val/test split plus a k-fold partition, saved as JSON and shared by every model.

Cases are split by patient (:func:`patient_id`): BraTS 2023+ ids ``BraTS-<cohort>-<patient>-<timepoint>`` of one
patient stay together in one subset and one fold; any other case id is its own patient. The split is a
deterministic function of the sorted case ids and the seed. ``brats split`` (and ``brats compare``) first refuse
data holding one scan under two case ids (:mod:`brats_core.same_scan`: releases mixed).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from brats_core.errors import BratsError
from brats_core.helptext import PlainHelpFormatter, description

if TYPE_CHECKING:
    from brats_core.cases import CaseFiles

SUBSETS: tuple[str, ...] = ("train", "val", "test")
#: BraTS 2023+ case ids: ``BraTS-GLI-00017-001`` is timepoint 001 of patient ``BraTS-GLI-00017``.
_TIMEPOINT_RE = re.compile(r"^(BraTS-[A-Za-z]+-\d+)-\d+$", re.IGNORECASE)


def patient_id(case_id: str) -> str:
    """The patient of a case: the id without its timepoint for BraTS 2023+ names, else the case id itself."""
    match = _TIMEPOINT_RE.match(case_id)
    return match[1] if match else case_id


def group_by_patient(case_ids: list[str]) -> dict[str, list[str]]:
    """Sorted case ids of each patient, by patient id (sorted)."""
    groups: dict[str, list[str]] = defaultdict(list)
    for case_id in sorted(case_ids):
        groups[patient_id(case_id)].append(case_id)
    return dict(sorted(groups.items()))


def _held_out_sizes(n: int, n_val: int, n_test: int) -> tuple[int, int]:
    """Validation and test sizes for ``n`` cases: as requested while at most half the cases (and at least two)
    are held out; otherwise scaled down proportionally, keeping at least one case in each requested subset."""
    if n_val < 0 or n_test < 0:
        raise BratsError(f"split sizes must not be negative (val={n_val}, test={n_test})")
    held = n_val + n_test
    cap = max(n // 2, 2)
    if held <= cap and n - held >= 1:
        return n_val, n_test
    val = min(n_val, max(1, round(cap * n_val / held))) if n_val else 0
    if n_test:
        val = min(val, cap - 1)
    test = min(n_test, cap - val) if n_test else 0
    if n - val - test < 1 or (n_val and not val) or (n_test and not test):
        raise BratsError(f"{n} case(s) are too few for a split with val={n_val} and test={n_test}")
    return val, test


def make_split(
    case_ids: list[str], seed: int = 0, n_val: int = 3, n_test: int = 5, folds: int = 5
) -> dict:
    """Split ``case_ids`` into sorted train/val/test lists and a patient-level ``folds``-fold partition.

    Sizes count patients (:func:`patient_id`; one per case id unless BraTS 2023+ timepoints share one). For
    few patients the held-out sizes are scaled down (see :func:`_held_out_sizes`) and ``folds`` is capped at
    the number of patients; the ``note`` of the result says so.
    """
    ids = sorted(case_ids)
    if len(set(ids)) != len(ids):
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        raise BratsError(f"duplicate case ids {duplicates}: each case id must be named once")
    if folds < 2:
        raise BratsError(f"folds must be at least 2, got {folds}")
    groups = group_by_patient(ids)
    patients = list(groups)
    n = len(patients)
    unit = "cases" if n == len(ids) else "patients"
    val_size, test_size = _held_out_sizes(n, n_val, n_test)
    n_folds = min(folds, n)
    rng = np.random.default_rng(seed)
    order = [patients[i] for i in rng.permutation(n)]
    test, val, train = order[:test_size], order[test_size:test_size + val_size], order[test_size + val_size:]
    fold_order = [patients[i] for i in rng.permutation(n)]

    def cases_of(chosen: list[str]) -> list[str]:
        return sorted(case_id for patient in chosen for case_id in groups[patient])

    if unit == "cases":
        note = f"Patient-level split (one case id = one patient) of {n} cases, seed {seed}; "
    else:
        note = f"Patient-level split of {len(ids)} cases of {n} patients (timepoints kept together), seed {seed}; "
    note += "folds partition all cases for cross-validation."
    if (val_size, test_size) != (n_val, n_test):
        note += f" Scaled down for {n} {unit} from val={n_val}, test={n_test} to val={val_size}, test={test_size}."
    if n_folds != folds:
        note += f" Folds capped from {folds} to {n_folds} (one per {unit[:-1]})."
    split = {
        "seed": seed,
        "train": cases_of(train),
        "val": cases_of(val),
        "test": cases_of(test),
        "folds": [cases_of(fold_order[k::n_folds]) for k in range(n_folds)],
        "created": date.today().isoformat(),
        "note": note,
    }
    _validate(split, "<new split>")
    return split


def _validate(split: object, source: str, available_case_ids: list[str] | None = None) -> None:
    """Raise :class:`BratsError` naming ``source`` unless ``split`` is a well-formed split, disjoint by patient."""
    if not isinstance(split, dict):
        raise BratsError(f"{source}: a split must be a JSON object, got {type(split).__name__}")
    missing = [key for key in (*SUBSETS, "folds", "seed") if key not in split]
    if missing:
        raise BratsError(f"{source}: split lacks key(s) {missing}")
    if not isinstance(split["seed"], int):
        raise BratsError(f"{source}: 'seed' must be an integer")
    for key in SUBSETS:
        value = split[key]
        if not isinstance(value, list) or not all(isinstance(i, str) for i in value):
            raise BratsError(f"{source}: {key!r} must be a list of case id strings")
        if len(set(value)) != len(value):
            raise BratsError(f"{source}: {key!r} lists a case id more than once")
    patients = {key: {patient_id(i) for i in split[key]} for key in SUBSETS}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        overlap = sorted(set(split[a]) & set(split[b]))
        if overlap:
            raise BratsError(f"{source}: {a!r} and {b!r} share case ids {overlap} (patients must not overlap)")
        shared = sorted(patients[a] & patients[b])
        if shared:
            raise BratsError(
                f"{source}: {a!r} and {b!r} share patients {shared} (timepoints of one patient in two subsets)"
            )
    all_ids = set().union(*(split[key] for key in SUBSETS))
    folds = split["folds"]
    if not isinstance(folds, list) or not all(
        isinstance(fold, list) and all(isinstance(i, str) for i in fold) for fold in folds
    ):
        raise BratsError(f"{source}: 'folds' must be a list of lists of case id strings")
    fold_ids = [i for fold in folds for i in fold]
    if len(fold_ids) != len(set(fold_ids)) or set(fold_ids) != all_ids:
        raise BratsError(f"{source}: 'folds' must partition the train/val/test case ids, each exactly once")
    fold_patients = [{patient_id(i) for i in fold} for fold in folds]
    if sum(map(len, fold_patients)) != len(set().union(*fold_patients)):
        raise BratsError(f"{source}: 'folds' put timepoints of one patient in different folds")
    if available_case_ids is not None:
        unknown = sorted(all_ids - set(available_case_ids))
        if unknown:
            raise BratsError(f"{source}: case ids {unknown} are not among the available cases")


def save_split(split: dict, path: Path | str) -> Path:
    """Validate ``split`` and write it as indented JSON to ``path``."""
    path = Path(path)
    _validate(split, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(split, indent=2) + "\n")
    return path


def load_split(path: Path | str, available_case_ids: list[str] | None = None) -> dict:
    """Read and validate a split; with ``available_case_ids`` every listed case must be available."""
    path = Path(path)
    try:
        split = json.loads(path.read_text())
    except FileNotFoundError:
        raise BratsError(f"{path}: split file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BratsError(f"{path}: not a readable JSON split ({exc})") from None
    _validate(split, str(path), available_case_ids)
    return split


@contextmanager
def split_case_files(data: Path | str, split_path: Path | str) -> Iterator[dict[str, list[CaseFiles]]]:
    """The cases of ``data`` (found once; a zip stays extracted inside the ``with`` block) in each subset of the
    split at ``split_path``, in split order.

    Raises :class:`BratsError` when the split is invalid or lists a case that ``data`` does not hold.
    """
    from brats_core.cases import open_cases

    with open_cases(data) as found:
        files = {case.case_id: case for case in found}
        split = load_split(split_path, available_case_ids=list(files))
        yield {key: [files[case_id] for case_id in split[key]] for key in SUBSETS}


def fold_splits(split: dict, k: int, seed: int) -> list[dict]:
    """One split per fold: test = fold f, val and train from the other folds (val as large as the split's own).

    Uses the split's ``folds`` when it has ``k`` of them, else a fresh patient-level ``k``-fold partition
    (:func:`make_split`) of all its cases. Validation patients are drawn whole (all their
    timepoints, :func:`patient_id`); each fold keeps at least two training patients.
    """
    all_ids = sorted({i for key in ("train", "val", "test") for i in split[key]})
    folds = split["folds"] if len(split["folds"]) == k else make_split(all_ids, seed=seed, folds=k)["folds"]
    if len(folds) != k:
        raise BratsError(f"{len(all_ids)} cases are too few for {k} folds")
    out = []
    for f, fold in enumerate(folds):
        rest = group_by_patient(sorted(set(all_ids) - set(fold)))
        patients = list(rest)
        n_val = min(max(len({patient_id(i) for i in split["val"]}), 1), max(len(patients) - 2, 0))
        order = [rest[patients[i]] for i in np.random.default_rng([seed, f]).permutation(len(patients))]
        out.append({
            "seed": seed, "train": sorted(i for ids in order[n_val:] for i in ids),
            "val": sorted(i for ids in order[:n_val] for i in ids), "test": sorted(fold),
            "folds": [sorted(fold_) for fold_ in folds], "created": date.today().isoformat(),
            "note": f"Fold {f + 1} of {k}: test = fold {f + 1}; {n_val} validation patient(s) drawn from the "
                    f"other folds with seed {seed}; the rest train.",
        })  # fmt: skip
    return out


def all_cases_split(split: dict, note: str) -> dict:
    """The split of a final model: every case of ``split`` trains (no validation, no test), folds kept."""
    ids = sorted(i for key in SUBSETS for i in split[key])
    return {"seed": split["seed"], "train": ids, "val": [], "test": [], "folds": split["folds"],
            "created": date.today().isoformat(), "note": note}


def main(argv: list[str]) -> int:
    from brats_core.cases import open_cases
    from brats_core.same_scan import check_distinct_scans

    parser = argparse.ArgumentParser(prog="brats split", description=description(__doc__),
                                     formatter_class=PlainHelpFormatter)
    parser.add_argument("data_dir", type=Path, help="folder (or .zip) of cases; case ids are the patients")
    parser.add_argument("--out", type=Path, help="JSON file to write (default: print the split to stdout)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val", type=int, default=3, help="number of validation cases")
    parser.add_argument("--test", type=int, default=5, help="number of test cases")
    parser.add_argument("--folds", type=int, default=5, help="number of cross-validation folds")
    args = parser.parse_args(argv)
    with open_cases(args.data_dir) as found:
        case_ids = [case.case_id for case in found]
        check_distinct_scans(found, str(args.data_dir))
    split = make_split(case_ids, seed=args.seed, n_val=args.val, n_test=args.test, folds=args.folds)
    if args.out is None:
        print(json.dumps(split, indent=2))
        return 0
    save_split(split, args.out)
    sizes = ", ".join(f"{len(split[key])} {key}" for key in SUBSETS)
    print(f"wrote {args.out}: {sizes}, {len(split['folds'])} folds", file=sys.stderr)
    print(split["note"], file=sys.stderr)
    return 0
