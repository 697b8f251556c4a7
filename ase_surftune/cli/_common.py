"""Helpers shared by CLI commands: YAML configs, output paths, JSON writing."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ase_surftune.errors import ConfigError


def load_yaml(path: str | Path | None) -> dict[str, Any]:
    """Read a YAML mapping (empty dict for ``None``); clear error if not a mapping."""
    if path is None:
        return {}
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"Config file not found: {str(p)!r}")
    with p.open() as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"Config {str(p)!r} must be a YAML mapping, got {type(data).__name__}")
    return data


def add_model_args(parser: argparse.ArgumentParser, *, reference: bool = True) -> None:
    """--model/--head/--device (and --reference) as every property command takes them."""
    parser.add_argument("-m", "--model", default="chgnet",
                        help="model spec: chgnet, chgnet-0.2.0, mace:/path.model, "
                             "mace-mp-0-medium, m3gnet:/folder or a bundle path "
                             "(default: chgnet)")
    parser.add_argument("--head", default=None, help="head of a multi-head model")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    if reference:
        parser.add_argument("--reference", default=None, metavar="NAME",
                            help="use a reference calculator instead of a model: emt, gpaw")


def write_json(data: Any, path: str | Path) -> Path:
    """Write JSON atomically (temp file then rename) and return the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(p.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_json_default))
    tmp.replace(p)
    return p


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serialisable")
