"""One run's folder, ``results/<sweep>/<run_id>/``: every file name, every write, the DONE and FAILED
markers, the claim that keeps a run to one process, and the readers. Nothing else spells a file name
of the run folder.

    spec.json      the run spec (the experiment)         rows.parquet   result rows
    meta.json      provenance, timings, settings          log.txt        the run's log
    checkpoint.pt  training state (resume, export)        profile.json   phase times (--profile)
    features.npz   feature views (analysis)               DONE           checksums of rows and meta
    FAILED         the error, its class and the execution options of the failed attempt
    .lock          held (flock) by the process running the run, which writes its host, PID and start time into it

Every file is written to a unique temporary name, flushed to disk and renamed, so a kill never
leaves a half-written file, and DONE is written last. DONE records the SHA-256 of rows.parquet and
meta.json, so a run whose results were damaged later reads as corrupt (and a rerun redoes it),
never as done.

An infrastructure failure (the folder deleted, read-only, full) is a failed run, environmental:
FAILED records it when it can be written; a folder that cannot be read or written reads as failed
by its condition, and the error that could not be recorded is raised as `NotRecorded`, one line
holding both errors.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any


from missbench.experiment.spec import RunSpec, canonical

if TYPE_CHECKING:  # pandas is imported where rows are read or written, so listing plugins does not pay for it
    import pandas as pd
from missbench.store import process

SPEC, ROWS, META, LOG = "spec.json", "rows.parquet", "meta.json", "log.txt"
CHECKPOINT, PROFILE, FEATURES = "checkpoint.pt", "profile.json", "features.npz"
DONE, FAILED, LOCK = "DONE", "FAILED", ".lock"
log = logging.getLogger("missbench")
#: What every reader says of a corrupt run.
REDO = "a rerun will redo it"
#: Seconds a claimant retries a taken lock: `RunFolder.is_claimed` takes it for an instant to test it.
CLAIM_PATIENCE_S = 0.5


class RunBusy(RuntimeError):
    """Another process holds the run's claim (it is running elsewhere)."""


class NotRecorded(RuntimeError):
    """A failure the run folder could not record (it cannot be written): the message holds the failure
    and the write error; the failure is chained as the cause."""


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a unique temporary file, fsync'ed before the rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # the rename itself, on file systems that support a folder fsync
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def json_bytes(obj: Any) -> bytes:
    """Readable, sorted JSON, as every JSON file of the store is written."""
    return (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode()


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, json_bytes(obj))


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()


def unreadable(error: BaseException) -> str:
    """Why a run's results count as corrupt when reading them failed, in one line."""
    return f"its results do not read ({type(error).__name__}: {' '.join(str(error).split())})"


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's content."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class RunFolder:
    """The folder of one run; cheap to create (nothing is read or written until asked)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @property
    def run_id(self) -> str:
        return self.path.name

    def file(self, name: str) -> Path:
        """The path of one of the folder's files (a name defined in this module)."""
        return self.path / name

    @property
    def log_path(self) -> Path:
        return self.path / LOG

    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT

    # --- state ---------------------------------------------------------------------------------

    def has_spec(self) -> bool:
        return (self.path / SPEC).exists()

    def problem(self) -> str | None:
        """Why a run with DONE cannot be trusted (a missing, unreadable or changed rows.parquet or meta.json), else None.
        A DONE written before checksums were recorded is checked by reading the parquet footer and the JSON."""
        try:
            record = json.loads((self.path / DONE).read_text() or "{}")
            for name in (ROWS, META):
                if not (self.path / name).exists():
                    return f"{name} is missing"
                want = record.get("sha256", {}).get(name)
                if want is not None and file_sha256(self.path / name) != want:
                    return f"{name} does not match its checksum in DONE"
            if not record.get("sha256"):
                import pyarrow.parquet as pq

                pq.read_metadata(self.path / ROWS)
                json.loads((self.path / META).read_text())
        except (OSError, ValueError) as e:  # pyarrow's errors are ValueErrors
            return unreadable(e)
        return None

    def state(self) -> str:
        """'done' (DONE, results intact), 'corrupt' (DONE, results damaged), 'failed' (FAILED, or a folder that
        cannot be read or written), 'incomplete' (started, no marker) or 'absent' (no folder)."""
        try:
            if (self.path / DONE).exists():
                return "done" if self.problem() is None else "corrupt"
            if (self.path / FAILED).exists():
                return "failed"
            if not self.path.exists():
                return "absent"
        except OSError:
            return "failed"
        return "incomplete" if self.writable() else "failed"

    def ended_at(self) -> float | None:
        """When the last attempt ended: the time DONE or FAILED was written (seconds since the epoch); None without either."""
        for name in (DONE, FAILED):
            try:
                return (self.path / name).stat().st_mtime
            except OSError:
                continue
        return None

    def writable(self) -> bool:
        """Whether this process may create files in the folder."""
        return os.access(self.path, os.W_OK | os.X_OK)

    def is_done(self) -> bool:
        return self.state() == "done"

    # --- one attempt -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def claim(self) -> Iterator[None]:
        """Hold the run for this process (an exclusive lock the OS drops when the holder dies) and write this
        process's identity into the lock file; `RunBusy` if another holds it, `NotRecorded` if the folder
        cannot be written."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            f = open(self.path / LOCK, "a+")
        except OSError as e:
            raise NotRecorded(f"run {self.run_id}: cannot claim {self.path} ({type(e).__name__}: {e})") from e
        with f:
            deadline = time.monotonic() + CLAIM_PATIENCE_S
            while True:
                try:
                    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise RunBusy(f"run {self.run_id} is running elsewhere (another process holds {self.path / LOCK})") from None
                    time.sleep(0.05)
            try:
                try:
                    f.truncate(0)
                    f.write(json.dumps(process.identity()))
                    f.flush()
                except OSError as e:
                    raise NotRecorded(f"run {self.run_id}: cannot write {self.path / LOCK} ({type(e).__name__}: {e})") from e
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def is_claimed(self) -> bool:
        """Whether some process holds the run's claim right now (tested by taking the lock for an instant)."""
        try:
            f = open(self.path / LOCK)
        except OSError:
            return False
        with f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        return False

    def holder(self) -> dict[str, Any] | None:
        """The identity (host, pid, start time) the last claimant wrote, or None; it holds the run while
        `is_claimed` (missbench.store.process.alive tells whether that process still runs)."""
        try:
            record = json.loads((self.path / LOCK).read_text())
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def start(self, spec: RunSpec, fresh: bool) -> None:
        """Begin an attempt: write spec.json (refusing a folder that holds another spec) and clear the
        markers; ``fresh`` also drops the checkpoint, so training starts from scratch instead of resuming."""
        self.path.mkdir(parents=True, exist_ok=True)
        spec_path = self.path / SPEC
        if spec_path.exists() and json.loads(spec_path.read_text()) != json.loads(canonical(spec.to_dict())):
            raise RuntimeError(f"{spec_path} holds a different spec than run {spec.run_id}; refusing to overwrite it")
        write_json(spec_path, spec.to_dict())
        for name in (DONE, FAILED) + ((CHECKPOINT,) if fresh else ()):
            (self.path / name).unlink(missing_ok=True)

    @contextlib.contextmanager
    def logging_to(self, logger: logging.Logger) -> Iterator[None]:
        """Send ``logger``'s records to log.txt for the duration."""
        handler = logging.FileHandler(self.path / LOG)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        try:
            yield
        finally:
            logger.removeHandler(handler)
            handler.close()

    def write_profile(self, profile: dict[str, Any]) -> None:
        write_json(self.path / PROFILE, profile)

    def write_features(self, case_ids: list[str], modalities: tuple[str, ...], views: dict[str, Any]) -> None:
        import numpy as np

        buf = io.BytesIO()
        np.savez(buf, case_ids=np.array(case_ids), modalities=np.array(modalities), **views)
        write_atomic(self.path / FEATURES, buf.getvalue())

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        import torch

        buf = io.BytesIO()
        torch.save(state, buf)
        write_atomic(self.path / CHECKPOINT, buf.getvalue())

    def load_checkpoint(self, map_location: Any) -> dict[str, Any] | None:
        """The saved training state, or None when there is none. A checkpoint that does not load is set
        aside as ``checkpoint.pt.corrupt`` with a warning (the run then starts from scratch)."""
        import torch

        path = self.path / CHECKPOINT
        if not path.exists():
            return None
        try:
            state = torch.load(path, map_location=map_location, weights_only=False)
            if not isinstance(state, dict) or "model" not in state or "step" not in state:
                raise ValueError("not a MissBench training state")
        except Exception as e:  # noqa: BLE001 - any unreadable file: truncated, garbage, another format
            os.replace(path, path.with_name(CHECKPOINT + ".corrupt"))
            log.warning("run %s: %s does not load (%s: %s); set aside as %s.corrupt, training starts from scratch",
                        self.run_id, path, type(e).__name__, e, CHECKPOINT)
            return None
        return state

    def finish(self, rows: pd.DataFrame, meta: dict[str, Any]) -> None:
        """Write rows.parquet and meta.json, then DONE with their checksums."""
        data = {ROWS: parquet_bytes(rows), META: json_bytes(meta)}
        for name, blob in data.items():
            write_atomic(self.path / name, blob)
        write_json(self.path / DONE, {"sha256": {name: hashlib.sha256(blob).hexdigest() for name, blob in data.items()}})

    def fail(self, error: BaseException, trace: str, execution: dict[str, Any], environmental: bool) -> None:
        """Record a failed attempt: the error class and message, whether it came from the execution
        environment (device, disk, memory) rather than the experiment, the execution options and the traceback.
        A folder deleted meanwhile is made again; one that cannot be written raises `NotRecorded`."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            write_json(self.path / FAILED, {"error": type(error).__name__, "message": str(error), "environmental": environmental,
                                            "execution": execution, "traceback": trace})
        except OSError as e:
            raise NotRecorded(f"run {self.run_id}: {type(error).__name__}: {error}; FAILED could not be written either "
                              f"({type(e).__name__}: {e})") from error

    # --- readers -------------------------------------------------------------------------------

    def spec(self) -> RunSpec:
        return RunSpec.from_dict(json.loads((self.path / SPEC).read_text()))

    def spec_dict(self) -> dict[str, Any]:
        return json.loads((self.path / SPEC).read_text())

    def rows(self) -> pd.DataFrame:
        import pandas as pd

        return pd.read_parquet(self.path / ROWS)

    def meta(self) -> dict[str, Any]:
        return json.loads((self.path / META).read_text())

    def profile(self) -> dict[str, Any]:
        """The phase times of ``--profile`` (profile.json)."""
        return json.loads((self.path / PROFILE).read_text())

    def failure(self) -> dict[str, Any]:
        """What FAILED records (a FAILED written as plain text reads as its traceback); for a folder that cannot be
        read or written (failed by its condition), an environmental failure saying so."""
        try:
            text = (self.path / FAILED).read_text()
        except OSError as e:
            why = f"{self.path} cannot be written" if isinstance(e, FileNotFoundError) else \
                f"{self.path / FAILED} cannot be read ({type(e).__name__}: {e.strerror})"
            return {"error": "", "message": why, "environmental": True, "execution": {}, "traceback": ""}
        try:
            record = json.loads(text)
        except ValueError:
            lines = text.strip().splitlines()
            return {"error": "", "message": lines[-1] if lines else "failed", "environmental": False, "execution": {}, "traceback": text}
        return record


def load_rows(sweep_dir: Path, run_ids: list[str] | None = None) -> pd.DataFrame:
    """Rows of the finished, intact runs in ``sweep_dir`` (only ``run_ids`` if given)."""
    dirs = [sweep_dir / r for r in run_ids] if run_ids is not None else sorted(p for p in sweep_dir.iterdir() if p.is_dir())
    frames = [folder.rows() for folder in map(RunFolder, dirs) if folder.is_done()]
    import pandas as pd

    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
