"""One console: what a user sees while a run works.

MindFormers logs to stdout: at import (warnings about optional packages), ~25 deprecation and
"unused config" warnings per run, the whole resolved config (a `pprint`), and its own loss line
per step (`step:[9/4480]`, counting epoch steps, with an ETA that does not know `--max_steps`);
MindSpore adds its own [WARNING] lines. Ours prints one progress line (`BitCPMMetricsMonitor`)
whose step count and ETA are the real ones. `import_mindformers` keeps MindFormers' console at
ERROR, routes its config dump into its log, and leaves the full log (INFO and up) in
`OUTPUT_DIR/log/rank_N/info.log`; MindSpore's log level defaults to ERROR (GLOG_v=3) unless the
user set GLOG_v. `--verbose` shows everything as before.
"""
import contextlib
import functools
import io
import logging
import os
import sys
import pprint

from ..errors import BitCPMError

_state = {"log_dir": None}


def cli_main(fn):
    """fn(argv) -> exit status; a BitCPMError becomes `error: ...` and exit status 2."""
    @functools.wraps(fn)
    def main(argv=None):
        argv = sys.argv[1:] if argv is None else list(argv)
        try:
            return fn(argv) or 0
        except BitCPMError as err:
            print(f"error: {err}", file=sys.stderr, flush=True)
            return 2
    return main


def _mindformers_console_handlers():
    for name, lg in list(logging.root.manager.loggerDict.items()):
        if not name.startswith("mindformers") or not isinstance(lg, logging.Logger):
            continue
        for h in lg.handlers:
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                yield h


def import_mindformers(log_dir: str = None, verbose: bool = False) -> None:
    """Import MindFormers with its console at ERROR (INFO with `verbose`) and, when it is not
    imported yet, its log files under `log_dir` (MindFormers reads LOG_MF_PATH at import)."""
    if not verbose:
        os.environ.setdefault("GLOG_v", "3")       # read by MindSpore at import
    if "mindformers" not in sys.modules:
        if log_dir:
            os.environ.setdefault("LOG_MF_PATH", os.path.abspath(log_dir))
        _state["log_dir"] = os.environ.get("LOG_MF_PATH")
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):      # import-time INFO/WARNING lines: log file only
            import mindformers  # noqa: F401
    for handler in _mindformers_console_handlers():
        if handler.stream is not sys.stdout and isinstance(handler.stream, io.StringIO):
            handler.setStream(sys.stdout)
        handler.setLevel(logging.INFO if verbose else logging.ERROR)
    if not verbose:
        _config_dump_to_log()


def _config_dump_to_log() -> None:
    """MindFormers' trainer `pprint`s the whole config to stdout; send it to its log file instead."""
    from mindformers.tools.logger import logger
    from mindformers.trainer import base_trainer
    if getattr(base_trainer.pprint, "_bitcpm_to_log", False):
        return

    def to_log(obj, *args, **kwargs):
        logger.info("config:\n%s", pprint.pformat(obj))
    to_log._bitcpm_to_log = True
    base_trainer.pprint = to_log


def log_dir() -> str:
    """Where MindFormers' log files go in this process."""
    return _state["log_dir"] or os.environ.get("LOG_MF_PATH") or os.path.abspath(os.path.join("output", "log"))
