#!/bin/bash
# Submits the arrays written by `python -m study sbatch t7-kl --seeds 2 --profile smoke --cluster local`, students after their teachers.
set -euo pipefail
cd "$(dirname "$0")"
teachers1=$(sbatch --parsable t7-kl.sbatch | cut -d';' -f1)
sbatch --dependency=afterany:$teachers1 t7-kl-students.sbatch
