"""Argument resolution: argparse defaults <- the stage's section of --config YAML <- command-line flags.

A YAML value goes through the flag's own argparse parsing (type, choices, nargs, on/off flags), so that a bad
value is caught, with the key and the file named, before anything runs.
"""
import argparse
import os
import sys

import yaml

from common.errors import UserError


def add_config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None,
                        help="YAML file; its section for this stage overrides the defaults, flags override "
                             "both")
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="load checkpoints with full pickle (can run code stored in the file): only for "
                             "files you trust that hold types a weights-only load refuses")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _int_at_least(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _int_at_least(text, 0, "an integer >= 0")


def _int_at_least(text, low: int, what: str) -> int:
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"must be {what}, got '{text}'") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be {what}, got {value}")
    return value


def load_section(path: str, stage: str) -> dict:
    """The `stage` section of `path` with its bases' merged under it (keys as written; see load_sections)."""
    merged = {}
    for _, section in load_sections(path, stage):
        merged.update(section)
    return merged


def load_sections(path: str, stage: str, chain: tuple = ()) -> list:
    """[(file, its `stage` section)] from the farthest base to `path`: a top-level `base: FILE` (relative to
    the file that names it) is a config whose sections this file's override, key by key."""
    if not os.path.isfile(path):
        if chain:
            raise UserError(f"config file {chain[-1]}: its base {path} does not exist; `base:` is a path "
                            f"relative to the file that names it")
        raise UserError(f"config file {path} does not exist; pass an existing file to --config")
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f) or {}
    except UnicodeDecodeError:
        raise UserError(f"config file {path} is not UTF-8 text (a binary file?); --config takes a YAML "
                        "file") \
            from None
    except yaml.YAMLError as e:
        raise UserError(f"config file {path} is not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(doc, dict):
        raise UserError(f"config file {path} must be a mapping of stage sections")
    section = doc.get(stage) or {}
    if not isinstance(section, dict):
        raise UserError(f"section '{stage}' of {path} must be a mapping of option: value")
    base = doc.get("base")
    if base is None:
        return [(path, section)]
    if not isinstance(base, str) or not base:
        raise UserError(f"config file {path}: `base:` must be the path of another config file, got {base!r}")
    base_path = os.path.normpath(os.path.join(os.path.dirname(path), base))
    here = (*chain, path)
    if any(os.path.realpath(base_path) == os.path.realpath(p) for p in here):
        raise UserError(f"config file {path}: its base {base_path} is already in the chain "
                        f"{' -> '.join(here)}; a base cannot lead back to itself")
    return [*load_sections(base_path, stage, here), (path, section)]


def parse_args(parser: argparse.ArgumentParser, stage: str, argv=None) -> argparse.Namespace:
    """resolve_args for a script: a config or flag mistake prints one `error:` line and exits with status
    2."""
    def one_line(message):
        raise UserError(f"{message} (see --help)")

    parser.error = one_line
    try:
        return resolve_args(parser, stage, argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def _flag(action) -> str:
    return max(action.option_strings, key=len) if action.option_strings else action.dest


def _is_on_off(action) -> bool:
    return isinstance(action,
                      (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._StoreConstAction,
                       argparse.BooleanOptionalAction))


def yaml_value(parser, action, key, value, where: str):
    """`value` parsed as argparse parses the flag's command-line strings; a UserError naming key and file."""
    def bad(msg):
        return UserError(f"{where}: key '{key}': {msg}")

    if _is_on_off(action):
        if not isinstance(value, bool):
            raise bad(f"must be true or false, got {value!r}")
        if not isinstance(action, argparse.BooleanOptionalAction) and not isinstance(action.const, bool):
            raise bad("is a flag without a value; give it on the command line")
        return value  # the key names the dest, so its value is the dest's value (also for store_false)
    if value is None:
        return None
    many = isinstance(value, (list, tuple))
    if isinstance(value, dict):
        raise bad(f"must be a value or a list, got a mapping {value!r}")
    items = [str(v) for v in value] if many else [str(value)]
    nargs = action.nargs
    if isinstance(action, argparse._AppendAction) and nargs is None:
        return [_convert(parser, action, [v], bad) for v in items]
    if nargs is None or nargs == "?":
        if many:
            raise bad(f"takes one value, got the list {value!r}")
        return _convert(parser, action, items, bad)
    if nargs == "+" and not items:
        raise bad("takes at least one value, got an empty list")
    if isinstance(nargs, int) and len(items) != nargs:
        raise bad(f"takes {nargs} values, got {len(items)}")
    return _convert(parser, action, items, bad)


def _convert(parser, action, items, bad):
    try:
        values = [parser._get_value(action, v) for v in items]
        for v in values:
            parser._check_value(action, v)
    except argparse.ArgumentError as e:
        raise bad(e.message) from None
    return values if action.nargs not in (None, "?") else values[0]


def key_dest(parser: argparse.ArgumentParser, key) -> str | None:
    """The dest a YAML key sets: the dest's own name, or any option string of the flag without its dashes (so
    that a key spelled as an old flag name, e.g. `root` for --data-root, still works); None when nothing
    matches."""
    name = str(key).replace("-", "_")
    if any(a.dest == name for a in parser._actions):
        return name
    action = parser._option_string_actions.get("--" + name.replace("_", "-"))
    return action.dest if action is not None else None


def resolve_args(parser: argparse.ArgumentParser, stage: str, argv=None) -> argparse.Namespace:
    """Parse argv with the `stage` section of --config as defaults.

    YAML keys use the flag's dest name or one of its option strings (dashes or underscores both accepted); an
    unknown key or a value the flag would refuse is an error that names the key, the section and the file. A
    `base:` file's section comes first; this file's keys override it, dest by dest. Flags are exact names: no
    abbreviation of a longer one.
    """
    parser.allow_abbrev = False
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)
    if known.config:
        actions = {a.dest: a for a in parser._actions}
        overrides = {}
        for path, section in load_sections(known.config, stage):
            where, keys = f"config file {path}, section '{stage}'", {}
            for key, value in section.items():
                dest = key_dest(parser, key)
                if dest is None or dest in ("help", "config"):
                    raise UserError(f"unknown key '{key}' in section '{stage}' of {path}; "
                                    f"see `--help` for the valid option names")
                if dest in keys:
                    raise UserError(f"keys '{keys[dest]}' and '{key}' in section '{stage}' of {path} set the "
                                    f"same option ({_flag(actions[dest])}); keep one")
                keys[dest] = key
                overrides[dest] = yaml_value(parser, actions[dest], key, value, where)
                actions[dest].required = False  # the YAML supplies it
        given = _given_on_command_line(parser, argv) if any(
            isinstance(actions[d], argparse._AppendAction) for d in overrides) else set()
        parser.set_defaults(**{d: v for d, v in overrides.items()
                               if not (isinstance(actions[d], argparse._AppendAction) and d in given)})
    args = parser.parse_args(argv)
    args.stage = stage
    trusted = bool(getattr(args, "trust_checkpoint", False))
    if trusted or "common.checkpoint" in sys.modules:  # not importing torch for scripts that never load one
        from common import checkpoint
        checkpoint.trust(trusted)
    return args


def _given_on_command_line(parser, argv) -> set:
    """Dests that argv sets, so that a flag given several times replaces the YAML's list instead of extending
    it."""
    saved = [(a, a.default, a.required) for a in parser._actions]
    try:
        for a in parser._actions:
            a.default, a.required = argparse.SUPPRESS, False
        ns, _ = parser.parse_known_args(argv)
    finally:
        for a, default, required in saved:
            a.default, a.required = default, required
    return set(vars(ns))
