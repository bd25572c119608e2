"""kill -9 at random moments and during checkpoint writes, resume each time: no torn file is ever
seen, every resume continues with the uninterrupted run's losses, and the final weights and Adam
moments are bit-identical to an uninterrupted run.
(benchmarks/chaos_resume.py with 3 kills; the benchmark itself does 10.)"""
import json
import subprocess
import sys

import pytest

from bitcpm_ms.testing import REPO


@pytest.mark.slow          # 5 short training runs, ~2-4 minutes
def test_three_kills_leave_no_torn_file_and_an_identical_result(tmp_path):
    out = tmp_path / "chaos.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.chaos_resume", "--kills", "3",
                           "--steps", "24", "--save_every", "3", "--keep", "1", "--seed", "1", "--json", str(out)],
                          capture_output=True, text=True, timeout=1800, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.load(open(out))
    assert res["final_bit_identical"] and res["torn_files_seen"] == 0 and res["kills_survived"] == 3
    for e in res["events"]:                 # each kill's resume was judged on its own
        assert e["resume"]["ok"] and e["resume"]["steps_logged"][0] == (e["resumes_from"] or 0) + 1, e
    assert res["targets"][0]["verdict"] == "met"
    assert res["kills_during_write"] >= 1
