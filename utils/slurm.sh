#!/usr/bin/env bash
# Run a command as a Slurm job array (sbatch --wait), with the interface of utils/run.sh.
set -euo pipefail

# The sbatch options are read through ${!option} below.
# shellcheck disable=SC2034
{
  partition=""
  time=""
  gpus_per_task=""
  mem=""
  cpus_per_task=""
}
max_jobs_run=""
help_message="Usage: $0 [options] JOB=<first>:<last> <log-with-JOB> <command> [<arg>...]
   or: $0 [options] <log> <command> [<arg>...]
Submits one Slurm job array (sbatch --wait --array=<first>-<last>) and waits for it. Each array
task runs its job through utils/run.sh, so JOB substitution, quoting and logs are those of a local
run; the batch script and Slurm's own output go to <log dir>/q/. Exits 1 if any job failed, naming
its log.
Options (passed to sbatch when set):
  --partition <name>  --time <limit>  --gpus-per-task <n>  --mem <size>  --cpus-per-task <n>
  --max-jobs-run <n>  at most n array tasks at once (--array=<first>-<last>%n)"
. "$(dirname "${BASH_SOURCE[0]}")/parse_options.sh"

(($# >= 2)) || {
  printf '%s\n' "$help_message" >&2
  exit 1
}
utils=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [[ "$1" =~ ^([A-Za-z_][A-Za-z0-9_]*)=([0-9]+):([0-9]+)$ ]]; then
  job_spec=$1
  job_var=${BASH_REMATCH[1]}
  array="$((10#${BASH_REMATCH[2]}))-$((10#${BASH_REMATCH[3]}))"
  shift
else
  job_spec=""
  job_var=""
  array="1-1"
fi
(($# >= 2)) || {
  printf '%s\n' "$help_message" >&2
  exit 1
}
log_template=$1
shift

# exp/log/tok.JOB.log -> job name "tok", files exp/log/q/tok.sh and exp/log/q/tok.<task>.out
name=$(basename "$log_template")
if [[ -n "$job_var" ]]; then
  name=${name//".$job_var"/}
fi
name=${name%.*}
queue_dir="$(dirname "$log_template")/q"
mkdir -p "$queue_dir"
# A log left by an earlier run must not pass for the result of a task that never started.
for ((id = ${array%-*}; id <= ${array#*-}; id++)); do
  rm -f "${log_template//"$job_var"/$id}"
done
script="$queue_dir/$name.sh"
# The task runs the same utils/run.sh with a one-job range, from the submitting directory.
# shellcheck disable=SC2016  # expanded by the task, not here
task_spec='"'"$job_var"'=${SLURM_ARRAY_TASK_ID}:${SLURM_ARRAY_TASK_ID}"'
{
  echo '#!/usr/bin/env bash'
  echo "# Written by $0; one task of a Slurm job array."
  echo 'set -euo pipefail'
  printf 'cd %q\n' "$PWD"
  printf 'exec %q --max-jobs-run 1 %s' "$utils/run.sh" "${job_spec:+$task_spec}"
  printf ' %q' "$log_template" "$@"
  echo
} >"$script"

sbatch_args=(--wait "--array=$array${max_jobs_run:+%$max_jobs_run}" "--job-name=$name"
  "--output=$queue_dir/$name.%a.out")
for option in partition time gpus_per_task mem cpus_per_task; do
  if [[ -n "${!option}" ]]; then
    sbatch_args+=("--${option//_/-}=${!option}")
  fi
done
sbatch "${sbatch_args[@]}" "$script" >&2 || echo "$0: sbatch exited with $?; checking the logs" >&2
exec "$utils/run.sh" --report-only true ${job_spec:+"$job_spec"} "$log_template" "$@"
