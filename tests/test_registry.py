"""Plugin discovery in the benchmark root: by folder, never on sys.path, one root's files at a time."""

import pickle
import sys

import pytest

from conftest import CHECKOUT
from missbench.experiment import registry


def test_plugins_are_found_by_folder_without_shadowing_site_packages():
    assert {"shaspec", "zero_fill", "mean_fill"} <= set(registry.method_names())
    assert "brats_synthetic" in registry.dataset_names()
    assert registry.method_class("shaspec").__module__ == "missbench.plugins.methods.shaspec"
    assert "datasets" not in sys.modules or not getattr(sys.modules["datasets"], "__file__", "").startswith(str(CHECKOUT))


def test_a_broken_plugin_is_named_when_its_method_is_asked_for(tmp_path, monkeypatch):
    (tmp_path / "methods").mkdir()
    (tmp_path / "methods" / "good.py").write_text((CHECKOUT / "methods" / "zero_fill.py").read_text())
    (tmp_path / "methods" / "broken.py").write_text("import nosuchmodule\n")
    monkeypatch.setenv("MISSBENCH_ROOT", str(tmp_path))
    with pytest.raises(registry.UnknownName, match=r"zero_fill; could not load: methods/broken.py \(ModuleNotFoundError"):
        registry.method_class("broken")


def test_each_root_gets_its_own_file_of_a_plugin_name(tmp_path, monkeypatch):
    """Two roots with a methods/zero_fill.py: each root's classes come from its own file, under a module
    name of their own, so both still pickle (a forked worker of `bench.py prepare` pickles its data set)."""
    (tmp_path / "methods").mkdir()
    text = (CHECKOUT / "methods" / "zero_fill.py").read_text().replace('citation = "', 'citation = "another root: ')
    (tmp_path / "methods" / "zero_fill.py").write_text(text)
    ours = registry.method_class("zero_fill")
    monkeypatch.setenv("MISSBENCH_ROOT", str(tmp_path))
    theirs = registry.method_class("zero_fill")
    assert theirs.citation.startswith("another root: ") and not ours.citation.startswith("another root: ")
    assert registry.plugins("methods").files["zero_fill"] == tmp_path / "methods" / "zero_fill.py"
    assert theirs.__module__ != ours.__module__
    assert pickle.loads(pickle.dumps(ours)) is ours and pickle.loads(pickle.dumps(theirs)) is theirs
    monkeypatch.setenv("MISSBENCH_ROOT", str(CHECKOUT))
    assert registry.method_class("zero_fill") is ours
