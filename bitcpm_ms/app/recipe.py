"""A training recipe: a list of stages, each a training run that starts from an earlier stage.

    python3 run/run_recipe.py --config yaml_configs/recipe_tiny_cpu.yaml [--output_dir DIR] [--dry_run]
        [--a.b.c value ...]            # dotted overrides for every stage (after the recipe's own)

The recipe YAML:

    output_dir: ./output/recipe_tiny_cpu      # stage S writes to output_dir/S
    base_config: bitcpm_tiny_cpu.yaml         # relative to the recipe file
    overrides: {eval_after_train: true}       # dotted overrides for every stage
    stages:
      - name: fp                              # full-precision teacher pretraining
        max_steps: 300
        overrides: {quant.enabled: false}
      - name: qat                             # ternary QAT from the fp weights
        max_steps: 300                        # init_from defaults to the previous stage
        overrides: {quant.enabled: true, lr_schedule.learning_rate: 1.0e-2}
      - name: distill                         # stage 2: distil from the fp teacher
        max_steps: 100
        teacher: fp
        distill: {temperature: 1.0, alpha: 0.5}

Every stage is one `run/run_bitcpm.py` process (a fresh MindSpore/MindFormers state): its output
dir, `--max_steps` (also the schedule's `lr_schedule.total_steps`, so each stage has its own
warmup-stable-decay: the re-warmup), `--init_from_checkpoint` = the final checkpoint of
`init_from` (default: the previous stage; `init_from: null` for none), and for `teacher:` the
teacher stage's `config_resolved.json` and final checkpoint. A stage is finished when its newest
checkpoint has reached `max_steps` and its `eval.json` evaluates that checkpoint: re-running the
recipe skips it; a stage with checkpoints short of `max_steps` resumes (`--resume_training`); a
trained stage without eval.json is only evaluated. A stage whose output dir was made with other
settings is refused (`stage.json` records its command). The end is an eval table of every stage
(`recipe_eval.json`, `recipe_eval.md`).
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import yaml

from ..errors import CheckpointError, ConfigError
from ..fileio import atomic_json, atomic_write
from .console import cli_main
from .overrides import parse_overrides, split_argv

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUNNER = os.path.join(REPO_ROOT, "run", "run_bitcpm.py")
PREVIOUS = "<previous>"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
STAGE_KEYS = ("name", "max_steps", "overrides", "init_from", "teacher", "distill", "config")


@dataclass
class Stage:
    name: str
    max_steps: int
    overrides: Dict[str, object] = field(default_factory=dict)
    init_from: Optional[str] = PREVIOUS      # a stage name, PREVIOUS, or None
    teacher: Optional[str] = None            # a stage name: distil from its final checkpoint
    distill: Dict[str, object] = field(default_factory=dict)   # temperature, alpha
    config: Optional[str] = None             # a base YAML for this stage only


@dataclass
class Recipe:
    output_dir: str
    base_config: str
    stages: List[Stage]
    overrides: Dict[str, object] = field(default_factory=dict)       # the recipe's, for every stage
    cli_overrides: Dict[str, object] = field(default_factory=dict)   # the command line's: win over all

    def stage_dir(self, name: str) -> str:
        return os.path.join(self.output_dir, name)

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)


def _stage_from_dict(d, index: int, base_dir: str) -> Stage:
    if not isinstance(d, dict):
        raise ConfigError(f"recipe stage {index} must be a mapping, got {d!r}")
    unknown = sorted(set(d) - set(STAGE_KEYS))
    if unknown:
        raise ConfigError(f"recipe stage {index}: unknown key(s) {unknown}; known keys: {list(STAGE_KEYS)}")
    name = d.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"recipe stage {index}: name must be letters, digits, '_', '-', '.', got {name!r}")
    steps = d.get("max_steps")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"recipe stage {name}: max_steps must be a positive integer, got {steps!r}")
    cfg = d.get("config")
    if cfg is not None:
        cfg = cfg if os.path.isabs(cfg) else os.path.join(base_dir, cfg)
    for key in ("overrides", "distill"):
        if not isinstance(d.get(key) or {}, dict):
            raise ConfigError(f"recipe stage {name}: {key} must be a mapping")
    return Stage(name=name, max_steps=steps, overrides=dict(d.get("overrides") or {}),
                 init_from=d["init_from"] if "init_from" in d else PREVIOUS, teacher=d.get("teacher"),
                 distill=dict(d.get("distill") or {}), config=cfg)


def check_recipe(recipe: Recipe) -> Recipe:
    """Stage names unique; init_from / teacher name an earlier stage; base configs exist."""
    seen = []
    for i, st in enumerate(recipe.stages):
        if st.name in seen:
            raise ConfigError(f"recipe: stage name {st.name!r} is used twice")
        if st.init_from == PREVIOUS:
            st.init_from = seen[-1] if seen else None
        for key in ("init_from", "teacher"):
            ref = getattr(st, key)
            if ref is not None and ref not in seen:
                raise ConfigError(f"recipe stage {st.name}: {key} {ref!r} is not an earlier stage ({seen or 'none'})")
        if st.distill and st.teacher is None:
            raise ConfigError(f"recipe stage {st.name}: a distill section needs teacher: <stage>")
        unknown = sorted(set(st.distill) - {"temperature", "alpha"})
        if unknown:
            raise ConfigError(f"recipe stage {st.name}: distill keys {unknown} (the recipe sets the teacher; "
                              "give temperature and alpha)")
        if not os.path.isfile(st.config or recipe.base_config):
            raise ConfigError(f"recipe stage {st.name}: config file not found: {st.config or recipe.base_config}")
        seen.append(st.name)
    if not recipe.stages:
        raise ConfigError("recipe: no stages")
    return recipe


def load_recipe(path: str, output_dir: str = None, cli_overrides: Dict[str, object] = None) -> Recipe:
    if not os.path.isfile(path):
        raise ConfigError(f"recipe file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            d = yaml.safe_load(f) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"recipe {path} is not valid YAML: {err}") from None
    unknown = sorted(set(d) - {"output_dir", "base_config", "overrides", "stages"})
    if unknown:
        raise ConfigError(f"recipe {path}: unknown top-level key(s) {unknown}")
    base_dir = os.path.dirname(os.path.abspath(path))
    base = d.get("base_config")
    if not base:
        raise ConfigError(f"recipe {path}: base_config is missing")
    stages = d.get("stages")
    if not isinstance(stages, list):
        raise ConfigError(f"recipe {path}: stages must be a list")
    return check_recipe(Recipe(
        output_dir=os.path.abspath(output_dir or d.get("output_dir") or "./output/recipe"),
        base_config=base if os.path.isabs(base) else os.path.join(base_dir, base),
        stages=[_stage_from_dict(s, i, base_dir) for i, s in enumerate(stages)],
        overrides=dict(d.get("overrides") or {}), cli_overrides=dict(cli_overrides or {})))


# ------------------------------------------------------------------ stage state
def final_checkpoint(out_dir: str, max_steps: int) -> Optional[str]:
    """The newest checkpoint of a stage when it has reached max_steps (its global_step), else None."""
    from ..training.checkpoint_loading import find_checkpoint
    try:
        ckpt = find_checkpoint(os.path.join(out_dir, "checkpoint"))
    except CheckpointError:
        return None
    return ckpt if checkpoint_step(ckpt) >= max_steps else None


def checkpoint_step(ckpt: str) -> int:
    import mindspore as ms
    step = ms.load_checkpoint(ckpt, choice_func=lambda name: name == "global_step").get("global_step")
    return int(step.asnumpy().reshape(-1)[0]) if step is not None else 0


def read_eval(out_dir: str) -> Optional[dict]:
    path = os.path.join(out_dir, "eval.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def stage_status(recipe: Recipe, stage: Stage):
    """('done' | 'eval' | 'resume' | 'new', final checkpoint or None)."""
    out = recipe.stage_dir(stage.name)
    ckpt = final_checkpoint(out, stage.max_steps)
    if ckpt is None:
        has_ckpt = os.path.isdir(os.path.join(out, "checkpoint")) and any(
            f.endswith(".ckpt") for _, _, files in os.walk(os.path.join(out, "checkpoint")) for f in files)
        return ("resume" if has_ckpt else "new"), None
    ev = read_eval(out)
    if ev and os.path.abspath(ev.get("checkpoint", "")) == os.path.abspath(ckpt):
        return "done", ckpt
    return "eval", ckpt


def _cli_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return str(v)


def stage_command(recipe: Recipe, stage: Stage, ckpts: Dict[str, str]) -> List[str]:
    """The run/run_bitcpm.py command of a stage (ckpts: final checkpoint of each finished stage)."""
    args = ["--config", stage.config or recipe.base_config, "--output_dir", recipe.stage_dir(stage.name),
            "--max_steps", str(stage.max_steps)]
    overrides = {"lr_schedule.total_steps": stage.max_steps, "eval_after_train": True}
    overrides.update(recipe.overrides)
    overrides.update(stage.overrides)
    overrides.update(recipe.cli_overrides)
    if stage.init_from:
        overrides["init_from_checkpoint"] = ckpts[stage.init_from]
    if stage.teacher:
        teacher_dir = recipe.stage_dir(stage.teacher)
        overrides.update({"distill.teacher_config": os.path.join(teacher_dir, "config_resolved.json"),
                          "distill.teacher_checkpoint": ckpts[stage.teacher]})
        overrides.update({f"distill.{k}": v for k, v in stage.distill.items()})
    for key, value in overrides.items():
        args += [f"--{key}", _cli_value(value)]
    return [sys.executable, RUNNER] + args


def _check_same_settings(out: str, command: List[str], status: str) -> None:
    """A stage with checkpoints continues only with the command that made them."""
    path = os.path.join(out, "stage.json")
    if status != "new" and os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            before = json.load(f).get("command")
        if before is not None and before[1:] != command[1:]:
            raise ConfigError(f"{out} was made by a different stage command; delete it or use another "
                              f"output_dir.\n  before: {' '.join(before[1:])}\n  now:    {' '.join(command[1:])}")
    os.makedirs(out, exist_ok=True)
    atomic_json({"command": command}, path)


def run_stage(recipe: Recipe, stage: Stage, ckpts: Dict[str, str], log=print, dry_run=False) -> str:
    """Run (or skip, resume, evaluate) one stage; returns its final checkpoint."""
    status, ckpt = stage_status(recipe, stage)
    command = stage_command(recipe, stage, ckpts)
    if status == "done":
        log(f"[recipe] {stage.name}: finished, skipped ({ckpt})")
        return ckpt
    if not dry_run:
        _check_same_settings(recipe.stage_dir(stage.name), command, status)
    extra = {"new": [], "resume": ["--resume_training", "true"],
             "eval": ["--run_mode", "eval", "--load_checkpoint", ckpt or ""]}[status]
    log(f"[recipe] {stage.name}: {status} -> {' '.join(command[1:] + extra)}")
    if dry_run:
        return os.path.join(recipe.stage_dir(stage.name), "checkpoint", "<final>.ckpt")
    proc = subprocess.run(command + extra, cwd=os.getcwd())
    if proc.returncode != 0:
        raise ConfigError(f"recipe stage {stage.name} failed (exit status {proc.returncode}); fix the cause and "
                          "re-run the recipe: finished stages are skipped, this one resumes")
    status, ckpt = stage_status(recipe, stage)
    if status != "done":
        raise ConfigError(f"recipe stage {stage.name}: ended without a final checkpoint at step {stage.max_steps} "
                          f"and its eval.json (state: {status}); see {recipe.stage_dir(stage.name)}")
    return ckpt


# ------------------------------------------------------------------ eval table
def eval_rows(recipe: Recipe) -> List[dict]:
    rows = []
    for st in recipe.stages:
        ev = read_eval(recipe.stage_dir(st.name)) or {}
        q = ev.get("quant") or {}
        rows.append({"stage": st.name, "init_from": st.init_from, "teacher": st.teacher, "steps": st.max_steps,
                     "weights": (f"{q.get('quant_space')} g={q.get('group_size')}" if q.get("enabled")
                                 else "full precision") if ev else None,
                     "loss": ev.get("loss"), "perplexity": ev.get("perplexity"),
                     "bits_per_byte": ev.get("bits_per_byte"), "checkpoint": ev.get("checkpoint")})
    return rows


def markdown_table(rows: List[dict]) -> str:
    def f(v, spec):
        return "-" if v is None else format(v, spec)
    lines = ["| stage | weights | from | teacher | steps | loss | perplexity | bits/byte |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['stage']} | {r['weights'] or '-'} | {r['init_from'] or '-'} | {r['teacher'] or '-'} | "
                     f"{r['steps']} | {f(r['loss'], '.4f')} | {f(r['perplexity'], '.2f')} | "
                     f"{f(r['bits_per_byte'], '.4f')} |")
    return "\n".join(lines) + "\n"


def write_eval_table(recipe: Recipe) -> str:
    rows = eval_rows(recipe)
    atomic_json({"output_dir": recipe.output_dir, "stages": rows}, os.path.join(recipe.output_dir, "recipe_eval.json"))
    md = markdown_table(rows)
    with atomic_write(os.path.join(recipe.output_dir, "recipe_eval.md"), "w", encoding="utf-8") as f:
        f.write(md)
    return md


def run_recipe(recipe: Recipe, log=print, dry_run=False) -> Dict[str, str]:
    ckpts, t0 = {}, time.time()
    for i, st in enumerate(recipe.stages):
        log(f"[recipe] stage {i + 1}/{len(recipe.stages)}: {st.name} ({time.time() - t0:.0f}s elapsed)")
        ckpts[st.name] = run_stage(recipe, st, ckpts, log=log, dry_run=dry_run)
    return ckpts


def recipe_parser():
    p = argparse.ArgumentParser(prog="bitcpm-recipe", formatter_class=argparse.RawDescriptionHelpFormatter,
                                description=__doc__.split("\n\n")[0] + "\n" + __doc__.split("\n\n")[1])
    p.add_argument("--config", required=True, help="recipe YAML")
    p.add_argument("--output_dir", default=None, help="default: the recipe's output_dir")
    p.add_argument("--dry_run", action="store_true", help="print the stage commands, run nothing")
    return p


@cli_main
def recipe_main(argv):
    own, rest = split_argv(argv, ("config", "output_dir", "dry_run"))
    args = recipe_parser().parse_args(own)
    recipe = load_recipe(args.config, args.output_dir, parse_overrides(rest))
    run_recipe(recipe, dry_run=args.dry_run)
    if args.dry_run:
        return 0
    print(f"\n[recipe] eval of every stage ({recipe.output_dir}/recipe_eval.md):\n" + write_eval_table(recipe),
          flush=True)
    return 0
