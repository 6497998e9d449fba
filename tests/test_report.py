"""Tables and figures of the study from synthetic metrics with known answers."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from savfi_core.report import (
    ReportError,
    format_psnr_table,
    load_metrics,
    paired_gains,
    summarize_methods,
    write_report,
)

# True offsets over the baseline (dB): maml is best for sepconv, finetune for dvf.
OFFSETS = {
    "sepconv": {"baseline": 0.0, "retrained": 0.1, "finetune": 0.3, "maml": 1.0, "metasgd": 0.5},
    "dvf": {"baseline": 0.0, "retrained": -0.2, "finetune": 0.8, "maml": 0.2, "metasgd": 0.4},
}
SEQUENCES = [f"clip{i}" for i in range(6)]


def synthetic_metrics(steps_sweep: bool = False) -> pd.DataFrame:
    generator = np.random.default_rng(0)
    rows = []
    for backbone, offsets in OFFSETS.items():
        base = {sequence: 28 + 4 * generator.random() for sequence in SEQUENCES}
        for method, offset in offsets.items():
            protocol = "meta" if method in ("maml", "metasgd") else method
            seeds = [0, 1] if protocol in ("meta", "retrained") else [np.nan]
            for seed in seeds:
                for sequence in SEQUENCES:
                    noise = 0.01 * generator.standard_normal()
                    row = dict(backbone=backbone, size="tiny", protocol=protocol, algorithm=method if protocol == "meta" else "",
                               dataset="clips", sequence=sequence, seed=seed, psnr=base[sequence] + offset + noise,
                               ssim=0.9 + offset / 100, adapt_seconds=0.5 if protocol in ("meta", "finetune") else 0.0)
                    if steps_sweep and protocol in ("meta", "finetune"):
                        for steps in (1, 2, 4):
                            rows.append({**row, "inner_steps": steps, "psnr": row["psnr"] + 0.1 * steps})
                    elif not steps_sweep:
                        rows.append(row)
    return pd.DataFrame(rows)


@pytest.fixture
def metrics(tmp_path):
    path = tmp_path / "metrics.csv"
    synthetic_metrics().to_csv(path, index=False)
    return load_metrics([path])


def test_summary_averages_seeds_per_sequence_and_finds_the_means(metrics):
    summary = summarize_methods(metrics).set_index(["backbone", "method"])
    assert summary.loc[("sepconv", "maml"), "n_sequences"] == len(SEQUENCES)
    assert summary.loc[("sepconv", "maml"), "n_seeds"] == 2
    baseline = summary.loc[("sepconv", "baseline"), "psnr"]
    assert summary.loc[("sepconv", "maml"), "psnr"] - baseline == pytest.approx(1.0, abs=0.02)
    assert summary.loc[("sepconv", "maml"), "psnr_low"] < summary.loc[("sepconv", "maml"), "psnr"] < summary.loc[("sepconv", "maml"), "psnr_high"]


def test_paired_gains_remove_the_per_sequence_spread(metrics):
    gains = paired_gains(metrics).set_index(["backbone", "method"])
    for backbone, offsets in OFFSETS.items():
        for method, offset in offsets.items():
            if method == "baseline":
                continue
            row = gains.loc[(backbone, method)]
            assert row["gain"] == pytest.approx(offset, abs=0.02)
            # sequences differ by several dB, but the paired interval is as narrow as the noise
            assert row["gain_high"] - row["gain_low"] < 0.05
            assert row["wins"] == (len(SEQUENCES) if offset > 0 else 0)


def test_tables_bold_the_best_method_per_row(metrics, tmp_path):
    markdown = format_psnr_table(summarize_methods(metrics), "md")
    lines = {line.split("|")[1].strip(): line for line in markdown.splitlines() if line.startswith("| ")}
    header = [cell.strip() for cell in lines["Backbone"].split("|")[1:-1]]
    assert header == ["Backbone", "Baseline", "Re-trained", "Fine-tune", "MAML", "Meta-SGD"]
    sepconv = [cell.strip() for cell in lines["sepconv"].split("|")[1:-1]]
    dvf = [cell.strip() for cell in lines["dvf"].split("|")[1:-1]]
    assert [i for i, cell in enumerate(sepconv) if cell.startswith("**")] == [header.index("MAML")]
    assert [i for i, cell in enumerate(dvf) if cell.startswith("**")] == [header.index("Fine-tune")]

    written = write_report(metrics, tmp_path / "out")
    tex = written["table_tex"].read_text()
    assert "\\begin{tabular}" in tex and "\\textbf{" in tex and tex.count("\\begin{table}") == 3
    text = written["table_md"].read_text()
    assert "Paired gain over the baseline" in text and "+1.00" in text
    # meta-training against plain fine-tuning: sepconv MAML 1.0 - 0.3, dvf MAML 0.2 - 0.8
    over_finetuning = pd.read_csv(tmp_path / "out" / "gains_over_finetune.csv").set_index(["backbone", "method"])
    assert sorted(over_finetuning.index.get_level_values("method").unique()) == ["maml", "metasgd"]
    assert over_finetuning.loc[("sepconv", "maml"), "gain"] == pytest.approx(0.7, abs=0.02)
    assert over_finetuning.loc[("dvf", "maml"), "gain"] == pytest.approx(-0.6, abs=0.02)
    assert "over plain fine-tuning at test time" in text
    tidy = pd.read_csv(written["metrics"])
    assert list(tidy.columns) == ["backbone", "size", "protocol", "algorithm", "dataset", "sequence", "seed", "psnr", "ssim", "adapt_seconds"]
    assert len(tidy) == len(metrics)
    assert written["gains_figure"].stat().st_size > 5000


def test_steps_figure_and_qualitative_strips_from_crops(metrics, tmp_path):
    steps = synthetic_metrics(steps_sweep=True)
    steps["method"] = [a if p == "meta" else p for p, a in zip(steps["protocol"], steps["algorithm"])]
    crops_dir = tmp_path / "crops"
    crops_dir.mkdir()
    generator = np.random.default_rng(1)
    rows = []
    truth = generator.random((32, 48, 3))
    for backbone in OFFSETS:
        for sequence in SEQUENCES:
            for panel, image in {"input0": truth, "input1": truth, "gt": truth, "baseline": truth * 0.8,
                                 "finetune": truth * 0.9, "maml": truth * 0.95, "metasgd": truth * 0.9}.items():
                path = crops_dir / f"{backbone}_{sequence}_{panel}.png"
                Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).save(path)
                rows.append(dict(backbone=backbone, dataset="clips", sequence=sequence, seed=0, panel=panel, path=str(path)))
    written = write_report(metrics, tmp_path / "out", steps_metrics=steps, crops=pd.DataFrame(rows), qualitative=3)
    assert written["steps_figure"].is_file()
    strips = sorted(key for key in written if key.startswith("strip_"))
    assert len(strips) == 3
    assert {written[key].name.split("_")[2].removesuffix(".png") for key in strips} >= {"sepconv", "dvf"}  # one per backbone first


def test_missing_columns_name_the_file(tmp_path):
    path = tmp_path / "bad.csv"
    synthetic_metrics().drop(columns=["ssim"]).to_csv(path, index=False)
    with pytest.raises(ReportError, match=r"bad\.csv.*ssim"):
        load_metrics([path])
    with pytest.raises(ReportError, match="not found"):
        load_metrics([tmp_path / "absent"])


def test_qualitative_strips_show_adapted_methods_only(metrics):
    """Frame averaging may beat the baseline by most, but it has no crops to show: never chosen."""
    from savfi_core.report import qualitative_choices

    averaging = metrics[metrics["method"] == "baseline"].copy()
    averaging["method"], averaging["protocol"], averaging["psnr"] = "frame_average", "frame_average", averaging["psnr"] + 5
    choices = qualitative_choices(pd.concat([metrics, averaging], ignore_index=True), count=2)
    assert len(choices) == 2 and set(choices["method"]) <= {"finetune", "maml", "metasgd"}


def test_a_missing_method_and_a_latex_special_name_render_as_before(metrics):
    """The pandas renderers keep the hand-written layout: an absent method is '–' (markdown) or
    '--' (LaTeX), row labels are escaped, and the bold cell is wrapped in \\textbf."""
    renamed = metrics.copy()
    renamed["backbone"] = renamed["backbone"].replace({"dvf": "rife_v4"})
    renamed = renamed[~((renamed["backbone"] == "rife_v4") & (renamed["algorithm"] == "metasgd"))]
    summary = summarize_methods(renamed)
    markdown = format_psnr_table(summary, "md").splitlines()
    assert markdown[1] == "|---|:-:|:-:|:-:|:-:|:-:|"
    rife = next(line for line in markdown if line.startswith("| rife_v4 |"))
    assert rife.endswith(" | – |") and rife.count("**") == 2
    tex = format_psnr_table(summary, "tex").splitlines()
    assert tex[:5] == ["\\begin{table}[t]", "\\centering", "\\small", "\\begin{tabular}{lccccc}", "\\toprule"]
    assert tex[5] == "Backbone & Baseline & Re-trained & Fine-tune & MAML & Meta-SGD \\\\"
    row = next(line for line in tex if line.startswith("rife\\_v4 & "))
    assert row.endswith(" & -- \\\\") and row.count("\\textbf{") == 1
    assert tex[-2].startswith("\\caption{Mean PSNR (dB) / SSIM [95\\% bootstrap") and tex[-1] == "\\end{table}"


def test_gains_by_inner_steps_pair_equal_counts_and_time_per_frame(tmp_path):
    from savfi_core.report import adaptation_time, gains_by_inner_steps

    steps = synthetic_metrics(steps_sweep=True)
    steps["method"] = [a if p == "meta" else p for p, a in zip(steps["protocol"], steps["algorithm"])]
    steps.loc[steps["method"] == "maml", "adapt_seconds"] = 0.25 * steps.loc[steps["method"] == "maml", "inner_steps"]
    gains = gains_by_inner_steps(steps, "finetune")
    assert sorted(gains["inner_steps"].unique()) == [1, 2, 4] and set(gains["method"]) == {"maml", "metasgd"}
    # both adapt with the same count, so the +0.1 dB per step cancels: the offsets' difference stays
    for _, row in gains.iterrows():
        expected = OFFSETS[row["backbone"]][row["method"]] - OFFSETS[row["backbone"]]["finetune"]
        assert abs(row["gain"] - expected) < 0.03, row.to_dict()
        assert row["n_sequences"] == len(SEQUENCES)
    times = adaptation_time(steps).set_index(["backbone", "method", "inner_steps"])
    assert times.loc[("dvf", "maml", 4), "adapt_seconds"] == pytest.approx(1.0)
    assert times.loc[("dvf", "maml", 4), "n_frames"] == 2 * len(SEQUENCES)  # two seeds
    assert gains_by_inner_steps(steps[steps["method"] != "finetune"], "finetune").empty

    metrics_path = tmp_path / "metrics.csv"
    synthetic_metrics().to_csv(metrics_path, index=False)
    written = write_report(load_metrics([metrics_path]), tmp_path / "out", steps_metrics=steps)
    text = written["table_md"].read_text()
    assert "### 2 inner steps" in text and "### 1 inner step\n" in text and "## Adaptation time per frame" in text
    assert (tmp_path / "out" / "gains_by_inner_steps.csv").is_file() and (tmp_path / "out" / "adaptation_time.csv").is_file()


def test_training_curves_are_found_beside_the_evaluated_checkpoints(tmp_path):
    import yaml

    from savfi_core.report import load_training_curves, summarize_training

    evaluation_dirs = []
    for seed in (0, 1):
        checkpoints = {}
        for method in ("maml", "maml_cycle"):
            job = tmp_path / f"meta_train-rife_v4-{method}-seed{seed}"
            job.mkdir()
            steps = np.arange(1, 21)
            curve = pd.DataFrame({"step": steps, "loss": 1.0 / steps, "skipped": steps % 10 == 0,
                                  "val_psnr": np.where(steps % 10 == 0, 30.0 + steps / 10, np.nan)})
            curve.to_csv(job / "training_state.curve.csv", index=False)
            checkpoints[method] = str(job / "meta_checkpoint.pt")
        evaluation = tmp_path / f"evaluate-rife_v4-seed{seed}"
        evaluation.mkdir()
        (evaluation / "parameters.yaml").write_text(yaml.safe_dump({"backbone": "rife_v4", "seed": seed, "checkpoints": checkpoints}))
        evaluation_dirs.append(evaluation)
    (tmp_path / "evaluate-rife_v4-pretrained").mkdir()  # no checkpoints, no curves
    curves = load_training_curves([*evaluation_dirs, tmp_path / "evaluate-rife_v4-pretrained"])
    assert len(curves) == 2 * 2 * 20 and set(curves["method"]) == {"maml", "maml_cycle"}
    summary = summarize_training(curves)
    assert len(summary) == 4 and (summary["rejected"] == 2).all() and (summary["steps"] == 20).all()
    assert (summary["val_psnr_first"] == 31.0).all() and (summary["val_psnr_last"] == 32.0).all()
    assert summary["loss_last_tenth"].lt(summary["loss_first_tenth"]).all()

    metrics_path = tmp_path / "metrics.csv"
    synthetic_metrics().to_csv(metrics_path, index=False)
    written = write_report(load_metrics([metrics_path]), tmp_path / "out", curves=curves)
    assert written["training_figure"].is_file() and written["training"].is_file()
    assert load_training_curves([tmp_path / "evaluate-rife_v4-pretrained"]).empty

    # the grid folder moved (committed records, another machine): the recorded absolute
    # checkpoint paths are gone, the training folders sit beside the evaluations under their names
    moved = tmp_path / "moved"
    moved.mkdir()
    for job in tmp_path.glob("*-rife_v4-*"):
        job.rename(moved / job.name)
    moved_curves = load_training_curves([moved / f"evaluate-rife_v4-seed{seed}" for seed in (0, 1)])
    pd.testing.assert_frame_equal(moved_curves, curves)
