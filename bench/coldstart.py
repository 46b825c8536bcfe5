"""(3) Cold start: import time of core and each platform's entry module, next to the
import time of that cloud's SDK alone, each in a fresh interpreter.

"Adds" is (SDK then entry module, in one fresh process) minus (SDK alone): what our
entry module costs on top of the SDK the function needs anyway. Modules that do not
exist yet are reported as absent.
"""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: platform -> (entry modules, the SDK modules that platform's deployment imports)
PLATFORMS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "aws": (("aws_lambda.handler",), ("boto3",)),
    "gcp": (("gcp_function.main",), ("functions_framework", "google.cloud.firestore", "google.cloud.pubsub_v1")),
    "azure": (("azure_trigger.function_app",), ("azure.functions", "azure.data.tables", "azure.storage.queue")),
    "ibm": (("ibm_action.__main__",), ("ibmcloudant",)),
    "heroku": (("heroku.web",), ("uvicorn", "uvicorn.protocols.http.httptools_impl", "redis")),  # Procfile web
}

_PROBE = """
import sys, time
mods = sys.argv[1].split(",") if sys.argv[1] else []
t = time.perf_counter()
for m in mods:
    __import__(m)
base = time.perf_counter() - t
extra = sys.argv[2].split(",") if sys.argv[2] else []
t = time.perf_counter()
for m in extra:
    __import__(m)
print(base, time.perf_counter() - t)
"""


def _exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _probe(first: tuple[str, ...], then: tuple[str, ...]) -> tuple[float, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DT_")}
    env["PYTHONPATH"] = str(ROOT)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, ",".join(first), ",".join(then)],
        env=env, cwd=str(ROOT), capture_output=True, text=True, timeout=120,
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "import failed")
    a, b = out.stdout.split()
    return float(a), float(b)


def _median_ms(first, then, runs) -> tuple[float, float]:
    _probe(first, then)  # warm the bytecode cache and the OS file cache
    samples = [_probe(first, then) for _ in range(runs)]
    return (round(statistics.median(s[0] for s in samples) * 1000, 1),
            round(statistics.median(s[1] for s in samples) * 1000, 1))


def run(quick: bool = False) -> dict:
    runs = 3 if quick else 7
    rows = []
    for name, mods in (("core", ("core",)), ("core.receiver", ("core.receiver",)), ("core.worker", ("core.worker",)),
                       ("jwt (PyJWT, which core.receiver needs)", ("jwt",))):
        ms, _ = _median_ms(mods, (), runs)
        rows.append({"platform": "core", "module": name, "entry_alone_ms": ms})
    for platform, (entries, sdk) in PLATFORMS.items():
        for entry in entries:
            row = {"platform": platform, "module": entry, "sdk": ", ".join(sdk)}
            missing_sdk = [m for m in sdk if not _exists(m)]
            if not _exists(entry.rsplit(".", 1)[0]) or not _exists(entry):
                row["absent"] = "entry module not present in this checkout"
            elif missing_sdk:
                row["absent"] = "SDK not installed: " + ", ".join(missing_sdk)
            else:
                try:
                    row["entry_alone_ms"], _ = _median_ms((entry,), (), runs)
                    row["sdk_alone_ms"], row["adds_ms"] = _median_ms(sdk, (entry,), runs)
                    row["target_met"] = row["adds_ms"] <= 25.0
                except RuntimeError as exc:
                    row["absent"] = f"import failed: {exc}"
            rows.append(row)
    measured = [r for r in rows if "adds_ms" in r]
    return {"runs": runs, "rows": rows, "target_met": all(r["target_met"] for r in measured) if measured else None}


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
