"""Documents named by a shipped preset or given as a user's file: degradation specs, evaluation protocols, report
suites. One way to find them (a preset NAME is `NAME.yaml` in the package's folder, anything else a file path) and
one way to read them (JSON by a `.json` suffix, YAML otherwise), each failure a one-sentence UserError."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from srdistill.core.errors import UserError


def preset_names(folder: Path) -> tuple[str, ...]:
    """The presets shipped in `folder`: the stems of its `*.yaml` files, sorted."""
    return tuple(sorted(p.stem for p in Path(folder).glob("*.yaml")))


def find_document(name_or_path: str | os.PathLike, *, what: str, folder: Path,
                  formats: str = "YAML") -> tuple[Path, str | None]:
    """(file, preset name) for a string naming a preset in `folder`, else (the user's file, None); a Path is always
    a file."""
    presets = preset_names(folder)
    if isinstance(name_or_path, str) and name_or_path in presets:
        return Path(folder) / f"{name_or_path}.yaml", name_or_path
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        raise UserError(f"{what} {str(name_or_path)!r} is neither a preset ({', '.join(presets)}) nor an existing "
                        f"{formats} file.")
    return path, None


def read_document(path: Path, *, what: str, max_depth: int = 64) -> Any:
    """The parsed content of `path` (JSON for `.json`, YAML otherwise); `what` names it in errors. A document
    nested deeper than `max_depth` lists and mappings is refused before a recursive parser walks it."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot read {what} {path}: {exc.strerror or exc}.") from None
    except UnicodeDecodeError:
        raise UserError(f"{what} {path} is not a UTF-8 text file.") from None
    deep = UserError(f"{what} {path} nests lists and mappings more than {max_depth} levels deep (the limit); a "
                     f"{what} needs far fewer.")
    if Path(path).suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"{what} {path} is not valid JSON at line {exc.lineno}.") from None
        except RecursionError:
            raise deep from None
    try:
        # PyYAML builds nested nodes recursively: count the depth on its (flat) event stream first.
        depth = 0
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > max_depth:
                    raise deep
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = f" ({exc.problem})" if getattr(exc, "problem", None) else ""
        raise UserError(f"{what} {path} is not valid YAML{where}{problem}.") from None
