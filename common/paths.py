"""Paths inside hand-over files (split.json, generator meta, manifest.json, training lists): stored relative
to a folder of the chain, so that runs/ and the data can move together; resolved on load. An absolute path
(files written before, or a path on another drive) is used as it is."""
import os


def relative(path: str | None, base_dir: str) -> str | None:
    """`path` as written into a file that is read relative to `base_dir`."""
    if path is None:
        return None
    try:
        return os.path.relpath(os.path.abspath(path), os.path.abspath(base_dir))
    except ValueError:  # no relative path between two drives
        return os.path.abspath(path)


def resolve(stored: str | None, base_dir: str) -> str | None:
    """A path read from a file: a relative one is joined to `base_dir`."""
    if stored is None or os.path.isabs(stored):
        return stored
    return os.path.normpath(os.path.join(base_dir, stored))
