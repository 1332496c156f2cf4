"""hemo_mtl.paths: values read from inputs never choose a path outside the output folder."""
import pytest

from hemo_mtl.paths import UnsafePathError, confined, safe_component


@pytest.mark.parametrize("value, expected", [
    ("049", "049"),
    ("ID_1a2b.3", "ID_1a2b.3"),
    ("../../x", "____x"),  # ".._.._x", then each ".." -> "_"
    ("a/b\\c", "a_b_c"),
    (" p 1 ", "p_1"),
    ("..", "x"),
    ("", "x"),
])
def test_safe_component(value, expected):
    assert safe_component(value) == expected


def test_safe_component_never_leaves_the_folder(tmp_path):
    for value in ["../../x", "/etc/passwd", "..\\..\\y", "a/../../b", "....//"]:
        path = confined(tmp_path, safe_component(value))
        assert path.parent == tmp_path.resolve()


def test_confined_refuses_escapes(tmp_path):
    assert confined(tmp_path, "a", "b.png") == tmp_path.resolve() / "a" / "b.png"
    with pytest.raises(UnsafePathError, match="outside the output folder"):
        confined(tmp_path, "..", "x")
    with pytest.raises(UnsafePathError):
        confined(tmp_path, "/etc/passwd")
