"""The type stub src/fastconv/_core.pyi matches the compiled module, and ships with it.

pybind11 functions have no ``__signature__``; their docstring starts with the signature,
``name(arg: type, arg2: type = default) -> ret``, built from the ``"arg"_a`` names in
csrc/register_*.cpp. The stub is parsed with ``ast`` and compared name by name.
"""
from __future__ import annotations

import ast
import pathlib
import re

import pytest

import fastconv
from fastconv import _core

PKG = pathlib.Path(fastconv.__file__).parent
SOURCE_STUB = pathlib.Path(__file__).resolve().parent.parent / "src" / "fastconv" / "_core.pyi"


def _stub_path() -> pathlib.Path:
    """The installed stub (what users' type checkers read); the source tree's as a fallback so a
    stale install still gets its names checked (test_stub_ships_with_the_package flags it)."""
    installed = PKG / "_core.pyi"
    if installed.is_file():
        return installed
    if SOURCE_STUB.is_file():
        return SOURCE_STUB
    pytest.fail(f"no _core.pyi next to {PKG} nor at {SOURCE_STUB}")


def _public(names):
    return sorted(n for n in names if not (n.startswith("__") and n.endswith("__")))


def _stub_tree() -> ast.Module:
    path = _stub_path()
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _stub_functions() -> dict:
    return {node.name: node for node in _stub_tree().body if isinstance(node, ast.FunctionDef)}


def _stub_names():
    names = set(_stub_functions())
    for node in _stub_tree().body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.ClassDef):
            names.add(node.name)
    return names


def _split_top_level(text: str):
    """Split on commas outside brackets (types such as Sequence[int | None] contain commas)."""
    parts, depth, current = [], 0, []
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if "".join(current).strip():
        parts.append("".join(current))
    return [p.strip() for p in parts]


def _pybind_params(func):
    """[(name, has_default)] from the first docstring line ``name(a: T, b: T = 1) -> R``."""
    doc = func.__doc__ or ""
    first = doc.lstrip().splitlines()[0] if doc.strip() else ""
    assert not first.startswith("Overloaded function"), (
        f"{func.__name__} is overloaded; give the stub @overload variants and extend this test")
    m = re.match(rf"^{re.escape(func.__name__)}\((.*)\)\s*->", first)
    assert m, f"{func.__name__}: docstring does not start with a pybind11 signature: {first!r}"
    params = []
    for part in _split_top_level(m.group(1)):
        name = re.split(r"[:=]", part, maxsplit=1)[0].strip()
        params.append((name, "=" in part.replace("==", "")))
    return params


def _stub_params(node: ast.FunctionDef):
    args = node.args
    positional = args.posonlyargs + args.args
    first_default = len(positional) - len(args.defaults)
    params = [(a.arg, i >= first_default) for i, a in enumerate(positional)]
    params += [(a.arg, d is not None) for a, d in zip(args.kwonlyargs, args.kw_defaults)]
    return params


def test_stub_and_module_have_the_same_public_names():
    module_names = _public(dir(_core))
    stub_names = _public(_stub_names())
    missing = sorted(set(module_names) - set(stub_names))
    extra = sorted(set(stub_names) - set(module_names))
    assert not missing and not extra, (
        f"_core.pyi is out of sync with the compiled module: not in the stub {missing}, "
        f"in the stub only {extra} (stub: {_stub_path()})")
    assert "__version__" in _stub_names()


@pytest.mark.parametrize("name", _public(n for n in dir(_core) if callable(getattr(_core, n))))
def test_stub_parameters_match_the_binding(name):
    functions = _stub_functions()
    if name not in functions:
        pytest.fail(f"{name} is not in _core.pyi")
    expected = _pybind_params(getattr(_core, name))
    got = _stub_params(functions[name])
    assert [p for p, _ in got] == [p for p, _ in expected], (
        f"{name}: stub parameters {[p for p, _ in got]} != binding {[p for p, _ in expected]}")
    assert got == expected, f"{name}: parameters with defaults differ: stub {got}, binding {expected}"


def test_split_top_level_keeps_bracketed_commas():
    assert _split_top_level("a: Sequence[Union[int, str]], b: Dict[str, int] = {}, c: int") == [
        "a: Sequence[Union[int, str]]", "b: Dict[str, int] = {}", "c: int"]
    assert _split_top_level("") == []


def test_stub_ships_with_the_package():
    """The wheel carries _core.pyi and py.typed next to the extension (PEP 561)."""
    for name in ("_core.pyi", "py.typed"):
        assert (PKG / name).is_file(), (
            f"{name} is missing from the installed package at {PKG}; reinstall fastconv "
            f"(`pip install .`) if it was built before the stub existed")


def test_installed_stub_is_the_source_stub():
    """A stale install would type-check against an old stub."""
    if not SOURCE_STUB.is_file() or not (PKG / "_core.pyi").is_file():
        pytest.skip("needs both the source tree and an installed stub")
    if SOURCE_STUB.resolve() == (PKG / "_core.pyi").resolve():
        pytest.skip("editable install: the same file")
    assert (PKG / "_core.pyi").read_text(encoding="utf-8") == SOURCE_STUB.read_text(encoding="utf-8"), (
        "the installed _core.pyi differs from src/fastconv/_core.pyi: reinstall fastconv")
