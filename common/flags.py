"""Route the extra flags of a numbered script that runs several Python scripts (03, 05, 11) to those that take
them.

    routed=$(python -m common.flags --stage 03_kmdn.sh --env CONFIG=--config --skip test=--weights \\
             train=KMDN/train.py distill=KMDN/distill.py test=KMDN/test.py -- "$@")
    eval "$routed"                        # defines the bash arrays train, distill, test
    python KMDN/train.py ... "${train[@]}"

Each flag, with the values it takes, goes to every script whose get_args_parser() has that option string
(exact names: no abbreviations), except where `--skip ARRAY=--flag` withholds it because the numbered script
sets it itself for that script (also under the option's other spellings). A flag that no script of the stage
accepts, a flag the numbered script sets from an environment variable (`--env VAR=--flag`, this exact
spelling: list an old spelling too where every script that takes it gets the variable's value), a missing
value or a stray word is one `error:` line and exit 2, before anything has run. How many values a flag takes
comes from its argparse action: none for switches, one by default, up to the next flag for nargs '*' / '+';
`--flag=value` is one word. A stage of one script passes its flags to that script as they are: its argparse
refuses what it does not take.
"""
import argparse
import importlib
import os
import re
import shlex
import sys

from common.errors import UserError, cli

NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+([eE][-+]?\d+)?$|^-\d+[eE][-+]?\d+$")


def is_flag(word: str) -> bool:
    return word.startswith("-") and len(word) > 1 and not NUMBER.match(word)


def script_parser(path: str) -> argparse.ArgumentParser:
    """The get_args_parser() of a repository script, imported as a module (its __main__ block does not
    run)."""
    module = os.path.splitext(os.path.normpath(path))[0].replace(os.sep, ".")
    return importlib.import_module(module).get_args_parser()


def value_count(action: argparse.Action) -> tuple:
    """(fewest, most) values an option takes; most None = up to the next flag."""
    n = action.nargs
    if n is None:
        return 1, 1
    if n == "?":
        return 0, 1
    if n == "*":
        return 0, None
    if n in ("+", argparse.REMAINDER):
        return 1, None
    return n, n


def group_flags(words: list, actions: dict) -> list:
    """[(flag, [words])]: each flag with the words that belong to it. `actions` maps a flag to one action that
    takes it, for its value count."""
    groups, i = [], 0
    while i < len(words):
        word = words[i]
        if not is_flag(word):
            raise UserError(f"'{word}' is not a flag and follows no flag that takes a value")
        flag, inline = word.split("=", 1)[0], "=" in word
        # an unknown flag keeps the words up to the next flag, so that route() names the flag, not its value
        fewest, most = (0, None) if flag not in actions else (0, 0) if inline else value_count(actions[flag])
        j = i + 1
        while j < len(words) and (most is None or j - i - 1 < most) and not is_flag(words[j]):
            j += 1
        if j - i - 1 < fewest:
            raise UserError(f"{flag} needs {'a value' if fewest == 1 else f'{fewest} values'}")
        groups.append((flag, words[i:j]))
        i = j
    return groups


def same_option(table: dict, flag: str, names) -> bool:
    """Whether `flag` and one of `names` are spellings (an alias) of the same option in a parser's `table`."""
    action = table.get(flag)
    return action is not None and any(table.get(n) is action for n in names)


def route(words: list, parsers: dict, skip: dict, env: dict, stage: str) -> dict:
    """{array name: [words]} for every script; `parsers` {array name: (script path, parser)}, `skip` {array
    name: {flag}} withheld flags, `env` {flag: environment variable that sets it}."""
    accepts = {name: p._option_string_actions for name, (_, p) in parsers.items()}
    actions = {}
    for table in accepts.values():
        for flag, action in table.items():
            actions.setdefault(flag, action)
    routed = {name: [] for name in parsers}
    for flag, group in group_flags(words, actions):
        if flag in env:
            raise UserError(f"{stage} sets {flag} itself: set the environment variable {env[flag]}=... "
                            "instead")
        takers = [name for name in parsers
                  if flag in accepts[name] and not same_option(accepts[name], flag, skip.get(name, ()))]
        if not takers:
            scripts = ", ".join(path for path, _ in parsers.values())
            raise UserError(f"no script of {stage} accepts {flag} ({scripts}); see their --help")
        counts = {value_count(accepts[name][flag]) for name in takers}
        if len(counts) > 1 and "=" not in group[0]:
            raise UserError(f"{flag} takes different numbers of values in "
                            f"{', '.join(parsers[n][0] for n in takers)}; run those scripts directly")
        for name in takers:
            routed[name].extend(group)
    return routed


def pair(text: str, what: str) -> tuple:
    key, sep, value = text.partition("=")
    if not (sep and key and value):
        raise UserError(f"common.flags: {what} must be NAME=VALUE, got '{text}'")
    return key, value


def bash_arrays(routed: dict) -> str:
    return "\n".join(f"{name}=({' '.join(shlex.quote(w) for w in words)})" for name, words in routed.items())


OPTIONS = ("--stage", "--env", "--skip")  # each with a value; then the ARRAY=SCRIPT list


def split_argv(argv: list) -> tuple:
    """({option: [values]}, [ARRAY=SCRIPT ...], [flags to route])."""
    if "--" not in argv:
        raise UserError("common.flags: put -- before the flags to route")
    cut = argv.index("--")
    left, words = argv[:cut], argv[cut + 1:]
    opts, i = {o: [] for o in OPTIONS}, 0
    while i < len(left) and left[i] in OPTIONS:
        if i + 1 >= len(left):
            raise UserError(f"common.flags: {left[i]} needs a value")
        opts[left[i]].append(left[i + 1])
        i += 2
    if i == len(left):
        raise UserError("common.flags: name the scripts (ARRAY=SCRIPT ...)")
    return opts, left[i:], words


@cli
def main(argv: list) -> None:
    opts, rest, words = split_argv(argv)
    stage = opts["--stage"][-1] if opts["--stage"] else "this script"
    env = {flag: var for var, flag in (pair(e, "--env") for e in opts["--env"])}
    skip = {}
    for name, flag in (pair(s, "--skip") for s in opts["--skip"]):
        skip.setdefault(name, set()).add(flag)
    specs = [pair(s, "ARRAY=SCRIPT") for s in rest]
    if not words:  # nothing to route: no need to import the scripts
        print(bash_arrays({name: [] for name, _ in specs}))
        return
    parsers = {name: (path, script_parser(path)) for name, path in specs}
    print(bash_arrays(route(words, parsers, skip, env, stage)))


if __name__ == "__main__":
    main(sys.argv[1:])
