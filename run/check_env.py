"""run/setup.sh's check of the Python packages: silent with exit 0 when the pinned ones import,
else one line saying what was found and why requirements.txt is installed again, and exit 1.

Before, setup.sh ran one `python -c "import ...; assert ..."` with all output discarded and, when
anything failed, reinstalled with "installing Python packages": a wrong MindSpore version, a missing
package and a broken import all looked the same. Standard library only (it runs before anything
is installed); the imports' own log lines are kept off the terminal.
"""
import importlib
import importlib.metadata
import os
import sys

PINNED = {"mindspore": "2.9.0", "mindformers": "1.9.0", "lm_eval": "0.4.13"}
NUMPY_MAJOR = "1"                                   # requirements.txt: numpy>=1.26,<2
MODULES = {"mindspore": "mindspore", "mindformers": "mindformers", "numpy": "numpy", "sentencepiece": "sentencepiece",
           "yaml": "PyYAML", "pytest": "pytest", "pyarrow": "pyarrow", "safetensors": "safetensors",
           "lm_eval": "lm_eval"}


def _installed(dist: str):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _quiet_import(module: str):
    """Import `module` with fds 1 and 2 sent to /dev/null (MindFormers logs while importing)."""
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        return importlib.import_module(module)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved + [null]:
            os.close(fd)


def survey() -> dict:
    """{module: (installed version or None, import error or None)}."""
    found = {}
    for module, dist in MODULES.items():
        version, error = _installed(dist), None
        if version is not None:
            try:
                _quiet_import(module)
            except Exception as err:            # noqa: BLE001  (any failure is a reason to reinstall)
                first = str(err).strip().splitlines()[0] if str(err).strip() else ""
                error = f"{type(err).__name__}: {first}" if first else type(err).__name__
        found[module] = (version, error)
    return found


def problems(found: dict) -> list:
    """Why the packages must be installed again, one phrase per reason ([] when they are fine)."""
    missing = [m for m, (version, _) in found.items() if version is None]
    out = [f"not installed: {', '.join(missing)}"] if missing else []
    for module, want in PINNED.items():
        version = found[module][0]
        if version is not None and version != want:
            out.append(f"{module} {version} found, {want} pinned")
    numpy = found["numpy"][0]
    if numpy is not None and numpy.split(".")[0] != NUMPY_MAJOR:
        out.append(f"numpy {numpy} found, <2 pinned")
    for module, (version, error) in found.items():
        if version is not None and error is not None:
            out.append(f"{module} {version} does not import ({error})")
    return out


def main() -> int:
    reasons = problems(survey())
    if not reasons:
        return 0
    print(f"setup: installing Python packages from requirements.txt (first time ~2 minutes, 2.5 GB): "
          f"{'; '.join(reasons)}", flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
