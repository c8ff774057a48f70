"""Optuna search over the weights of the hybrid distillation loss (Eq. 12).

Each trial is one run in the results store: the student (Table 7's full
strategy row) with the trial's weights, its checkpoint picked on a holdout part
carved from the TRAINING split (``train.selection = holdout``), and its value
the student's DSC on that holdout part. The test split never enters the
objective. The teacher is the full model with the same protocol, from the
store (trained into it first if missing).

One concept per module:

- ``space``    the weights searched, the official ones (trial 0), and ``TuneSpec``
- ``storage``  the study's journal (or RDB URL): opened, torn records set aside, created
- ``workers``  claiming trials, training them, reaping trials whose worker died
- ``results``  best trials and importances; the best weights exported as a variants row
- ``slurm``    the workers as a SLURM array
"""
