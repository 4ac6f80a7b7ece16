"""Argument resolution: argparse defaults <- the stage's section of --config YAML <- command-line flags."""
import argparse
import os
import sys

import yaml

from common.errors import UserError


def add_config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None,
                        help="YAML file; its section for this stage overrides the defaults, flags override both")


def load_section(path: str, stage: str) -> dict:
    if not os.path.isfile(path):
        raise UserError(f"config file {path} does not exist; pass an existing file to --config")
    with open(path) as f:
        try:
            doc = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise UserError(f"config file {path} is not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(doc, dict):
        raise UserError(f"config file {path} must be a mapping of stage sections")
    section = doc.get(stage) or {}
    if not isinstance(section, dict):
        raise UserError(f"section '{stage}' of {path} must be a mapping of option: value")
    return section


def parse_args(parser: argparse.ArgumentParser, stage: str, argv=None) -> argparse.Namespace:
    """resolve_args for a script: a config mistake prints one `error:` line and exits with status 2."""
    try:
        return resolve_args(parser, stage, argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def resolve_args(parser: argparse.ArgumentParser, stage: str, argv=None) -> argparse.Namespace:
    """Parse argv with the `stage` section of --config as defaults.

    YAML keys use the flag's dest name (dashes or underscores both accepted); an unknown key is an error
    that names the key, the section and the file.
    """
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)
    if known.config:
        section = load_section(known.config, stage)
        actions = {a.dest: a for a in parser._actions}
        spellings = {s.lstrip("-").replace("-", "_"): a.dest for a in parser._actions for s in a.option_strings}
        overrides = {}
        for key, value in section.items():
            dest = str(key).replace("-", "_")
            dest = spellings.get(dest, dest)  # an old flag spelling (an alias) names the same option
            if dest not in actions or dest in ("help", "config"):
                raise UserError(f"unknown key '{key}' in section '{stage}' of {known.config}; "
                                f"see `--help` for the valid option names")
            overrides[dest] = value
            actions[dest].required = False  # the YAML supplies it
        parser.set_defaults(**overrides)
    args = parser.parse_args(argv)
    args.stage = stage
    return args
