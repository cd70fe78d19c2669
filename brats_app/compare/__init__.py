"""``brats compare``: every model on the same test cases, split and metric, in one table.

Modules: :mod:`.runner` (train or load, predict and score one split), :mod:`.families` (how each model family
is trained), :mod:`.folds` (the split and its cross-validation folds), :mod:`.report` (CSV, Markdown,
figures) and :mod:`.cli` (the command).

    brats compare --data DIR [--split FILE] [--use-shipped] [--out results/] [--models naive,ridge,...]
    brats compare --data DIR --folds 5          # patient-level cross-validation

Trains (or, with ``--use-shipped``, loads the shipped checkpoints of) Naive, Ridge, Decision tree, KNN, Ensemble,
U-Net and U-Net + SSPP on the split's train (and val) cases, loads each test case once, lets every model
predict it and scores all of them with the shared harness (:mod:`brats_core.evaluation`: 3D per case in the
original voxel space, WT/TC/ET Dice and HD95). A model that fails (training, loading or any prediction) is
reported in its row; the others go on.

Writes under ``--out``: ``compare.md`` and ``compare.csv`` (per model: mean and sd of Dice and HD95 per region,
the original project's legacy slice score, training time, prediction time per case), ``compare_dice.png``
(per-case Dice per model and region), ``compare_case.png`` (the test slice with the largest tumour: modalities,
truth and every prediction), and per model ``compare/<model>/`` with the harness's ``per_case.csv``,
``summary.json`` and ``summary.md`` and the trained checkpoint (``compare/fold_<k>/<model>/`` per fold).

``--folds K`` trains on K-1 folds and tests on the remaining one, for each of the split's ``folds`` (a fresh
patient-level K-fold partition of the split's cases when the split holds another number of folds); the
validation cases of a fold come from its training folds. Rows per fold and pooled over all cases.

Expected time of ``--folds 5`` on the BraTS 2020 training set (369 cases: per fold ~74 test and ~295 training
cases), one GPU and 16 CPU cores, default options: about 6-7 h, mostly CPU-bound.

- naive atlas: ~1-2 s per training case, ~5 min per fold;
- classical models: ~2-6 s per training case (one load, preprocessing, features of 4,000 voxels) plus tuning on
  the validation cases, ~20 min per fold;
- U-Net and U-Net + SSPP: the slice cache is built once (~2 s per case), then per model and fold 160,000
  training slices (40 epochs x 250 steps x batch 16) plus 40 validations, ~3-5 min at the rates measured on one
  H200 with both models training at once, data loading included (U-Net ~1,100, SSPP ~600 slices/s);
- prediction and scoring: each of the 369 cases once, ~25 s for all seven models (every classical model computes
  its own features; KNN queries; 3D HD95 at ~0.6 s per case and model), ~2.5 h.

Measured on 2 shared CPU cores with 240x240x155 cases (``--models naive,ridge`` on the 20 shared cases):
loading 2.3 s per case, naive fit 2.2 s per training case, ridge features 8.3 s per training case (measured
when each training case was still loaded twice, once for the atlas and once for the features; it is now loaded
once) and tuning 25 s per validation case, prediction 0.13 s (naive) and 5-9 s
(ridge) per case, scoring 0.6 s per case and model.
"""
