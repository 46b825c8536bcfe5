"""Write a self-contained, deployable folder for one platform: the copy-paste template.

Layout of the result (what the cloud's CLI deploys as it is):
    <platform package>/   the entry points and that cloud's port implementations
    core/                 the cloud-free core
    handlers.py           an example of the user's handlers (DT_HANDLERS=handlers)
    README.md             the next steps for this cloud: settings, deploy, DT, logs
    ...                   everything in <platform>/bundle/ (requirements.txt, a lock made
                          by `make lock`; config files; root-level shims such as main.py)

Usage: python scripts/bundle.py <platform> <dest>    (platform: aws, gcp, azure, ibm, heroku,
                                                      or its folder name, e.g. aws_lambda)
The next steps are printed too.
"""

from __future__ import annotations

import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "bundle", "deploy.sh", "deploy-direct.sh", "README.md")


@dataclass(frozen=True)
class Platform:
    folder: str
    #: How this platform's deployment sets DT_HANDLERS: the one setting handlers.py names.
    handlers_setting: str


PLATFORMS = {
    "aws": Platform("aws_lambda", "template.yaml's parameter HandlerModules (default handlers) sets it"),
    "gcp": Platform("gcp_function", "the deploy command sets it (--set-env-vars=DT_HANDLERS=handlers)"),
    "azure": Platform("azure_trigger", "the function app's setting DT_HANDLERS sets it"),
    "ibm": Platform("ibm_action", "the Dockerfile and the deploy's --env DT_HANDLERS=handlers set it"),
    "heroku": Platform("heroku", "app.json and the deploy's heroku config:set set it"),
}


class BundleError(Exception):
    """A mistake in how the bundle was asked for: one line for the user, exit 2."""


def platform(name: str) -> tuple[str, Platform]:
    """The platform `name` (``gcp`` or ``gcp_function``) means."""
    for key, p in PLATFORMS.items():
        if name in (key, p.folder):
            return key, p
    raise BundleError(f"unknown platform {name!r}; one of: {', '.join(PLATFORMS)} (make bundle-<platform> DEST=dir)")


def _handlers(p: Platform) -> str:
    """examples/handlers.py, its first line saying how this platform loads it."""
    text = (ROOT / "examples" / "handlers.py").read_text()
    first = f'"""Your handlers. DT_HANDLERS=handlers names this module:\n{p.handlers_setting} (README.md).\n'
    return re.sub(r'\A"""[^\n]*\n', lambda _: first, text, count=1)


def _readme(source: Path, out: Path) -> str:
    """The platform's next steps (<platform>/bundle/README.md), with the sections every
    platform shares (scripts/bundle-*.md) and this bundle's and the repository's paths."""
    text = (source / "bundle" / "README.md").read_text()
    for placeholder, shared in (("{{HANDLERS}}", "bundle-handlers.md"), ("{{WIRE_DT}}", "bundle-wire-dt.md")):
        text = text.replace(placeholder, (ROOT / "scripts" / shared).read_text().strip())
    return text.replace("{{DEST}}", str(out)).replace("{{REPO}}", str(ROOT))


def build(name: str, dest: str | Path) -> Path:
    _, p = platform(name)
    if not str(dest):
        raise BundleError(f"usage: make bundle-{name} DEST=dir  (or: python scripts/bundle.py {name} dir)")
    source = ROOT / p.folder
    out = Path(dest).resolve()
    if out.exists() and any(out.iterdir()):
        raise BundleError(f"{out} exists and is not empty")
    out.mkdir(parents=True, exist_ok=True)
    shutil.copytree(ROOT / "core", out / "core", ignore=IGNORE)
    shutil.copytree(source, out / p.folder, ignore=IGNORE)
    extras = source / "bundle"
    if extras.is_dir():
        shutil.copytree(extras, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "README.md"))
    (out / "handlers.py").write_text(_handlers(p))
    (out / "README.md").write_text(_readme(source, out))
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: python scripts/bundle.py <{'|'.join(PLATFORMS)}> <dest>", file=sys.stderr)
        return 2
    try:
        out = build(argv[0], argv[1])
    except BundleError as exc:
        print(f"bundle: {exc}", file=sys.stderr)
        return 2
    print(f"Wrote {out}. Next steps (also in its README.md):\n")
    print((out / "README.md").read_text(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
