"""The folders of the store: a model's, ``results/<sweep>/<model_id>/``, holding any number of scores,
each a folder ``<score_id>/`` inside it (so a run's key ``<model id>/<score id>`` is its path in the
sweep): every file name, every write, the DONE and FAILED markers, the claim that keeps a model to one
process, and the readers. Nothing else spells a file name of the store.

    <model_id>/    model.json     the model spec (its identity)     meta.json     training record, provenance
                   request.json   labels, scores asked (any time)   log.txt       the log of every attempt
                   checkpoint.pt  training state (resume, scoring)
                   profile.json   training phase times (--profile)  DONE          checksums of meta and checkpoint
                   FAILED         the error of a failed training   .lock         held (flock) by the running process
      <score_id>/  score.json  rows.parquet  meta.json  features.npz  profile.json  DONE | FAILED

Every file is written to a unique temporary name, flushed to disk and renamed, so a kill never
leaves a half-written file, and DONE is written last. A score's DONE records the SHA-256 of its rows
and meta, a model's the SHA-256 of its meta and checkpoint (whose size is checked on every read and
whose hash when it is loaded for scoring), so results damaged later read as corrupt (a rerun redoes
them), never as done. Each score is complete on its own: a failed score leaves its model and the
other scores as they are.

A run folder written before models and scores were separate (``spec.json`` beside rows.parquet)
reads as a model with one score, the folder itself (`ModelFolder.legacy`).

An infrastructure failure (the folder deleted, read-only, full) is a failure, environmental: FAILED
records it when it can be written; a folder that cannot be read or written reads as failed by its
condition, and the error that could not be recorded is raised as `NotRecorded`, one line holding both.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from missbench.experiment.spec import ModelSpec, ScoreSpec, canonical
from missbench.store import legacy, process
from missbench.store.state import State

if TYPE_CHECKING:  # pandas is imported where rows are read or written, so listing plugins does not pay for it
    import pandas as pd

MODEL, SCORE, LEGACY_SPEC, REQUEST = "model.json", "score.json", "spec.json", "request.json"
ROWS, META, LOG = "rows.parquet", "meta.json", "log.txt"
CHECKPOINT, PROFILE, FEATURES = "checkpoint.pt", "profile.json", "features.npz"
DONE, FAILED, LOCK = "DONE", "FAILED", ".lock"
log = logging.getLogger("missbench")
#: What every reader says of a corrupt model or score.
REDO = "a rerun will redo it"
#: Seconds a claimant retries a taken lock: `ModelFolder.is_claimed` takes it for an instant to test it.
CLAIM_PATIENCE_S = 0.5


class RunBusy(RuntimeError):
    """Another process holds the model's claim (it is running elsewhere)."""


class NotRecorded(RuntimeError):
    """A failure the folder could not record (it cannot be written): the message holds the failure and the
    write error; the failure is chained as the cause."""


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
    """Why results count as corrupt when reading them failed, in one line."""
    return f"its results do not read ({type(error).__name__}: {' '.join(str(error).split())})"


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's content."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Artefact:
    """What a model folder and a score folder share: the DONE and FAILED markers, their state and readers.
    Cheap to create (nothing is read or written until asked)."""

    #: The files DONE checksums (all of them must exist).
    checked: tuple[str, ...] = (META,)

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def file(self, name: str) -> Path:
        """The path of one of the folder's files (a name defined in this module)."""
        return self.path / name

    def problem(self) -> str | None:
        """Why an artefact with DONE cannot be trusted (a checked file missing, unreadable or changed), else None.
        A DONE written before checksums were recorded is checked by reading the parquet footer and the JSON."""
        try:
            record = json.loads((self.path / DONE).read_text() or "{}")
            if not isinstance(record, dict):
                return f"{DONE} is not a MissBench marker"
            if not isinstance(record.get("sha256", {}), dict) or not isinstance(record.get("size", {}), dict):
                return f"{DONE} is not a MissBench marker"
            sizes = record.get("size", {})
            for name in self.checked:
                if not (self.path / name).exists():
                    return f"{name} is missing"
                if name in sizes:  # large files: their size on every read, their hash when they are loaded
                    if (self.path / name).stat().st_size != sizes[name]:
                        return f"{name} does not match its size in DONE"
                    continue
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

    def state(self) -> State:
        """DONE (files intact), CORRUPT (DONE, files damaged), FAILED (FAILED, or a folder that cannot be read or
        written), INCOMPLETE (started, no marker) or ABSENT (no folder)."""
        try:
            if (self.path / DONE).exists():
                return State.DONE if self.problem() is None else State.CORRUPT
            if (self.path / FAILED).exists():
                return State.FAILED
            if not self.path.exists():
                return State.ABSENT
        except OSError:
            return State.FAILED
        return State.INCOMPLETE if self.writable() else State.FAILED

    def is_done(self) -> bool:
        return self.state() is State.DONE

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

    def _start(self, spec_file: str, spec: dict[str, Any], clear: tuple[str, ...]) -> None:
        """Write the spec (refusing a folder that holds another one) and clear the markers and ``clear``."""
        self.path.mkdir(parents=True, exist_ok=True)
        spec_path = self.path / spec_file
        if spec_path.exists() and json.loads(spec_path.read_text()) != json.loads(canonical(spec)):
            raise RuntimeError(f"{spec_path} holds a different spec; refusing to overwrite it")
        write_json(spec_path, spec)
        for name in (DONE, FAILED, *clear):
            (self.path / name).unlink(missing_ok=True)

    def _done(self, hashed: dict[str, bytes], sized: tuple[str, ...] = ()) -> None:
        """Write DONE: the SHA-256 of ``hashed`` (written just before), and of the files ``sized`` with their sizes."""
        record: dict[str, Any] = {"sha256": {name: hashlib.sha256(blob).hexdigest() for name, blob in hashed.items()}}
        for name in sized:
            record["sha256"][name] = file_sha256(self.path / name)
            record.setdefault("size", {})[name] = (self.path / name).stat().st_size
        write_json(self.path / DONE, record)

    def fail(self, error: BaseException, trace: str, execution: dict[str, Any], environmental: bool) -> None:
        """Record a failed attempt: the error class and message, whether it came from the execution environment
        (device, disk, memory) rather than the experiment, the execution options and the traceback. A folder
        deleted meanwhile is made again; one that cannot be written raises `NotRecorded`."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            write_json(self.path / FAILED, {"error": type(error).__name__, "message": str(error), "environmental": environmental,
                                            "execution": execution, "traceback": trace})
        except OSError as e:
            raise NotRecorded(f"{self.path.name}: {type(error).__name__}: {error}; FAILED could not be written either "
                              f"({type(e).__name__}: {e})") from error

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
            record = None
        if not isinstance(record, dict):
            lines = text.strip().splitlines()
            return {"error": "", "message": lines[-1] if lines else "failed", "environmental": False, "execution": {}, "traceback": text}
        return record

    def meta(self) -> dict[str, Any]:
        """meta.json; a ValueError when it is not a mapping (its readers count the results as unreadable)."""
        meta = json.loads((self.path / META).read_text())
        if not isinstance(meta, dict):
            raise ValueError(f"{self.path / META} is not a mapping")
        return meta

    def write_profile(self, profile: dict[str, Any]) -> None:
        write_json(self.path / PROFILE, profile)

    def profile(self) -> dict[str, Any]:
        """The phase times of ``--profile`` (profile.json)."""
        return json.loads((self.path / PROFILE).read_text())


class ScoreFolder(Artefact):
    """One score of a model: its spec, rows and meta, complete on its own. A legacy run folder is its own score."""

    checked = (ROWS, META)

    def __init__(self, path: Path, model_id: str, legacy_run: bool = False) -> None:
        super().__init__(path)
        self.model_id = model_id
        #: A run folder written before models and scores were separate, read as its model's one score.
        self.legacy = legacy_run

    @property
    def score_id(self) -> str:
        return legacy.SCORE_ID if self.legacy else self.path.name

    @property
    def run_id(self) -> str:
        """How rows and tables name this score: ``<model id>/<score id>``; a legacy run by its own id."""
        return self.model_id if self.legacy else f"{self.model_id}/{self.score_id}"

    def has_spec(self) -> bool:
        return (self.path / (LEGACY_SPEC if self.legacy else SCORE)).exists()

    def spec_dict(self) -> dict[str, Any]:
        """The score spec as stored (a legacy run's, converted)."""
        if self.legacy:
            return legacy.score_dict(json.loads((self.path / LEGACY_SPEC).read_text()), self.model_id, self._legacy_meta())
        return json.loads((self.path / SCORE).read_text())

    def spec(self) -> ScoreSpec:
        return ScoreSpec.from_dict(self.spec_dict())

    def labels(self) -> dict[str, Any]:
        """The labels of the request that made the score (protocol, mode, budget name), from its meta or legacy spec."""
        if self.legacy:
            return legacy.labels(json.loads((self.path / LEGACY_SPEC).read_text()))
        return self.meta().get("labels", {})

    def _legacy_meta(self) -> dict[str, Any]:
        try:
            return self.meta()
        except (OSError, ValueError):
            return {}

    def start(self, score: ScoreSpec, fresh: bool) -> None:
        """Begin an attempt: score.json and cleared markers (``fresh`` drops the features too)."""
        self._start(SCORE, score.to_dict(), (FEATURES,) if fresh else ())

    def finish(self, rows: pd.DataFrame, meta: dict[str, Any]) -> None:
        """Write rows.parquet and meta.json, then DONE with their checksums."""
        data = {ROWS: parquet_bytes(rows), META: json_bytes(meta)}
        for name, blob in data.items():
            write_atomic(self.path / name, blob)
        self._done(data)

    def write_features(self, case_ids: list[str], modalities: tuple[str, ...], views: dict[str, Any]) -> None:
        import numpy as np

        buf = io.BytesIO()
        np.savez(buf, case_ids=np.array(case_ids), modalities=np.array(modalities), **views)
        write_atomic(self.path / FEATURES, buf.getvalue())

    def rows(self) -> pd.DataFrame:
        import pandas as pd

        return pd.read_parquet(self.path / ROWS)


class ModelFolder(Artefact):
    """The folder of one model and its scores."""

    checked = (META, CHECKPOINT)

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        #: The open lock file while this process holds the claim.
        self._held: Any = None
        #: A run folder written before models and scores were separate: the model of its one score.
        self.legacy = (self.path / LEGACY_SPEC).exists() and not (self.path / MODEL).exists()
        if self.legacy:
            self.checked = (ROWS, META)

    @property
    def model_id(self) -> str:
        return self.path.name

    @property
    def log_path(self) -> Path:
        return self.path / LOG

    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT

    def has_spec(self) -> bool:
        return (self.path / (LEGACY_SPEC if self.legacy else MODEL)).exists()

    def spec_dict(self) -> dict[str, Any]:
        """The model spec as stored (a legacy run's, converted: results version 0, the plugin hashes of its meta)."""
        if self.legacy:
            try:
                meta = self.meta()
            except (OSError, ValueError):
                meta = {}
            return legacy.model_dict(json.loads((self.path / LEGACY_SPEC).read_text()), meta, self.model_id)
        return json.loads((self.path / MODEL).read_text())

    def spec(self) -> ModelSpec:
        return ModelSpec.from_dict(self.spec_dict())

    def problem(self) -> str | None:
        """As `Artefact.problem`; a model without a checkpoint (a timing measurement) checks its meta only."""
        if not self.legacy and (self.path / DONE).exists():
            try:
                record = json.loads((self.path / DONE).read_text() or "{}")
            except (OSError, ValueError) as e:
                return unreadable(e)
            if isinstance(record, dict) and CHECKPOINT not in record.get("sha256", {}):
                self.checked = (META,)
        return super().problem()

    # --- scores ----------------------------------------------------------------------------------

    def score(self, score_id: str) -> ScoreFolder:
        """The folder of one score of this model (a legacy run's own score by its id ``legacy.SCORE_ID``)."""
        if self.legacy and score_id == legacy.SCORE_ID:
            return ScoreFolder(self.path, self.model_id, legacy_run=True)
        return ScoreFolder(self.path / score_id, self.model_id)

    def scores(self) -> list[ScoreFolder]:
        """Every score folder of the model, a legacy run's own first, then by id."""
        own = [ScoreFolder(self.path, self.model_id, legacy_run=True)] if self.legacy else []
        try:
            found = sorted(p for p in self.path.iterdir() if p.is_dir() and not p.name.startswith("."))
        except OSError:
            found = []
        return own + [ScoreFolder(p, self.model_id) for p in found]

    # --- one attempt -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def claim(self) -> Iterator[None]:
        """Hold the model for this process (an exclusive lock the OS drops when the holder dies) and write this
        process's identity into the lock file; `RunBusy` if another holds it, `NotRecorded` if the folder
        cannot be written. Temporary files left by a writer that was killed mid-write are removed: while the
        claim is held no other process writes in the folder."""
        f = self._lock(wait=True)
        self._held = f
        try:
            try:
                f.truncate(0)
                f.write(json.dumps(process.identity()))
                f.flush()
            except OSError as e:
                raise NotRecorded(f"model {self.model_id}: cannot write {self.path / LOCK} ({type(e).__name__}: {e})") from e
            self._remove_temporaries()
            yield
        finally:
            for held in {id(x): x for x in (self._held, f) if x is not None}.values():  # check_claim may have re-taken it
                with contextlib.suppress(OSError, ValueError):
                    fcntl.flock(held.fileno(), fcntl.LOCK_UN)
                held.close()
            self._held = None

    def _lock(self, wait: bool) -> Any:
        """The open lock file, locked exclusively (retried for `CLAIM_PATIENCE_S` with ``wait``); a lock file deleted
        or replaced between opening and locking is opened again, so the lock held is always the file's at .lock."""
        deadline = time.monotonic() + (CLAIM_PATIENCE_S if wait else 0)
        while True:
            try:
                self.path.mkdir(parents=True, exist_ok=True)
                f = open(self.path / LOCK, "a+")
            except OSError as e:
                raise NotRecorded(f"model {self.model_id}: cannot claim {self.path} ({type(e).__name__}: {e})") from e
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                if time.monotonic() > deadline:
                    raise RunBusy(f"model {self.model_id} is running elsewhere (another process holds {self.path / LOCK})") from None
                time.sleep(0.05)
                continue
            if self._same_file(f):
                return f
            f.close()  # replaced meanwhile: lock the file that is there now

    def _same_file(self, f: Any) -> bool:
        try:
            return os.fstat(f.fileno()).st_ino == os.stat(self.path / LOCK).st_ino
        except OSError:
            return False

    def check_claim(self) -> None:
        """Called while training holds the claim: if the lock file was deleted or replaced (by hand), take the claim
        again on the file there now, or raise `RunBusy` when another process took it meanwhile (this one stops, so
        one process trains)."""
        if self._held is None or self._same_file(self._held):
            return
        if not self.path.is_dir():  # the whole model deleted: nothing to go on with
            raise FileNotFoundError(f"{self.path} was deleted while this process held the model")
        try:
            f = self._lock(wait=False)
        except RunBusy:
            raise RunBusy(f"model {self.model_id}: its {LOCK} was deleted and another process claimed the model; this "
                          f"process stops so that one trains it") from None
        with contextlib.suppress(OSError):
            self._held.close()
        self._held = f
        f.truncate(0)
        f.write(json.dumps(process.identity()))
        f.flush()

    def _remove_temporaries(self) -> None:
        """Half-written files (`write_atomic`'s temporaries) of a writer killed mid-write, here and in the scores."""
        for tmp in [*self.path.glob(".*.tmp"), *self.path.glob("*/.*.tmp")]:
            with contextlib.suppress(OSError):
                tmp.unlink()

    def is_claimed(self) -> bool:
        """Whether some process holds the model's claim right now (tested by taking the lock for an instant)."""
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
        """The identity (host, pid, start time) the last claimant wrote, or None; it holds the model while
        `is_claimed` (missbench.store.process.alive tells whether that process still runs)."""
        try:
            record = json.loads((self.path / LOCK).read_text())
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def ask(self, labels: dict[str, Any], scores: list[ScoreSpec]) -> None:
        """Record in request.json what a job asked of this model: the request's labels (the first kept) and the
        score specs, added to those asked before; the report lists asked scores that are not made yet."""
        request = self.request()
        merged = {"labels": request.get("labels") or labels,
                  "scores": {**request.get("scores", {}), **{s.score_id: s.to_dict() for s in scores}}}
        if merged != request:
            self.path.mkdir(parents=True, exist_ok=True)
            write_json(self.path / REQUEST, merged)

    def request(self) -> dict[str, Any]:
        """request.json ({"labels", "scores": {score id: spec}}), {} when unreadable; a legacy run's labels and
        own score come from its spec, before any score asked of it since."""
        try:
            request = json.loads((self.path / REQUEST).read_text())
        except (OSError, ValueError):
            request = {}
        request = request if isinstance(request, dict) else {}
        if self.legacy:
            try:
                spec = json.loads((self.path / LEGACY_SPEC).read_text())
            except (OSError, ValueError):
                return request
            own = {legacy.SCORE_ID: legacy.score_dict(spec, self.model_id, {})}
            return {"labels": legacy.labels(spec), "scores": {**own, **request.get("scores", {})}}
        return request

    def start(self, model: ModelSpec, fresh: bool) -> None:
        """Begin training: model.json and cleared markers; ``fresh`` also drops the checkpoint, so training starts
        from scratch instead of resuming."""
        self._start(MODEL, model.to_dict(), (CHECKPOINT,) if fresh else ())

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

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Write the training state, atomically, after making sure this process still holds the claim."""
        import torch

        self.check_claim()
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
            self.set_aside_checkpoint(f"does not load ({type(e).__name__}: {e})")
            return None
        return state

    def set_aside_checkpoint(self, why: str) -> None:
        """Move checkpoint.pt aside as checkpoint.pt.corrupt with a warning saying ``why``: training starts over."""
        path = self.path / CHECKPOINT
        os.replace(path, path.with_name(CHECKPOINT + ".corrupt"))
        log.warning("model %s: %s %s; set aside as %s.corrupt, training starts from scratch", self.model_id, path, why, CHECKPOINT)

    def finished_checkpoint(self, map_location: Any) -> dict[str, Any]:
        """The checkpoint of a finished model, its SHA-256 checked against DONE first; a one-line error otherwise."""
        import torch

        path = self.path / CHECKPOINT
        if not path.exists():
            raise FileNotFoundError(f"{path}: no checkpoint holds the trained model")
        want = json.loads((self.path / DONE).read_text()).get("sha256", {}).get(CHECKPOINT) if (self.path / DONE).exists() else None
        if want is not None and file_sha256(path) != want:
            raise ValueError(f"{path} does not match its checksum in DONE; {REDO}")
        return torch.load(path, map_location=map_location, weights_only=False)

    def finish(self, meta: dict[str, Any]) -> None:
        """Write meta.json, then DONE with its checksum and the checkpoint's (a model without one, a timing
        measurement, has its meta only)."""
        blob = json_bytes(meta)
        write_atomic(self.path / META, blob)
        self._done({META: blob}, (CHECKPOINT,) if (self.path / CHECKPOINT).exists() else ())

    def link_from(self, source: ModelFolder) -> None:
        """Make this folder the finished model of ``source`` (a sibling sweep's folder of the same id): the checkpoint
        hard-linked (copied across file systems), the other files copied, DONE last."""
        self.path.mkdir(parents=True, exist_ok=True)
        for name in (MODEL, LOG, META, CHECKPOINT, DONE):
            src, dst = source.path / name, self.path / name
            if not src.exists():
                continue
            dst.unlink(missing_ok=True)
            if name == CHECKPOINT:
                try:
                    os.link(src, dst)
                    continue
                except OSError:
                    pass
            tmp = dst.with_name(f".{name}.{os.getpid()}.tmp")
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)


#: How deep below a given folder model folders are looked for (results/ -> sweep -> model).
MAX_DEPTH = 3
#: Files that make a folder a model folder (a legacy run folder holds spec.json).
MARKERS = (MODEL, LEGACY_SPEC, REQUEST, META, DONE, FAILED)


def find_models(root: Path) -> list[Path]:
    """Folders at ``root`` or up to MAX_DEPTH levels below that hold a model (model.json, a legacy spec.json,
    request.json, meta.json, DONE or FAILED); a model's scores lie inside it."""
    found: list[Path] = []

    def walk(p: Path, depth: int) -> None:
        if any((p / name).exists() for name in MARKERS):
            found.append(p)
            return
        if depth < MAX_DEPTH:
            for child in sorted(c for c in p.iterdir() if c.is_dir() and not c.name.startswith(".")):
                walk(child, depth + 1)

    walk(root, 0)
    return sorted(found)


def score_rows(folders: list[ScoreFolder]) -> pd.DataFrame:
    """The rows of the finished, intact scores among ``folders``, concatenated."""
    import pandas as pd

    frames = [f.rows() for f in folders if f.is_done()]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def sweep_models(sweep_dir: Path) -> list[ModelFolder]:
    """The model folders of a sweep folder (every folder but hidden ones and the scheduler's), by id."""
    try:
        found = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []
    return [ModelFolder(p) for p in found]


def load_rows(sweep_dir: Path) -> pd.DataFrame:
    """Rows of every finished, intact score of the models in ``sweep_dir`` (tests and scripts read a sweep with it)."""
    return score_rows([s for m in sweep_models(sweep_dir) for s in m.scores()])
