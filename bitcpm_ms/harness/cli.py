"""`bitcpm-eval` (= run/eval_harness.py): lm-eval's own `run` command with the `bitcpm` model registered
and our task directory on the include path.

    bitcpm-eval --model_args config=RUN/config_resolved.json,checkpoint=RUN --tasks bitcpm_gcide_define \
        [--num_fewshot N] [--limit N] [--include_path DIR] [--output_path OUT] [--batch_size N] [--log_samples]

Every flag is lm-eval's (`lm-eval run --help`), parsed by lm-eval itself; `--model` defaults to
`bitcpm`. Bad model_args or a bad run config end with one `error: ...` line and exit status 2, as the
other bitcpm-* commands do.
"""
import sys

from ..app.console import cli_main
from . import TASKS_DIR, register


def harness_args(argv):
    """lm-eval's parsed `run` arguments for argv, with our defaults (model, include path)."""
    from lm_eval._cli import HarnessCLI
    argv = list(argv)
    if argv[:1] == ["run"]:
        argv = argv[1:]
    if not any(a == "--model" or a.startswith("--model=") for a in argv):
        argv = ["--model", "bitcpm"] + argv
    saved = sys.argv
    try:
        sys.argv = ["bitcpm-eval", "run", *argv]
        cli = HarnessCLI()
        args = cli.parse_args()
    finally:
        sys.argv = saved
    extra = getattr(args, "include_path", None)
    args.include_path = [TASKS_DIR] + ([extra] if extra else [])     # lm-eval's TaskManager takes a list
    return cli, args


@cli_main
def eval_main(argv):
    register()
    from lm_eval.utils import setup_logging
    setup_logging()
    cli, args = harness_args(argv)
    cli.execute(args)
    return 0
