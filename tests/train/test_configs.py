"""Every shipped YAML validates; overrides, environment expansion and config errors behave as documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from omniclip import cli
from omniclip.config import (
    RunConfig,
    config_from_dict,
    config_to_dict,
    load_config,
    parse_override,
    save_config,
    valid_keys,
)

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
ALL_YAML = sorted(CONFIGS.rglob("*.yaml"))


def test_the_expected_number_of_configs_is_shipped() -> None:
    # smoke + 2 supervised + 3 few-shot + 4 zero-shot + 4 base-to-novel
    assert len(ALL_YAML) == 14, [str(p.relative_to(CONFIGS)) for p in ALL_YAML]


@pytest.mark.parametrize("path", ALL_YAML, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_config_validates_and_round_trips(path: Path, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("OMNICLIP_DATA", "/datasets")
    cfg = load_config(path)
    assert cfg.data.root.startswith("/datasets/"), "dataset locations come from $OMNICLIP_DATA"
    assert "${" not in str(config_to_dict(cfg))
    assert config_from_dict(config_to_dict(cfg)) == cfg
    saved = save_config(cfg, tmp_path / "config.yaml")
    assert load_config(saved) == cfg


def test_protocol_configs_follow_the_protocols() -> None:
    few = load_config(CONFIGS / "few_shot" / "hmdb51_vitb16.yaml", ["protocol.shots=2"])
    assert (few.protocol.name, few.protocol.shots, few.data.num_frames, len(few.data.test_lists)) == (
        "few_shot",
        2,
        32,
        3,
    )
    sup = load_config(CONFIGS / "supervised" / "k400_vitb16_16f.yaml")
    assert (sup.data.num_frames, sup.eval.clips, sup.eval.crops, sup.clip.source) == (16, 4, 3, "ViT-B/16")
    k600 = load_config(CONFIGS / "zero_shot" / "k600_vitb16.yaml")
    assert (k600.protocol.class_subset, k600.protocol.num_subsets) == (160, 3)
    assert k600.protocol.subset_class_files == tuple(f"ZS_split{k}_K600.csv" for k in (1, 2, 3))  # the published ones
    b2n = load_config(CONFIGS / "base_to_novel" / "ssv2_vitb16.yaml")
    assert (b2n.protocol.seeds, b2n.protocol.shots, b2n.data.flip) == ((0, 1, 2), 16, False)
    assert b2n.protocol.base_class_file == "ssv2_174_base_labels.csv"  # ViFi-CLIP's halves, not the first ids


def test_overrides_come_last_and_are_typed(monkeypatch) -> None:
    monkeypatch.delenv("OMNICLIP_DATA", raising=False)
    cfg = load_config(
        CONFIGS / "smoke.yaml",
        [
            "train.lr=1e-4",
            "model.pta_layers=[0, -1]",
            "data.test_lists=[a.txt,b.txt]",
            "train.epochs=3",
            "train.lr=2e-4",
        ],
    )
    assert cfg.train.lr == 2e-4 and cfg.train.epochs == 3  # the last override wins; "1e-4" (YAML str) is a float
    assert cfg.model.pta_layers == (0, -1) and cfg.data.test_lists == ("a.txt", "b.txt")
    assert cfg.data.root == "data/synthetic" and cfg.data.num_frames == 4  # env default, then the YAML value
    assert parse_override("model.pta_layers=null") == (["model", "pta_layers"], None)
    assert load_config(None, ["model.pta_layers=null"]).model.pta_layers is None
    assert load_config(None) == RunConfig()


def test_environment_variables_expand(monkeypatch) -> None:
    monkeypatch.setenv("MY_DATA", "/mnt/videos")
    assert load_config(None, ["data.root=${MY_DATA}/ucf"]).data.root == "/mnt/videos/ucf"
    assert load_config(None, ["data.root=${UNSET_VAR_X:-here}"]).data.root == "here"
    with pytest.raises(ValueError, match="data.root: environment variable UNSET_VAR_X is not set"):
        load_config(None, ["data.root=${UNSET_VAR_X}"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.lrr=1", "unknown config key train.lrr; valid keys in train: epochs, max_steps, batch_size"),
        ("trian.lr=1", "unknown config key trian; valid keys in the top level: clip, model, data, train"),
        ("train.lr=fast", "config key train.lr expects float, got 'fast'"),
        ("train.epochs=1.5", "config key train.epochs expects int, got 1.5"),
        ("train.amp=fp16", "config key train.amp expects one of auto|bf16|off"),
        ("model.variant=big", "config key model.variant expects one of omniclip|frame_average"),
        ("model.pta_ratio=2", "model.pta_ratio must be in (0, 1]"),
        ("data.flip=maybe", "config key data.flip expects bool"),
        ("train", "is not of the form section.key=value"),
    ],
)
def test_bad_overrides_fail_at_start_with_one_line(override: str, message: str, capsys) -> None:
    assert cli.main(["train", "--config", str(CONFIGS / "smoke.yaml"), override]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_bad_files_fail_at_start_naming_the_file(tmp_path, capsys) -> None:
    assert cli.main(["train", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert f"config file {tmp_path / 'nope.yaml'} not found" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: [1\n")
    assert cli.main(["eval", "--config", str(bad)]) == 2
    assert f"config file {bad} line" in capsys.readouterr().err
    lst = tmp_path / "typo.yaml"
    lst.write_text("train:\n  lr: 1.0e-3\n  epoch: 3\n")
    assert cli.main(["train", "--config", str(lst), "--set", "train.epochs=2"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key train.epoch;" in err and str(lst) in err
    assert cli.main(["train", "--config", str(CONFIGS / "smoke.yaml"), f"data.root={tmp_path}"]) == 2
    assert f"data.class_names: {tmp_path / 'classes.csv'} not found" in capsys.readouterr().err


def test_valid_keys_cover_every_section() -> None:
    keys = valid_keys()
    assert {"clip.source", "model.variant", "data.root", "train.lr", "eval.clips", "protocol.shots"} <= set(keys)
    assert len(keys) == len(set(keys))


def test_missing_weights_or_checkpoint_fail_with_one_line(smoke_args, tmp_path, capsys) -> None:
    args = [a for a in smoke_args if not a.startswith("clip.source=")]
    assert (
        cli.main(["train", "--output", str(tmp_path / "run"), *args, f"clip.source={tmp_path / 'no.safetensors'}"]) == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(tmp_path / "no.safetensors") in err[0]
    assert not (tmp_path / "run" / "checkpoints").exists()
    assert cli.main(["eval", "--checkpoint", str(tmp_path / "nothing"), *smoke_args]) == 2
    assert f"no checkpoint at {tmp_path / 'nothing'}" in capsys.readouterr().err
    assert cli.main(["train", "--resume", "--output", str(tmp_path / "fresh"), *smoke_args]) == 2
    assert f"no checkpoint at {tmp_path / 'fresh'}" in capsys.readouterr().err
