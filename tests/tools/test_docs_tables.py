"""tools/docs_tables.py: every generated block in README/docs is the rendering of its committed source."""
import pytest

from hemo_mtl.cli import docs_tables


def test_committed_pages_match_their_sources():
    stale = [doc.name for doc in docs_tables.documents()
             if docs_tables.regenerate(doc.read_text(encoding="utf-8")) != doc.read_text(encoding="utf-8")]
    assert not stale, f"run python tools/docs_tables.py: {stale}"
    assert any("<!-- generated:" in doc.read_text(encoding="utf-8") for doc in docs_tables.documents())


def test_block_is_replaced_and_text_around_kept(monkeypatch):
    data = {"setup": {"volume": [8, 8, 2], "image_size": 32, "threads": 1, "repeats": 1, "load_before": 0.5,
                      "load_after": 0.7},
            "rows": [{"mode": "one", "slices_per_s": 4.0, "times_one_model_min": 1.0, "times_one_model_median": 1.0,
                      "model": 0.5, "total": 1.0}]}
    assert "| one | 4.0 | 1.00x | 1.00x | 50% | 0% |" in docs_tables.predict_costs(data)
    monkeypatch.setattr(docs_tables, "_load", lambda name: data)  # the source file, read back
    text = "a\n<!-- generated: predict_costs x.json -->\nold\n<!-- end generated -->\nb\n"
    out = docs_tables.regenerate(text)
    assert out.startswith("a\n<!-- generated: predict_costs x.json -->\nVolume 8x8x2") and out.endswith("<!-- end generated -->\nb\n")
    assert "old" not in out and docs_tables.regenerate(out) == out
    with pytest.raises(ValueError, match="unknown generated block"):
        docs_tables.render("nothing here")
