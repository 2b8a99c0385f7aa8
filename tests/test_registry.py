import sys

import pytest

from missbench.experiment import registry


def test_plugins_are_found_by_folder_without_shadowing_site_packages():
    assert {"shaspec", "zero_fill", "mean_fill"} <= set(registry.method_names())
    assert "brats_synthetic" in registry.dataset_names()
    assert registry.method_class("shaspec").__module__ == "missbench.plugins.methods.shaspec"
    assert "datasets" not in sys.modules or not getattr(sys.modules["datasets"], "__file__", "").startswith(str(registry.ROOT))


def test_a_broken_plugin_is_named_when_its_method_is_asked_for(tmp_path, monkeypatch):
    (tmp_path / "good.py").write_text((registry.ROOT / "methods" / "zero_fill.py").read_text())
    (tmp_path / "broken.py").write_text("import nosuchmodule\n")
    monkeypatch.setitem(registry.FOLDERS, "methods", (tmp_path, registry.FOLDERS["methods"][1]))
    monkeypatch.setattr(registry, "BROKEN", {})
    registry._registry.cache_clear()
    try:
        with pytest.raises(registry.UnknownName, match=r"valid: zero_fill; could not load: methods/broken.py \(ModuleNotFoundError"):
            registry.method_class("broken")
    finally:
        registry._registry.cache_clear()
