"""Write a self-contained, deployable folder for one platform: the copy-paste template.

Layout of the result (what the cloud's CLI deploys as it is):
    <platform package>/   the entry points and that cloud's port implementations
    core/                 the cloud-free core
    handlers.py           an example of the user's handlers (DT_HANDLERS=handlers)
    ...                   everything in <platform>/bundle/ (requirements.txt, config
                          files, root-level shims such as main.py or function_app.py)

Usage: python scripts/bundle.py <platform dir> <dest>
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "bundle", "deploy.sh", "deploy-direct.sh", "README.md")


def build(platform_dir: str, dest: str | Path) -> Path:
    source = ROOT / platform_dir
    if not (source / "__init__.py").exists():
        raise SystemExit(f"bundle: {platform_dir} is not a platform package")
    out = Path(dest).resolve()
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"bundle: {out} exists and is not empty")
    out.mkdir(parents=True, exist_ok=True)
    shutil.copytree(ROOT / "core", out / "core", ignore=IGNORE)
    shutil.copytree(source, out / platform_dir, ignore=IGNORE)
    shutil.copy2(ROOT / "examples" / "handlers.py", out / "handlers.py")
    extras = source / "bundle"
    if extras.is_dir():
        shutil.copytree(extras, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    return out


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    print(build(sys.argv[1], sys.argv[2]))
