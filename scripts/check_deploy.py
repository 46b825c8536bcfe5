"""Check every command the deploy scripts would run against the real CLI's own help text.

`make check-deploy` runs each <platform>/deploy.sh with DRY_RUN=1 and a fake environment
(in each mode: on AWS, GCP and Azure also MODE=direct, which runs deploy-direct.sh)
(scripts/deploy-lib.sh prints each cloud command as one "DRY-RUN: ..." line instead of
running it), then checks each printed command offline:

  * its subcommand path exists and is a command, not a group;
  * every flag is one the command's help lists (global flags included);
  * a flag whose help enumerates its values ("must be one of", "Allowed values",
    "Valid values are", oclif's <options: a|b>) gets one of them.

Help comes from the CLI itself: gcloud (on PATH), az, sam and aws (PyPI, in .venv-deploy/),
heroku (npm, in .venv-deploy/node/). `ibmcloud` is on no registry: its commands are checked
against IBM's CLI reference kept in scripts/cli-reference/ibmcloud-ce.md. Help texts are
cached in .venv-deploy/help-cache/, keyed by the CLI's executable, so a rerun is fast.

    python scripts/check_deploy.py                     all five platforms
    python scripts/check_deploy.py ibm gcp             some
    python scripts/check_deploy.py --shim ibmcloud FILE
        run any script (e.g. an old deploy.sh with no dry-run mode) with a stand-in
        `ibmcloud` on PATH that records its arguments, and check what it recorded

Exit status 0 when every command passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "DRY-RUN:"
IBM_REFERENCE = ROOT / "scripts" / "cli-reference" / "ibmcloud-ce.md"
TOOLS = ROOT / ".venv-deploy"
CACHE = TOOLS / "help-cache"
HELP_TIMEOUT_S = 180

# ---------------------------------------------------------------------------------------
# Reading help text


@dataclass
class CommandHelp:
    """What a command's help says: its path, flags, and the values enumerated flags take."""

    path: Tuple[str, ...]
    flags: Set[str]
    choices: Dict[str, List[str]] = field(default_factory=dict)


class HelpError(Exception):
    """The CLI does not know the command (or it is a group, not a command)."""


ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
LONG_FLAG = re.compile(r"(?<![\w\-\[])--(\[no-\])?([a-zA-Z0-9][a-zA-Z0-9\-]*)")
SHORT_FLAG = re.compile(r"(?<![\w\-])-([a-zA-Z])(?![\w\-])")
# A flag's definition line: "--flag=X", "-f, --flag", "`--flag`, `-f`", "--flag -f : ...".
DEFINITION = re.compile(r"^\s*`?(--?[a-zA-Z0-9]|-[a-zA-Z],)")
HEADER = re.compile(r"^\s*[A-Z][A-Za-z ]*:?\s*$")  # "Arguments", "Options:", "FLAGS"
ENUMERATION = re.compile(
    r"(?:must be one of|Allowed values|Valid values are|Valid values:)\s*:?\s*(.+?)(?:\.(?:\s|$)|$)",
    re.IGNORECASE,
)
OCLIF_OPTIONS = re.compile(r"<options:\s*([^>]+)>")
CLICK_CHOICES = re.compile(r"\[([\w.\-]+(?:\|[\w.\-]+)+)\]")  # click: "--output [text|json]"


OVERSTRIKE = re.compile(r".\x08")  # man pages' bold (awscli's help): "N\bN"


def plain(text: str) -> str:
    return OVERSTRIKE.sub("", ANSI.sub("", text))


def flags_in(text: str) -> Set[str]:
    """Every --flag (both forms of gcloud's --[no-]flag) and -f the text defines or mentions."""
    flags: Set[str] = set()
    lines = plain(text).splitlines()
    starts = set(_definitions(lines))
    for i, line in enumerate(lines):
        for negatable, name in LONG_FLAG.findall(line):
            flags.add("--" + name)
            if negatable:
                flags.add("--no-" + name)
        if i in starts:
            flags.update("-" + f for f in SHORT_FLAG.findall(line))
    return flags


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _definitions(lines: List[str]) -> List[int]:
    """Indexes of the lines that define a flag. A wrapped description line that happens to
    start with a flag is not one: it sits at or below the indentation of the line before it,
    while a definition follows a blank line, a shallower line's end, or another definition."""
    found: List[int] = []
    for i, line in enumerate(lines):
        if not DEFINITION.match(line):
            continue
        previous = lines[i - 1] if i else ""
        after_definition = bool(found) and found[-1] == i - 1
        if (not previous.strip() or _indent(line) < _indent(previous)
                or (after_definition and _indent(line) == _indent(previous))
                or (HEADER.match(previous) and _indent(line) > _indent(previous))):
            found.append(i)
    return found


def _defined_names(line: str) -> List[str]:
    """The flags a definition line defines: those before its description ("  --a, -b   text",
    "--a -b : text"), not flags its description mentions."""
    head = _head(line.strip())
    return ["--" + name for _, name in LONG_FLAG.findall(head)]


def _head(text: str) -> str:
    cut = re.search(r" : |(?<=\S) {2,}", text)
    return text[: cut.start()] if cut else text


def _values(listed: str) -> Optional[List[str]]:
    words = [w.strip(" `'\"*") for w in re.split(r",?\s+(?:and|or)\s+|,\s*", listed.strip())]
    words = [w for w in words if w]
    if len(words) < 2 or any(re.search(r"\s", w) for w in words):
        return None  # prose, not a list of values
    return words


def choices_in(text: str) -> Dict[str, List[str]]:
    """flag -> its enumerated values, from the block of help text that defines the flag."""
    result: Dict[str, List[str]] = {}
    lines = plain(text).splitlines()
    starts = _definitions(lines)
    for n, start in enumerate(starts):
        end = starts[n + 1] if n + 1 < len(starts) else len(lines)
        names = _defined_names(lines[start])
        if not names:
            continue
        block = " ".join(line.strip() for line in lines[start:end])
        block = re.sub(r"(\w)- (\w)", r"\1-\2", block)  # a value wrapped at its hyphen
        values = None
        found = OCLIF_OPTIONS.search(block)
        click = CLICK_CHOICES.search(_head(lines[start].strip()))
        if click:
            values = click.group(1).split("|")
        elif found:
            values = [v.strip() for v in found.group(1).split("|") if v.strip()]
        else:
            found = ENUMERATION.search(block)
            if found:
                values = _values(found.group(1))
        if values:
            for name in names:
                result.setdefault(name, values)
    return result


def value_allowed(value: str, allowed: Sequence[str]) -> bool:
    """Case-insensitive; a listed "jsonpath=JSONPATH_EXPRESSION" admits any "jsonpath=...".
    A listed "4" admits "4"; a value given as KEY=... for a listed KEY=PLACEHOLDER passes."""
    low = value.lower()
    for choice in allowed:
        c = choice.lower()
        if low == c:
            return True
        if "=" in choice and choice.split("=", 1)[1].isupper() and low.startswith(c.split("=", 1)[0] + "="):
            return True
    return False


# ---------------------------------------------------------------------------------------
# The CLIs


def _cached_run(argv: List[str], env: Optional[Dict[str, str]] = None) -> Tuple[int, str]:
    """Run a help command once per CLI build: the cache key has the executable's path,
    size and mtime, so an upgraded CLI is asked again."""
    exe = shutil.which(argv[0], path=(env or os.environ).get("PATH"))
    if exe is None:
        raise HelpError(f"{argv[0]} is not installed (make check-deploy installs it)")
    stat = Path(exe).resolve().stat()
    key = hashlib.sha256(repr((str(Path(exe).resolve()), stat.st_size, stat.st_mtime, argv)).encode()).hexdigest()
    cached = CACHE / key[:2] / key
    if cached.exists():
        status, _, text = cached.read_text(encoding="utf-8").partition("\n")
        return int(status), text
    done = subprocess.run(
        argv, capture_output=True, text=True, env=env, timeout=HELP_TIMEOUT_S, stdin=subprocess.DEVNULL
    )
    text = done.stdout + "\n" + done.stderr
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text(f"{done.returncode}\n{text}", encoding="utf-8")
    return done.returncode, text


def _leading_words(argv: Sequence[str]) -> List[str]:
    words = []
    for word in argv[1:]:
        if word.startswith("-") and word != "-":
            break
        words.append(word)
    return words


def _sections(text: str) -> Set[str]:
    return {line.strip() for line in plain(text).splitlines() if re.fullmatch(r"[A-Z][A-Z ]+", line.rstrip())}


def _tools_env() -> Dict[str, str]:
    env = dict(os.environ)
    extra = [str(TOOLS / "bin"), str(TOOLS / "node" / "node_modules" / ".bin")]
    env["PATH"] = os.pathsep.join(extra + [env.get("PATH", "")])
    env.update(
        CLOUDSDK_CORE_DISABLE_PROMPTS="1",
        AZURE_CORE_COLLECT_TELEMETRY="false",
        AZURE_CORE_NO_COLOR="true",
        SAM_CLI_TELEMETRY="0",
        HEROKU_SKIP_ANALYTICS="1",
        HEROKU_DISABLE_AUTOUPDATE="1",
        AWS_PAGER="",
        PAGER="cat",
        NO_COLOR="1",
        COLUMNS="200",
    )
    return env


def gcloud_help(argv: Sequence[str]) -> CommandHelp:
    """`gcloud WORDS --help` resolves the command itself (positionals and all): its NAME
    section names the command; a group has a COMMANDS or GROUPS section."""
    status, text = _cached_run(["gcloud", *_leading_words(argv), "--help"], _tools_env())
    name = re.search(r"^NAME\s*\n\s+(gcloud[^\n]*?) - ", plain(text), re.MULTILINE)
    if status != 0 or not name:
        raise HelpError(_first_error(text))
    if {"COMMANDS", "GROUPS"} & _sections(text):
        raise HelpError(f"'{name.group(1)}' is a command group, not a command")
    return CommandHelp(tuple(name.group(1).split()), flags_in(text), choices_in(text))


def az_help(argv: Sequence[str]) -> CommandHelp:
    words = _leading_words(argv)
    status, text = _cached_run(["az", *words, "--help"], _tools_env())
    head = re.search(r"^(Command|Group)\s*\n\s+(az [^:\n]+?)\s*:", plain(text), re.MULTILINE)
    if status != 0 or not head:
        raise HelpError(_first_error(text))
    if head.group(1) == "Group":
        raise HelpError(f"'{head.group(2)}' is a command group, not a command")
    return CommandHelp(tuple(head.group(2).split()), flags_in(text), choices_in(text))


def sam_help(argv: Sequence[str]) -> CommandHelp:
    words = _leading_words(argv)
    status, text = _cached_run(["sam", *words, "--help"], _tools_env())
    if status != 0:
        raise HelpError(_first_error(text))
    if re.search(r"^\s*Commands:", plain(text), re.MULTILINE):
        raise HelpError(f"'sam {' '.join(words)}' is a command group, not a command")
    return CommandHelp(("sam", *words), flags_in(text), choices_in(text))


def aws_help(argv: Sequence[str]) -> CommandHelp:
    words = _leading_words(argv)[:2]  # aws SERVICE OPERATION
    status, text = _cached_run(["aws", *words, "help"], _tools_env())
    if status != 0:
        raise HelpError(_first_error(text))
    flags = flags_in(text)
    if "--output" not in flags:  # `aws help` lists the global options
        flags |= flags_in(_cached_run(["aws", "help"], _tools_env())[1])
    return CommandHelp(("aws", *words), flags, choices_in(text))


def heroku_help(argv: Sequence[str]) -> CommandHelp:
    """Heroku commands are one word (topic:command); the words after it are arguments."""
    command = argv[1] if len(argv) > 1 else ""
    status, text = _cached_run(["heroku", command, "--help"], _tools_env())
    if status != 0 or "USAGE" not in plain(text):
        raise HelpError(_first_error(text))
    return CommandHelp(("heroku", command), flags_in(text), choices_in(text))


def _first_error(text: str) -> str:
    lines = [line.strip() for line in plain(text).splitlines() if line.strip()]
    errors = [line for line in lines if re.search(r"error|not .*command|invalid|unknown|misspelled", line, re.I)]
    return (errors or lines or ["no help text"])[0][:300]


class IbmReference:
    """IBM's Code Engine CLI reference (Markdown, one "### `ibmcloud ce ...`" section a
    command, options as "`--flag`, `-f`" definition lines), with the aliases in its header."""

    def __init__(self, text: str) -> None:
        self.aliases = dict(re.findall(r"^#\s+alias (\S+) (\S+)\s*$", text, re.MULTILINE))
        self.commands: Dict[Tuple[str, ...], CommandHelp] = {}
        for section in re.split(r"(?m)^(?=### `ibmcloud )", text):
            head = re.match(r"### `(ibmcloud [a-z\- ]+?)`", section)
            if not head:
                continue
            path = tuple(head.group(1).split())
            options = section.split("#### Command Options", 1)[-1]
            self.commands[path] = CommandHelp(path, flags_in(options), choices_in(options))

    @classmethod
    def load(cls, path: Path = IBM_REFERENCE) -> "IbmReference":
        return cls(path.read_text(encoding="utf-8"))

    def help(self, argv: Sequence[str]) -> CommandHelp:
        words = ["ibmcloud", *(self.aliases.get(w, w) for w in _leading_words(argv))]
        for n in range(len(words), 1, -1):
            found = self.commands.get(tuple(words[:n]))
            if found:
                return found
        raise HelpError(f"'{' '.join(words)}' is not a command in IBM's CLI reference ({IBM_REFERENCE.name})")


# ---------------------------------------------------------------------------------------
# Checking commands


@dataclass
class Result:
    argv: List[str]
    problems: List[str]
    flags_checked: int = 0
    values_checked: int = 0
    unchecked: Optional[str] = None  # why no check was possible (a CLI without help text)
    path: Tuple[str, ...] = ()  # the command the help resolved it to


def check_command(argv: Sequence[str], helper: Callable[[Sequence[str]], CommandHelp]) -> Result:
    try:
        helped = helper(argv)
    except HelpError as exc:
        return Result(list(argv), [str(exc)])
    problems: List[str] = []
    flags = values = 0
    words = list(argv)
    for i, word in enumerate(words):
        if not word.startswith("-") or word == "-" or i == 0:
            continue
        if not re.match(r"^--?[A-Za-z]", word):
            continue  # a value such as -1
        name, eq, value = word.partition("=")
        if i > 0 and _is_value_of(words, i, helped):
            continue
        flags += 1
        if name not in helped.flags:
            problems.append(f"{' '.join(helped.path)}: unknown flag {name}")
            continue
        allowed = helped.choices.get(name)
        if allowed:
            given = value if eq else (words[i + 1] if i + 1 < len(words) else "")
            values += 1
            if not value_allowed(given, allowed):
                problems.append(f"{' '.join(helped.path)}: {name} {given!r} is not one of {', '.join(allowed)}")
    return Result(list(argv), problems, flags, values, path=helped.path)


def _is_value_of(words: Sequence[str], i: int, helped: CommandHelp) -> bool:
    """Is words[i] the separate value of the enumerated flag before it (e.g. '--x -y')?"""
    previous = words[i - 1]
    return previous.startswith("--") and "=" not in previous and previous in helped.choices


HELPERS: Dict[str, Callable[[Sequence[str]], CommandHelp]] = {
    "gcloud": gcloud_help,
    "az": az_help,
    "sam": sam_help,
    "aws": aws_help,
    "heroku": heroku_help,
}
NO_HELP = {
    "func": "Azure Functions Core Tools installs its binary from outside the package registries",
    "git": "not a cloud CLI (git push to Heroku's remote)",
}


def commands_in(output: str) -> List[List[str]]:
    return [shlex.split(line[len(PREFIX):]) for line in output.splitlines() if line.startswith(PREFIX)]


def check_all(commands: Iterable[Sequence[str]], ibm: Optional[IbmReference] = None) -> List[Result]:
    results: List[Result] = []
    seen: Set[Tuple[str, ...]] = set()
    for argv in commands:
        if tuple(argv) in seen:
            continue
        seen.add(tuple(argv))
        program = os.path.basename(argv[0])
        if program == "ibmcloud":
            ibm = ibm or IbmReference.load()
            results.append(check_command(argv, ibm.help))
        elif program in HELPERS:
            results.append(check_command(argv, HELPERS[program]))
        else:
            results.append(Result(list(argv), [], unchecked=NO_HELP.get(program, "no help text known for this program")))
    return results


# ---------------------------------------------------------------------------------------
# Running the deploy scripts

FAKE_ENV = {
    "DRY_RUN": "1",
    "DT_TODAY": "2026-11-29",
    "DT_SIGNATURE_SECRET": "fake-signature-secret-for-dry-run",
    "GOOGLE_CLOUD_PROJECT": "dt-dry-run-project",
    "AWS_REGION": "eu-west-1",
    "CLOUDANT_URL": "https://fake-instance.cloudantnosqldb.appdomain.cloud",
    "CLOUDANT_APIKEY": "fake-cloudant-apikey-for-dry-run",
    "HEROKU_APP": "dt-dry-run-app",
    "MODE": "http",
}
# MODE=direct (DT publishes into the cloud's queue itself: <platform>/deploy-direct.sh).
DIRECT = {"MODE": "direct", "DT_ORGANIZATION_ID": "dry-run-organization"}
# Each platform's variants: every branch that prints a different command gets run.
VARIANTS: Dict[str, List[Dict[str, str]]] = {
    "ibm": [
        {"DRY_RUN_EXISTING": "0"},
        {"DRY_RUN_EXISTING": "1", "DT_IBM_WORKER": "cron"},
        {"DT_IBM_WORKER": "cron"},
    ],
    "gcp": [{"DRY_RUN_EXISTING": "0"}, {"DRY_RUN_EXISTING": "1"}, {**DIRECT, "DRY_RUN_EXISTING": "0"}],
    "aws": [
        {},
        {"DT_SIGNATURE_SECRET": "", "DT_SIGNATURE_SECRET_ARN": "arn:aws:secretsmanager:eu-west-1:000000000000:secret:dt"},
        DIRECT,
    ],
    "azure": [
        {"DRY_RUN_EXISTING": "0"},
        {"DT_AZURE_PLAN": "consumption"},
        {**DIRECT, "DT_AZURE_DIRECT": "servicebus"},
        {**DIRECT, "DT_AZURE_DIRECT": "eventhub"},
        {**DIRECT, "DT_AZURE_DIRECT": "servicebus", "DT_AZURE_PLAN": "consumption"},
    ],
    "heroku": [{"DRY_RUN_EXISTING": "0"}, {"DRY_RUN_EXISTING": "1"}],
}
SCRIPTS = {
    "aws": "aws_lambda/deploy.sh",
    "gcp": "gcp_function/deploy.sh",
    "azure": "azure_trigger/deploy.sh",
    "ibm": "ibm_action/deploy.sh",
    "heroku": "heroku/deploy.sh",
}


def dry_run(script: Path, extra: Dict[str, str], path_prefix: Optional[str] = None) -> Tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DT_", "AZURE_", "CLOUDANT_", "HEROKU_"))}
    env.update(FAKE_ENV)
    env.update(extra)
    if path_prefix:
        env["PATH"] = path_prefix + os.pathsep + env.get("PATH", "")
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    return done.returncode, done.stdout, done.stderr


SHIM = """#!/usr/bin/env python3
import os, shlex, sys
with open(os.environ["DT_SHIM_LOG"], "a") as log:
    log.write("DRY-RUN: " + shlex.join([os.path.basename(sys.argv[0]), *sys.argv[1:]]) + "\\n")
"""


def shim_run(program: str, script: Path) -> Tuple[int, str]:
    """Run a script that has no dry-run mode, with a stand-in `program` that records its
    arguments (and succeeds) instead of touching a cloud."""
    with tempfile.TemporaryDirectory() as tmp:
        stand_in = Path(tmp) / program
        stand_in.write_text(SHIM)
        stand_in.chmod(0o755)
        log = Path(tmp) / "commands.log"
        log.touch()
        env_extra = {"DT_SHIM_LOG": str(log), "DRY_RUN": "0"}
        status, _, _ = dry_run(script, env_extra, path_prefix=tmp)
        return status, log.read_text()


def report(name: str, results: List[Result], out=sys.stdout) -> int:
    checked = [r for r in results if r.unchecked is None]
    bad = [r for r in checked if r.problems]
    print(
        f"{name}: {len(checked)} distinct command lines checked "
        f"({len({r.path for r in checked if r.path})} distinct subcommands), "
        f"{sum(r.flags_checked for r in checked)} flags, {sum(r.values_checked for r in checked)} enumerated values; "
        f"{len(bad)} failed; {len(results) - len(checked)} not checkable",
        file=out,
    )
    for r in bad:
        print(f"  FAIL {shlex.join(r.argv)}", file=out)
        for problem in r.problems:
            print(f"       {problem}", file=out)
    for r in results:
        if r.unchecked:
            print(f"  (not checked: {shlex.join(r.argv[:4])} ...: {r.unchecked})", file=out)
    return len(bad)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("platforms", nargs="*", help=f"some of {', '.join(SCRIPTS)} (default: all)")
    parser.add_argument("--shim", nargs=2, metavar=("PROGRAM", "FILE"),
                        help="run FILE with a recording stand-in for PROGRAM, check what it recorded")
    args = parser.parse_args(argv)
    if args.shim:
        program, script = args.shim
        _, log = shim_run(program, Path(script).resolve())
        failed = report(f"{script} (stand-in {program})", check_all(commands_in(log)))
        return 1 if failed else 0
    failures = 0
    for platform in args.platforms or list(SCRIPTS):
        if platform not in SCRIPTS:
            parser.error(f"unknown platform {platform}")
        commands: List[List[str]] = []
        for variant in VARIANTS[platform]:
            status, out, err = dry_run(ROOT / SCRIPTS[platform], variant)
            if status != 0:
                print(f"{platform}: {SCRIPTS[platform]} {variant} exited {status}:\n{err}", file=sys.stderr)
                failures += 1
            commands.extend(commands_in(out))
        failures += report(f"{platform} ({len(VARIANTS[platform])} dry runs, {len(commands)} commands printed)",
                           check_all(commands))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
