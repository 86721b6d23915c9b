#!/usr/bin/env bash
# Multi-node training under SLURM: one torchrun per node, joined by torchrun's c10d rendezvous (notebook 08).
#
#   sbatch --nodes 4 scripts/slurm_train.sh teacher configs/teacher_paper.yaml --data runs/ljspeech_paper --batch-size 1
#   sbatch --nodes 4 scripts/slurm_train.sh student configs/student_paper.yaml --teacher runs/teacher_paper \
#       --data runs/ljspeech_paper --batch-size 1
#
# Arguments: KIND CONFIG [more python -m pwn_lib.train flags]. The run writes into runs/<kind>_paper unless
# --out is given. Global batch = --batch-size x grad_accum x nodes x GPUS_PER_NODE (printed at the start).
# --requeue plus the same command resumes a preempted job from the checkpoint that runs/<kind>_paper/LATEST names.
# runs/ (or --out) and the feature cache must be on a file system that every node sees: rank 0 writes the
# checkpoints and every rank resumes from them.
#SBATCH --job-name=pwn-train
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --time=48:00:00
#SBATCH --requeue
#SBATCH --output=runs/slurm-%j.out
set -euo pipefail

if [ $# -lt 2 ]; then
    echo "usage: sbatch [--nodes N] scripts/slurm_train.sh KIND CONFIG [python -m pwn_lib.train flags]" >&2
    exit 2
fi
kind=$1
config=$2
shift 2
gpus_per_node=${GPUS_PER_NODE:-8}
python=${PYTHON:-.venv/bin/python}
head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
port=${RDZV_PORT:-29500}

export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}  # per rank; the DataLoader workers have their own processes
# NCCL picks the fastest interconnect itself; set NCCL_SOCKET_IFNAME or NCCL_IB_HCA here if your site needs it.

srun --kill-on-bad-exit=1 "$python" -m torch.distributed.run \
    --nnodes "$SLURM_NNODES" --nproc_per_node "$gpus_per_node" \
    --rdzv_id "$SLURM_JOB_ID" --rdzv_backend c10d --rdzv_endpoint "$head_node:$port" \
    -m pwn_lib.train "$kind" --preset paper --config "$config" --out "runs/${kind}_paper" "$@"
