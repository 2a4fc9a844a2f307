#!/usr/bin/env bash
# Run a command as parallel local jobs, with Kaldi's run.pl interface (see the usage message).
set -euo pipefail

max_jobs_run=$(nproc)
report_only=false
# Options of utils/slurm.sh, accepted and ignored here so that cmd.sh can switch runners without
# changing the stages that call them.
# shellcheck disable=SC2034
{
  partition=""
  time=""
  gpus_per_task=""
  mem=""
  cpus_per_task=""
}
help_message="Usage: $0 [options] JOB=<first>:<last> <log-with-JOB> <command> [<arg>...]
   or: $0 [options] <log> <command> [<arg>...]
Runs the command once per job id, every 'JOB' in the log path and in the arguments replaced by
the id, at most --max-jobs-run at a time. Each log starts with the command and start time and
ends with the exit status ('# Ended (code N) ...'). Exits 1 if any job failed, naming its log.
Jobs running side by side share the cores: unless OMP_NUM_THREADS is set, each gets
nproc / (jobs at once) threads (at least 1), since torch and BLAS would otherwise each start one
thread per core and oversubscribe them (two 2-thread decoders on 2 cores ran 11x slower).
Arguments reach the command verbatim (quoted), except bare shell operators (\\|, \\>, 2\\>\\&1, \\&\\&,
...), which stay operators as in Kaldi: $0 JOB=1:4 log/x.JOB.log prog in.JOB \\| sort \\> out.JOB
Options:
  --max-jobs-run <n>     jobs running at once (default: nproc = $max_jobs_run)
  --report-only <bool>   run nothing, only check the logs of an earlier run (used by slurm.sh)
  --partition, --time, --gpus-per-task, --mem, --cpus-per-task <value>
                         accepted and ignored (utils/slurm.sh options)"
. "$(dirname "${BASH_SOURCE[0]}")/parse_options.sh"

usage_error() {
  echo "$0: $1" >&2
  printf '%s\n' "$help_message" >&2
  exit 1
}

(($# >= 2)) || usage_error "expected a log path and a command"
if [[ "$1" =~ ^([A-Za-z_][A-Za-z0-9_]*)=([0-9]+):([0-9]+)$ ]]; then
  job_var=${BASH_REMATCH[1]}
  first=$((10#${BASH_REMATCH[2]}))
  last=$((10#${BASH_REMATCH[3]}))
  shift
  ((first <= last)) || usage_error "empty job range $job_var=$first:$last"
  if ((first < last)) && [[ "$1" != *"$job_var"* ]]; then
    usage_error "log path '$1' must contain $job_var, or the jobs would share one log"
  fi
else
  job_var=""
  first=1
  last=1
fi
(($# >= 2)) || usage_error "expected a log path and a command"
[[ "$max_jobs_run" =~ ^[1-9][0-9]*$ ]] || usage_error "--max-jobs-run must be a positive integer"
log_template=$1
shift

operator_pattern='^([0-9]*(>|>>|<)(&[0-9]+|&-)?|&>|&>>|\||\|\||\|&|&&|;)$'

# with_job_id <id> <text>: the text with every job variable replaced by the id.
with_job_id() {
  if [[ -n "$job_var" ]]; then
    printf '%s' "${2//"$job_var"/$1}"
  else
    printf '%s' "$2"
  fi
}

# command_line <id> <arg>...: one bash command line, arguments quoted unless bare operators.
command_line() {
  local id=$1 arg words=()
  shift
  for arg in "$@"; do
    arg=$(with_job_id "$id" "$arg")
    if [[ "$arg" =~ $operator_pattern ]]; then
      words+=("$arg")
    else
      words+=("$(printf '%q' "$arg")")
    fi
  done
  printf '%s' "${words[*]}"
}

# run_job <id> <arg>...: run one job, its output and accounting into its log; never fails.
run_job() {
  local id=$1 log command start elapsed status=0
  shift
  log=$(with_job_id "$id" "$log_template")
  command=$(command_line "$id" "$@")
  start=$(date +%s)
  mkdir -p "$(dirname "$log")"
  printf '# %s\n# Started at %s\n#\n' "$command" "$(date)" >"$log"
  bash -o pipefail -c "$command" </dev/null >>"$log" 2>&1 || status=$?
  elapsed=$(($(date +%s) - start))
  printf '# Accounting: time=%d threads=1\n# Ended (code %d) at %s, elapsed time %d seconds\n' \
    "$elapsed" "$status" "$(date)" "$elapsed" >>"$log"
}

if [[ "$report_only" != true ]]; then
  at_once=$((last - first + 1 < max_jobs_run ? last - first + 1 : max_jobs_run))
  if ((at_once > 1)) && [[ -z "${OMP_NUM_THREADS:-}" ]]; then
    threads=$(($(nproc) / at_once))
    export OMP_NUM_THREADS=$((threads > 0 ? threads : 1))
  fi
  trap 'kill $(jobs -pr) 2>/dev/null; exit 130' INT TERM
  for ((id = first; id <= last; id++)); do
    while (($(jobs -pr | wc -l) >= max_jobs_run)); do
      wait -n || true
    done
    run_job "$id" "$@" &
  done
  wait
fi

# A job succeeded iff its log ends with the line run_job writes for exit code 0.
failed_logs=()
for ((id = first; id <= last; id++)); do
  log=$(with_job_id "$id" "$log_template")
  if [[ "$(tail -n 1 "$log" 2>/dev/null)" != "# Ended (code 0) "* ]]; then
    failed_logs+=("$log")
  fi
done
if ((${#failed_logs[@]} > 0)); then
  echo "$0: ${#failed_logs[@]} / $((last - first + 1)) jobs failed; see:" >&2
  printf '  %s\n' "${failed_logs[@]}" >&2
  exit 1
fi
