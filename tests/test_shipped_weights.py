"""The tiny weights shipped inside the package: loadable, and each with its provenance."""
import json

import pytest
import torch

from savfi_core.backbones import create_model, default_weights_path, list_pretrained

# The six paper backbones ship tiny weights trained by savfi; RIFE's released weights are paper-size only.
SHIPPED_TINY = ["cain", "dain", "dvf", "rrin", "sepconv", "superslomo"]

PROVENANCE_FIELDS = ("model", "size", "training_data", "test_data", "steps", "wall_time_seconds", "machine",
                     "git_commit", "test_psnr", "test_frame_average_psnr", "test_gain_db", "target_reached")


def test_exactly_the_six_paper_backbones_ship_tiny_weights():
    assert sorted(name for name, _ in list_pretrained("tiny")) == SHIPPED_TINY


@pytest.mark.parametrize("name", SHIPPED_TINY)
def test_default_tiny_weights_load_and_carry_provenance(name):
    path = default_weights_path(name, "tiny")
    assert path.is_file(), f"no shipped weights at {path}"
    model = create_model(name, size="tiny", weights="default")
    reference = torch.load(path, weights_only=True)
    assert all(torch.equal(model.state_dict()[key], value) for key, value in reference.items())
    provenance = json.loads(path.with_suffix(".json").read_text())
    missing = [field for field in PROVENANCE_FIELDS if field not in provenance]
    assert not missing, f"{path.with_suffix('.json')} lacks {missing}"
    assert provenance["model"] == name and provenance["size"] == "tiny"
    gain = provenance["test_psnr"] - provenance["test_frame_average_psnr"]
    assert gain == pytest.approx(provenance["test_gain_db"], abs=1e-3)
    # the claim in the file must agree with its own numbers
    assert provenance["target_reached"] == (provenance["test_gain_db"] >= 0.3)
