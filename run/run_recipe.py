#!/usr/bin/env python3
"""Run a training recipe: stages that each start from an earlier stage (same as `bitcpm-recipe`).

    python3 run/run_recipe.py --config yaml_configs/recipe_tiny_cpu.yaml [--output_dir DIR] [--dry_run] \
        [--a.b.c value ...]

Each stage is one run/run_bitcpm.py run (base YAML + the stage's overrides) initialised from the
previous stage's final checkpoint; finished stages are skipped, an interrupted one resumes, and
the recipe ends with an eval table of every stage. See docs/recipe.md.
"""
import sys

from bitcpm_ms.app.recipe import recipe_main

if __name__ == "__main__":
    sys.exit(recipe_main())
