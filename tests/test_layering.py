"""Scripts import modules, never other scripts; the paper stages never import the synthetic data set's
code."""
import ast
import os

from conftest import REPO

PACKAGES = ("KMDN", "CDTG", "Classification", "DSVA", "data", "scripts", "benchmarks", "common")
PAPER_STAGES = ("KMDN", "CDTG", "Classification", "DSVA")


def python_files():
    for top in PACKAGES:
        for folder, _, files in os.walk(os.path.join(REPO, top)):
            for name in sorted(files):
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    module = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
                    yield path, module.removesuffix(".__init__")


def is_entry_point(tree: ast.Module) -> bool:
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Compare):
            names = {n.id for n in ast.walk(node.test) if isinstance(n, ast.Name)}
            consts = {n.value for n in ast.walk(node.test) if isinstance(n, ast.Constant)}
            if "__name__" in names and "__main__" in consts:
                return True
    return False


def imported_modules(tree: ast.Module) -> set:
    """Every module an import statement names, anywhere in the file (also inside functions); for
    `from pkg import name`, both pkg and pkg.name (name may be a submodule)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def parsed():
    return {module: ast.parse(open(path).read(), path) for path, module in python_files()}


def test_the_walk_finds_the_entry_points_and_their_imports():
    trees = parsed()
    entry = {m for m, t in trees.items() if is_entry_point(t)}
    assert {"KMDN.train", "CDTG.generate", "DSVA.train", "data.split", "scripts.convert_original"} <= entry
    assert "common.split" not in entry and "CDTG.manifest" not in entry
    assert "common.part_model" in imported_modules(trees["KMDN.distill"])


def test_no_module_imports_an_entry_point():
    trees = parsed()
    entry = {m for m, t in trees.items() if is_entry_point(t)}
    bad = sorted((m, imp) for m, t in trees.items() for imp in imported_modules(t) & entry if imp != m)
    assert bad == [], "these modules import a script; move the shared code into a module: " + repr(bad)


def test_no_paper_stage_imports_the_synthetic_data_set():
    bad = sorted((m, imp) for m, t in parsed().items() if m.split(".")[0] in PAPER_STAGES
                 for imp in imported_modules(t) if imp == "data.synthetic"
                 or imp.startswith("data.synthetic."))
    assert bad == [], repr(bad)
