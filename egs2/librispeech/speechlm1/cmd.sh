# Sourced by speechlm.sh: how parallel jobs run (the Kaldi run.pl / slurm.pl interface).
#   local: utils/run.sh runs the jobs as processes on this machine
#   slurm: utils/slurm.sh submits the jobs to Slurm as a job array; add your site's options to
#          the commands below, e.g. "utils/slurm.sh --partition gpu --time 48:00:00"
#          (speechlm.sh adds --gpus-per-task for training with --ngpu)
cmd_backend=${cmd_backend:-local}

case "${cmd_backend}" in
  local)
    train_cmd="utils/run.sh"
    cuda_cmd="utils/run.sh"
    ;;
  slurm)
    train_cmd="utils/slurm.sh"
    cuda_cmd="utils/slurm.sh"
    ;;
  *)
    echo "cmd.sh: unknown cmd_backend '${cmd_backend}' (local or slurm)" >&2
    return 1
    ;;
esac
