"""Build the one-file binary: dist/localgate (work files under build/work/).

    python build/binary.py            # or: make binary
    python build/binary.py --clean    # drop PyInstaller's cache first

Runs PyInstaller on localgate.spec, then checks that the result starts
(`dist/localgate --version`) and holds no test-only package (pytest,
hypothesis, playwright, the openai and anthropic SDKs), and prints the build
time and the binary's size.
Run build/smoke.py next for the real test; bench/binary.py for the numbers.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SPEC = REPO / "localgate.spec"
WORK = REPO / "build" / "work"
DIST = REPO / "dist"
BINARY = DIST / "localgate"
# Checked after the build: none of these may be inside the binary.
TEST_ONLY = {"pytest", "_pytest", "hypothesis", "playwright", "openai", "anthropic"}


def build(*, clean: bool = False) -> float:
    """Run PyInstaller; returns the seconds it took."""
    cmd = [
        sys.executable,
        "-m",
        "PyInstaller",
        str(SPEC),
        "--workpath",
        str(WORK),
        "--distpath",
        str(DIST),
        "--noconfirm",
        "--log-level",
        "WARN",
    ]
    if clean:
        cmd.append("--clean")
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO)
    if done.returncode != 0:
        sys.exit(f"build/binary.py: PyInstaller failed (exit {done.returncode})")
    return time.perf_counter() - t0


def bundled_packages(binary: Path) -> set[str]:
    """Top-level names of every module and file inside the onefile archive."""
    from PyInstaller.archive.readers import CArchiveReader

    archive = CArchiveReader(str(binary))
    names = {name.split("/")[0].split(".")[0] for name in archive.toc}
    for name, entry in archive.toc.items():
        if entry[-1] == "z":  # the PYZ: every pure-Python module
            names |= {mod.split(".")[0] for mod in archive.open_embedded_archive(name).toc}
    return names


def missing_for_localgate(warn_file: Path) -> list[str]:
    """Modules localgate imports (not inside try/except) that the binary lacks,
    from PyInstaller's warn file: an exclude in localgate.spec that new code now
    needs, or a dependency that is not installed."""
    problems = []
    pattern = re.compile(r"^(?:missing|excluded) module named (\S+) - imported by (.*)$")
    for line in warn_file.read_text().splitlines():
        match = pattern.match(line)
        if not match:
            continue
        for importer in re.findall(r"([\w.]+) \(([^)]*)\)", match.group(2)):
            name, kinds = importer
            if (name == "localgate" or name.startswith("localgate.")) and kinds != "optional":
                problems.append(f"{name} imports {match.group(1).strip(chr(39))} ({kinds})")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clean", action="store_true", help="clear PyInstaller's cache first")
    args = parser.parse_args()
    seconds = build(clean=args.clean)
    problems = missing_for_localgate(WORK / "localgate" / "warn-localgate.txt")
    if problems:
        sys.exit(
            "build/binary.py: the binary lacks modules localgate needs (see TEST_ONLY / "
            "UNUSED in localgate.spec):\n  " + "\n  ".join(problems)
        )
    version = subprocess.run([str(BINARY), "--version"], capture_output=True, text=True, timeout=60)
    if version.returncode != 0:
        sys.exit(f"build/binary.py: {BINARY} --version failed: {version.stderr.strip()}")
    leaked = sorted(bundled_packages(BINARY) & TEST_ONLY)
    if leaked:
        sys.exit(f"build/binary.py: test-only packages in the binary: {', '.join(leaked)}")
    size = BINARY.stat().st_size
    print(f"built {BINARY.relative_to(REPO)}: {version.stdout.strip()}")
    print(f"  build time  {seconds:.1f} s")
    print(f"  size        {size / 1_000_000:.1f} MB ({size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
