"""tools/benchmarks/doc_table.py: a page's generated block is the rendering of its committed json."""
import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("doc_table", REPO / "tools" / "benchmarks" / "doc_table.py")
doc_table = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(doc_table)


def test_predictions_page_holds_the_rendering_of_its_json():
    data = json.loads((REPO / "docs" / "benchmarks" / "predict_costs.json").read_text())
    page = (REPO / "docs" / "predictions.md").read_text()
    assert f"<!-- predict_costs -->\n{doc_table.render_costs(data)}\n<!-- /predict_costs -->" in page
    modes = [r["mode"] for r in data["rows"]]
    assert modes[1:3] == ["ensemble of 2", "ensemble of 3"] and "--saliency" in modes
    assert data["rows"][0]["times_one_model_min"] == pytest.approx(1.0)


def test_replace_block_keeps_the_rest_and_names_a_missing_block():
    text = "a\n<!-- t -->\nold\n<!-- /t -->\nb\n"
    assert doc_table.replace_block(text, "t", "new") == "a\n<!-- t -->\nnew\n<!-- /t -->\nb\n"
    with pytest.raises(ValueError, match="page.md: no <!-- x -->"):
        doc_table.replace_block(text, "x", "new", "page.md")
