"""Provenance of the code a run used: SHA-256 of its plugin files in meta.json, untracked plugin files
counted as a dirty tree, and the SLURM guard that refuses one unless --allow-dirty."""

from __future__ import annotations

import hashlib
import subprocess

from conftest import CHECKOUT, make_root, smoke_spec
from missbench.cli import main
from missbench.engine.run import plugin_files
from missbench.experiment import registry
from missbench.experiment.protocol import load_protocol
from missbench.store.provenance import git_state


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def committed_root(folder):
    """A benchmark root with zero_fill, committed to a fresh git repository (ignoring __pycache__/)."""
    make_root(folder, {"zero_fill.py": (CHECKOUT / "methods" / "zero_fill.py").read_text()})
    (folder / ".gitignore").write_text("__pycache__/\n")
    for args in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "root"]):
        subprocess.run(["git", *args], cwd=folder, check=True)
    return folder


def test_untracked_plugin_files_make_the_tree_dirty(tmp_path):
    repo = committed_root(tmp_path / "repo")
    (repo / "notes.txt").write_text("not a plugin\n")
    (repo / "methods" / "__pycache__").mkdir()
    (repo / "methods" / "__pycache__" / "zero_fill.pyc").write_bytes(b"ignored")
    assert git_state(repo)["git_dirty"] is False and git_state(repo)["git_untracked_plugins"] == []
    (repo / "methods" / "new.py").write_text("# a method not yet added\n")
    (repo / "protocols" / "mine.yaml").write_text("inherit: non_dedicated\n")
    state = git_state(repo)
    assert state["git_dirty"] is True and state["git_untracked_plugins"] == ["methods/new.py", "protocols/mine.yaml"]
    assert git_state(tmp_path)["git_dirty"] is None  # not a checkout


def test_slurm_refuses_untracked_plugin_files_unless_allowed(tmp_path, capsys):
    repo = committed_root(tmp_path / "repo")
    (repo / "methods" / "new.py").write_text("# a method not yet added\n")
    args = ["--root", str(repo), "--methods", "zero_fill", "--budget", "smoke", "--executor", "slurm", "--out", str(tmp_path / "s")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "(untracked: methods/new.py)" in err and "--allow-dirty" in err and err.count("\n") == 1
    assert not (tmp_path / "s").exists()


def test_meta_records_the_hash_of_every_plugin_file_the_run_used():
    """The method's and data set's files, the protocol and the file it inherits from."""
    proto = load_protocol(registry.protocol_path("dedicated"))
    spec = proto.expand(["zero_fill"], registry.dataset_class("brats_synthetic"), {}, "smoke")[0]
    files = ["methods/zero_fill.py", "datasets/brats_synthetic.py", "protocols/dedicated.yaml", "protocols/non_dedicated.yaml"]
    classes = (registry.method_class("zero_fill"), registry.dataset_class("brats_synthetic"))
    assert plugin_files(spec.protocol, classes) == {f: sha256(CHECKOUT / f) for f in files}
    assert plugin_files(spec.protocol, (type("NotAPlugin", (), {"name": "zero_fill"}), classes[1]))["protocols/dedicated.yaml"]


def test_a_plugin_is_hashed_as_it_was_imported(tmp_path, monkeypatch):
    """Editing a method's file during a run does not change what its meta.json says ran."""
    source = (CHECKOUT / "methods" / "zero_fill.py").read_text()
    root = make_root(tmp_path / "root", {"zero_fill.py": source})
    monkeypatch.setenv("MISSBENCH_ROOT", str(root))
    spec = smoke_spec("zero_fill")
    classes = (registry.method_class("zero_fill"), registry.dataset_class("brats_synthetic"))  # imported, as a run does
    (root / "methods" / "zero_fill.py").write_text(source + "\n# edited while the run runs\n")
    assert plugin_files(spec.protocol, classes)["methods/zero_fill.py"] == hashlib.sha256(source.encode()).hexdigest()


def test_versions_are_read_once_and_each_run_gets_its_own_copy(monkeypatch):
    """The installed distributions are scanned once per process (about 0.1 s a scan, two per run); a meta.json
    that edits its versions must not change the next run's."""
    from importlib import metadata

    from missbench.store import provenance

    first = provenance.versions()
    assert first["torch"] and "distributions, sha256 " in first["installed"]
    first["torch"] = "edited"

    def scanned_again():
        raise AssertionError("the distributions were scanned again")

    monkeypatch.setattr(metadata, "distributions", scanned_again)
    again = provenance.versions()
    assert again["torch"] != "edited" and again["installed"] == provenance.versions()["installed"]
