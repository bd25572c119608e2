"""run/check_env.py (run/setup.sh's package check): silent when the pins hold, else one line naming
what it found and why it reinstalls."""
import importlib.util
import os
import subprocess
import sys

from bitcpm_ms.testing import REPO

SCRIPT = os.path.join(REPO, "run", "check_env.py")
spec = importlib.util.spec_from_file_location("check_env", SCRIPT)
check_env = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_env)

GOOD = {"mindspore": ("2.9.0", None), "mindformers": ("1.9.0", None), "numpy": ("1.26.4", None),
        "sentencepiece": ("0.2.3", None), "yaml": ("6.0.2", None), "pytest": ("8.3.4", None),
        "pyarrow": ("18.1.0", None), "safetensors": ("0.4.5", None), "lm_eval": ("0.4.13", None)}


def test_the_pinned_set_gives_no_reason():
    assert check_env.problems(GOOD) == []


def test_each_reason_is_named_with_the_version_found():
    found = dict(GOOD, mindspore=("2.8.0", None), numpy=("2.1.3", None), pyarrow=(None, None),
                 pytest=(None, None), mindformers=("1.9.0", "ImportError: cannot import name 'mint'"),
                 lm_eval=(None, None))
    assert check_env.problems(found) == [
        "not installed: pytest, pyarrow, lm_eval",
        "mindspore 2.8.0 found, 2.9.0 pinned",
        "numpy 2.1.3 found, <2 pinned",
        "mindformers 1.9.0 does not import (ImportError: cannot import name 'mint')"]


def _run(env_path=None):
    env = dict(os.environ)
    if env_path:
        env["PYTHONPATH"] = env_path + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, SCRIPT], capture_output=True, text=True, timeout=300, env=env)


def test_this_environment_takes_the_fast_path_silently():
    proc = _run()
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


def test_a_wrong_mindspore_gives_one_line_and_exit_1(tmp_path):
    fake = tmp_path / "site"
    (fake / "mindspore").mkdir(parents=True)
    (fake / "mindspore" / "__init__.py").write_text("__version__ = '2.8.0'\n")
    (fake / "mindspore-2.8.0.dist-info").mkdir()
    (fake / "mindspore-2.8.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: mindspore\n"
                                                                  "Version: 2.8.0\n")
    proc = _run(str(fake))
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("setup: installing Python packages from requirements.txt")
    assert "mindspore 2.8.0 found, 2.9.0 pinned" in lines[0]
    assert proc.stderr == ""
