"""Turn a section of a recipe YAML config into command-line options for an opuslm.bin step.

    conf_args.py FILE SECTION        NUL-separated `--key value...` of the mapping FILE[SECTION]
    conf_args.py --value FILE KEY     one scalar, KEY dotted (e.g. text.pretrained); empty if absent

Lists become several values after one option (`--key a b`), `true` becomes a bare flag, `false`
and null are left out, so each section holds exactly the options of the step it configures. NUL
separation keeps values with spaces intact: `mapfile -d '' opts < <(conf_args.py f.yaml codec)`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml


def load(path: Path) -> dict:
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise SystemExit(f"conf_args.py: config {path} not found") from None
    except yaml.YAMLError as e:
        raise SystemExit(f"conf_args.py: {path} is not valid YAML: {e}") from None
    if not isinstance(config, dict):
        raise SystemExit(f"conf_args.py: {path}: expected a mapping at the top level")
    return config


def lookup(config: dict, dotted: str, path: Path) -> object:
    node: object = config
    for key in dotted.split("."):
        if node is None:
            return None
        if not isinstance(node, dict):
            raise SystemExit(f"conf_args.py: {path}: {dotted}: {key!r} is inside a non-mapping")
        node = node.get(key)
    return node


def to_options(section: dict, where: str) -> list[str]:
    options: list[str] = []
    for key, value in section.items():
        if value is None or value is False:
            continue
        if isinstance(value, dict):
            raise SystemExit(f"conf_args.py: {where}.{key}: nested mappings are not options")
        options.append(f"--{key}")
        if value is True:
            continue
        values = value if isinstance(value, list) else [value]
        options += [str(v) for v in values]
    return options


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--value", action="store_true", help="print one scalar instead")
    parser.add_argument("config", type=Path)
    parser.add_argument("key")
    args = parser.parse_args(argv)
    node = lookup(load(args.config), args.key, args.config)
    if args.value:
        if isinstance(node, dict | list):
            raise SystemExit(f"conf_args.py: {args.config}: {args.key} is not a single value")
        print("" if node is None else node)
        return 0
    if node is None:
        return 0
    if not isinstance(node, dict):
        raise SystemExit(f"conf_args.py: {args.config}: {args.key} must be a mapping of options")
    sys.stdout.write("".join(f"{option}\0" for option in to_options(node, args.key)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
