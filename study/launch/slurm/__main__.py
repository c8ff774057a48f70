"""``python -m study.launch.slurm task RUNS.json INDEX``: one task of a plain sbatch array."""

import sys

from study.launch.slurm.task import main

sys.exit(main())
