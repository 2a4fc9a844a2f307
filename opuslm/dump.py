"""Sharded, resumable Kaldi ark/scp dumps of int32 token arrays (shared by the token dumpers).

A dump `<name>` in an output directory is written by N jobs; job J writes
`<name>.J.ark`, `<name>.J.scp` and `<name>.J.lengths` under temporary names, renames them into
place, and only then writes `<name>.J.done` (a JSON summary with a signature of the inputs).
A shard without a matching `.done` is partial or stale and is redone; a finished one is skipped.
`merge_shards` then writes `<name>.scp` (sorted by key) and the per-utterance length file, and
`<name>.done` marks the merged dump. `Dump.run` drives this: one shard in-process, or N jobs
through the recipe's `utils/run.sh` (local processes without it), logs in
`log/tokenize_<name>.JOB.log`. scp entries name the ark as `<output_dir>/<name>.J.ark` with the
output directory as given, so a relative one stays relative (Kaldi / ESPnet convention).

Arrays are stored in kaldiio's NPY ark records because Kaldi's binary format has no int32
matrices; `kaldiio.load_scp` returns them with their dtype and shape unchanged.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import kaldiio
import numpy as np

from opuslm.fileio import atomic_path, write_text_atomic  # noqa: F401  (re-exported)

logger = logging.getLogger(__name__)


class DumpError(RuntimeError):
    """A dump that cannot be written or merged; the message names the shard or utterance."""


def fingerprint(path: str | os.PathLike) -> str:
    """Path, size and mtime of a file, or of each file under a directory.

    Changes when an input is replaced or edited, so a dump made from older inputs is redone.
    """
    path = Path(path).resolve()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return "; ".join(f"{p} {p.stat().st_size} {p.stat().st_mtime_ns}" for p in files)


def split_for_job(keys: Sequence[str], job: int, nj: int) -> list[str]:
    """Job `job` (1-based) of `nj` gets a contiguous block, as Kaldi's split_data.sh does."""
    if not 1 <= job <= nj:
        raise DumpError(f"--job {job} is outside 1..{nj}")
    return list(keys[(job - 1) * len(keys) // nj : job * len(keys) // nj])


@dataclass(frozen=True)
class Shard:
    output_dir: Path
    name: str
    job: int

    def path(self, suffix: str) -> Path:
        return self.output_dir / f"{self.name}.{self.job}.{suffix}"

    def summary(self, signature: dict) -> dict | None:
        """The `.done` summary if this shard is finished with the same inputs, else None."""
        done = _read_json(self.path("done"))
        complete = all(self.path(s).is_file() for s in ("ark", "scp", "lengths"))
        return done if complete and done.get("signature") == signature else None


class ShardWriter:
    """Write one shard inside a `with` block; nothing is visible until `commit(summary)`.

    add(key, array): append one int32 array (any shape) under `key`.
    Leaving the block without commit (an error, or a job that stops early) discards the ark.
    """

    def __init__(self, shard: Shard, signature: dict) -> None:
        self.shard = shard
        self.signature = signature
        self.lengths: dict[str, int] = {}
        self._scp_lines: list[str] = []

    def __enter__(self) -> ShardWriter:
        self.shard.output_dir.mkdir(parents=True, exist_ok=True)
        self.shard.path("done").unlink(missing_ok=True)
        # The temp ark of a killed earlier attempt at this shard (no cleanup ran): as big as a
        # finished one, and never used.
        for stale in self.shard.output_dir.glob(f".{self.shard.path('ark').name}.*.tmp"):
            stale.unlink()
        fd, self._ark_tmp = tempfile.mkstemp(
            dir=self.shard.output_dir, prefix=f".{self.shard.path('ark').name}.", suffix=".tmp"
        )
        self._ark = os.fdopen(fd, "wb")
        return self

    def add(self, key: str, array: np.ndarray) -> None:
        # The scp points at the final ark name with the byte offset of the record after "key ".
        offset = self._ark.tell() + len(key.encode("utf-8")) + 1
        kaldiio.save_ark(
            self._ark,
            {key: np.asarray(array, dtype=np.int32)},
            write_function="numpy",
            write_kwargs={"allow_pickle": False},
        )
        self._scp_lines.append(f"{key} {self.shard.path('ark')}:{offset}\n")
        self.lengths[key] = int(np.shape(array)[0])

    def commit(self, summary: dict) -> None:
        """Flush the ark to disk and rename it into place, write scp and lengths, then the
        `.done` marker last."""
        self._ark.flush()
        os.fsync(self._ark.fileno())
        self._ark.close()
        os.replace(self._ark_tmp, self.shard.path("ark"))
        write_text_atomic(self.shard.path("scp"), "".join(self._scp_lines))
        lengths = "".join(f"{k} {n}\n" for k, n in self.lengths.items())
        write_text_atomic(self.shard.path("lengths"), lengths)
        done = {"signature": self.signature, **summary}
        write_text_atomic(self.shard.path("done"), json.dumps(done, indent=1) + "\n")

    def __exit__(self, *exc_info) -> None:
        self._ark.close()
        Path(self._ark_tmp).unlink(missing_ok=True)  # already renamed away after commit()


def merge_shards(
    output_dir: Path, name: str, nj: int, lengths_name: str, signature: dict
) -> dict[str, int | float]:
    """Concatenate the `nj` finished shards into `<name>.scp` and `lengths_name`, sorted by key.

    Returns the summed numeric fields of the shard summaries. Raises DumpError when a shard is
    not finished, a key repeats, or nothing at all was written.
    """
    scp_lines: dict[str, str] = {}
    length_lines: dict[str, str] = {}
    totals: dict[str, int | float] = {}
    for job in range(1, nj + 1):
        shard = Shard(output_dir, name, job)
        summary = shard.summary(signature)
        if summary is None:
            raise DumpError(f"{shard.path('done')}: shard {job} of {nj} is not finished")
        for key, value in summary.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                totals[key] = totals.get(key, 0) + value
        for line in shard.path("scp").read_text(encoding="utf-8").splitlines():
            key = line.split(maxsplit=1)[0]
            if key in scp_lines:
                raise DumpError(f"{shard.path('scp')}: key {key} also appears in another shard")
            scp_lines[key] = line
        for line in shard.path("lengths").read_text(encoding="utf-8").splitlines():
            length_lines[line.split(maxsplit=1)[0]] = line
    if not scp_lines:
        raise DumpError(f"{output_dir}: no utterance was written to any of the {nj} shards")
    keys = sorted(scp_lines)  # Python's str order is the C locale order Kaldi tools expect
    write_text_atomic(output_dir / lengths_name, "".join(length_lines[k] + "\n" for k in keys))
    write_text_atomic(output_dir / f"{name}.scp", "".join(scp_lines[k] + "\n" for k in keys))
    return totals


def run_jobs(
    argv: Sequence[str], nj: int, log_template: Path, runner: str = "utils/run.sh"
) -> None:
    """Run `argv` once per job with `JOB` replaced by 1..nj inside every argument, in parallel.

    Goes through the recipe's Kaldi-style job runner (`runner JOB=1:N log cmd...`) when it exists,
    so Slurm setups work, else starts the processes here. `log_template` contains `JOB`.
    """
    log_template.parent.mkdir(parents=True, exist_ok=True)
    if Path(runner).is_file():
        logger.info("running %d jobs through %s; logs: %s", nj, runner, log_template)
        command = [runner, f"JOB=1:{nj}", str(log_template), *argv]
        if subprocess.run(command, check=False).returncode != 0:
            raise DumpError(f"some of the {nj} jobs failed; see {log_template}")
        return
    logger.info("running %d jobs as local processes; logs: %s", nj, log_template)
    procs = []
    for job in range(1, nj + 1):
        # Same substitution as utils/run.sh (Kaldi's run.pl): JOB anywhere inside an argument.
        job_argv = [a.replace("JOB", str(job)) for a in argv]
        with open(str(log_template).replace("JOB", str(job)), "w", encoding="utf-8") as log:
            log.write(f"# {shlex.join(job_argv)}\n")
            log.flush()
            procs.append(subprocess.Popen(job_argv, stdout=log, stderr=subprocess.STDOUT))
    failed = [job for job, proc in enumerate(procs, 1) if proc.wait() != 0]
    if failed:
        logs = ", ".join(str(log_template).replace("JOB", str(j)) for j in failed)
        raise DumpError(f"jobs {failed} of {nj} failed; see {logs}")


@dataclass
class Dump:
    """What a dumper writes: `<output_dir>/<name>.scp` plus `<lengths_name>`, by `nj` jobs.

    module: the `python -m` module that re-runs itself as one job (`... --job J`).
    signature: everything the result depends on (input fingerprints, options); a shard or merged
        dump made with a different signature is redone.
    """

    output_dir: Path
    name: str
    lengths_name: str
    module: str
    nj: int
    signature: dict

    def run(
        self,
        argv: Sequence[str],
        job: int | None,
        write_shard: Callable[[ShardWriter, int], dict],
    ) -> dict | None:
        """Write shard `job`, or (job None) all shards, in parallel if nj > 1, then merge.

        write_shard(writer, job) adds the job's arrays and returns its summary (numbers are
        summed over shards). Returns the summary of what was asked for, None if already done.
        """
        if job is not None:
            summary = self._write(job, write_shard)
            if summary is not None:
                logger.info("job %d of %d: %s", job, self.nj, format_summary(summary))
            return summary
        merged = self.output_dir / f"{self.name}.done"
        scp = self.output_dir / f"{self.name}.scp"
        pending = [j for j in range(1, self.nj + 1) if not self._shard(j).summary(self.signature)]
        if not pending and scp.is_file() and _read_json(merged).get("signature") == self.signature:
            logger.info("%s is complete and up to date; nothing to do", scp)
            return None
        if self.nj == 1 and pending:
            self._write(1, write_shard)
        elif pending:
            job_argv = python_module_argv(self.module, [*argv, "--job", "JOB"])
            # Named by dump: the audio and text dumpers often share an output directory.
            log_template = self.output_dir / "log" / f"tokenize_{self.name}.JOB.log"
            run_jobs(job_argv, self.nj, log_template)
        totals = merge_shards(
            self.output_dir, self.name, self.nj, self.lengths_name, self.signature
        )
        write_text_atomic(merged, json.dumps({"signature": self.signature, **totals}) + "\n")
        logger.info("wrote %s: %s", scp, format_summary(totals))
        return totals

    def _shard(self, job: int) -> Shard:
        return Shard(self.output_dir, self.name, job)

    def _write(self, job: int, write_shard: Callable[[ShardWriter, int], dict]) -> dict | None:
        shard = self._shard(job)
        if shard.summary(self.signature):
            logger.info("shard %d of %d is already done; skipping it", job, self.nj)
            return None
        (self.output_dir / f"{self.name}.done").unlink(missing_ok=True)
        with ShardWriter(shard, self.signature) as writer:
            summary = write_shard(writer, job)
            writer.commit(summary)
        return summary


def format_summary(summary: dict) -> str:
    """`utterances 4, frames 810, hours 0.0045, skipped 0` (the numeric fields, in order)."""
    numbers = {k: v for k, v in summary.items() if isinstance(v, int | float)}
    return ", ".join(
        f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in numbers.items()
    )


def _read_json(path: Path) -> dict:
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return payload if isinstance(payload, dict) else {}


def python_module_argv(module: str, args: Sequence[str]) -> list[str]:
    """`python -m module args...` with this interpreter, for re-running a step as N jobs."""
    return [sys.executable, "-m", module, *args]
