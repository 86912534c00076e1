"""Every shipped YAML validates; overrides, environment expansion and config errors behave as documented."""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path

import pytest

from omniclip import cli
from omniclip.config import (
    RunConfig,
    TrainConfig,
    config_from_dict,
    config_to_dict,
    load_config,
    parse_override,
    replace_sections,
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
        ("model.qk_norm=maybe", "config key model.qk_norm expects bool"),
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
    assert f"--resume: run folder {tmp_path / 'fresh'} does not exist" in capsys.readouterr().err


# ---- every numeric and choice-valued key is checked at load -------------------------------------------------------

# Values outside each numeric key's valid range, as written on the command line (YAML). A new numeric key needs an
# entry here (test_every_numeric_key_has_bad_values), so its range is written and checked.
BAD_NUMBERS: dict[str, list[str]] = {
    "model.pta_layers": ["[]", "[0, 0]"],
    "model.pta_ratio": ["0", "1.5", ".nan"],
    "model.pta_heads": ["0"],
    "model.spg_layers": ["[]", "[1, 1]"],
    "model.spg_ratio": ["0", "2"],
    "model.spg_heads": ["0", "-1"],
    "model.spg_scales": ["[]", "[0]", "[1, 1]"],
    "model.spg_window": ["-1"],
    "model.text_context": ["-1"],
    "model.drop_path": ["-0.1", "1", ".nan"],
    "model.logit_scale": ["0", "-1", "101", ".nan"],
    "model.temporal_init_std": ["0", "-0.5", ".inf", ".nan"],
    "data.num_frames": ["0", "-1"],
    "data.image_size": ["0"],
    "data.short_side": ["-1", "16"],  # 16 < data.image_size (32 in smoke.yaml): the crop would not fit
    "data.workers": ["-1"],
    "data.frame_interval": ["0"],
    "data.rand_augment_ops": ["-1"],
    "data.rand_augment_magnitude": ["-1", "11"],
    "data.mixup_alpha": ["-0.2", ".inf"],
    "data.label_smoothing": ["-0.1", "1"],
    "data.crop_scales": ["[]", "[0]", "[1.5]"],
    "train.epochs": ["0", "-1"],
    "train.max_steps": ["-5"],
    "train.batch_size": ["0", "-4"],
    "train.global_batch_size": ["-1", "6"],  # 6 is not a multiple of train.batch_size (4 in smoke.yaml)
    "train.lr": ["0", "-1e-4", ".inf", ".nan"],
    "train.text_lr_scale": ["0", "-1", ".nan"],
    "train.logit_lr_scale": ["0", "-1", ".inf"],
    "train.backbone_lr_scale": ["0", "-2", ".nan"],
    "train.min_lr": ["-1e-6", "1"],  # 1 > train.lr
    "train.warmup_epochs": ["-1"],
    "train.weight_decay": ["-0.1"],
    "train.betas": ["[0.9]", "[0.9, 1.0]", "[-0.1, 0.9]"],
    "train.eps": ["0"],
    "train.grad_clip": ["-1"],
    "train.seed": ["-1", str(2**32)],
    "train.log_every": ["0"],
    "train.checkpoint_every": ["-1"],
    "train.keep_checkpoints": ["0"],
    "eval.clips": ["0"],
    "eval.crops": ["0", "2"],
    "eval.batch_size": ["0"],
    "eval.workers": ["-2"],
    "protocol.shots": ["0"],
    "protocol.seeds": ["[]", "[-1]", "[0, 0]"],
    "protocol.class_subset": ["-1"],
    "protocol.num_subsets": ["0"],
    "protocol.base_classes": ["-1"],
}
BAD_CHOICES: dict[str, list[str]] = {
    "clip.activation": ["relu"],
    "model.variant": ["big"],
    "model.spg_mixing": ["sum"],
    "data.list_format": ["json"],
    "data.decoder": ["ffmpeg"],
    "data.sampling": ["random"],
    "train.amp": ["fp16", "yes"],
    "train.device": ["gpu", "cuda:x", "mps"],
    "protocol.name": ["linear_probe"],
}
BAD = [(key, value) for table in (BAD_NUMBERS, BAD_CHOICES) for key, values in table.items() for value in values]


def _is_numeric(tp) -> bool:
    if tp in (int, float):
        return True
    if typing.get_origin(tp) is typing.Literal:
        return all(isinstance(a, int) for a in typing.get_args(tp))  # numeric choices: eval.crops
    if typing.get_origin(tp) not in (tuple, typing.Union, types.UnionType):
        return False
    args = [a for a in typing.get_args(tp) if a not in (type(None), Ellipsis)]
    return bool(args) and all(map(_is_numeric, args))


def _leaf_types(cls: type = RunConfig, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for name, tp in typing.get_type_hints(cls).items():
        key = f"{prefix}{name}"
        out |= _leaf_types(tp, f"{key}.") if dataclasses.is_dataclass(tp) else {key: tp}
    return out


def test_every_numeric_key_has_bad_values() -> None:
    numeric = {k for k, tp in _leaf_types().items() if _is_numeric(tp)}
    assert numeric == set(BAD_NUMBERS), "add the new numeric key to BAD_NUMBERS with values outside its range"
    literal = {k for k, tp in _leaf_types().items() if typing.get_origin(tp) is typing.Literal and not _is_numeric(tp)}
    assert literal | {"train.device"} == set(BAD_CHOICES), "add the new choice-valued key to BAD_CHOICES"


@pytest.mark.parametrize(("key", "value"), BAD, ids=[f"{k}={v}" for k, v in BAD])
def test_values_outside_their_range_fail_at_load_naming_the_key(key: str, value: str) -> None:
    with pytest.raises(ValueError) as err:
        load_config(CONFIGS / "smoke.yaml", [f"{key}={value}"])
    msg = str(err.value)
    assert key in msg and "\n" not in msg, msg
    assert "got" in msg or "duplicates" in msg, msg  # the value given, beside what is valid


@pytest.mark.parametrize(("key", "value"), BAD, ids=[f"{k}={v}" for k, v in BAD])
def test_train_refuses_bad_values_before_creating_the_run_folder(key: str, value: str, tmp_path, capsys) -> None:
    run = tmp_path / "run"
    assert cli.main(["train", "--config", str(CONFIGS / "smoke.yaml"), "--output", str(run), f"{key}={value}"]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("omniclip train: error: ") and key in err[0], err
    assert captured.out == "" and not run.exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epochs=0", "train.epochs must be >= 1, got 0"),
        ("train.max_steps=-5", "train.max_steps must be >= 0, got -5"),
        ("train.grad_clip=-1", "train.grad_clip must be >= 0, got -1.0"),
        ("train.log_every=0", "train.log_every must be >= 1, got 0"),
        ("eval.batch_size=0", "eval.batch_size must be >= 1, got 0"),
        ("train.lr=.inf", "train.lr must be > 0, got inf"),
        ("train.betas=[0.9, 1]", "train.betas[1] must be in [0, 1), got 1.0"),
        ("train.device=gpu", "train.device must be auto, cpu, cuda or cuda:N, got 'gpu'"),
        ("data.decoder=ffmpeg", "config key data.decoder expects one of pyav|pyav-cuda|opencv|decord, got 'ffmpeg'"),
        ("eval.crops=2", "config key eval.crops expects one of 1|3, got 2"),
        ("protocol.seeds=[0, -3]", "protocol.seeds[1] must be in [0, 4294967295], got -3"),
    ],
)
def test_range_errors_name_key_value_and_range(override: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        load_config(None, [override])


def test_sections_check_their_ranges_when_built_directly() -> None:
    with pytest.raises(ValueError, match=re.escape("train.epochs must be >= 1, got 0")):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match=re.escape("eval.workers must be >= -1, got -3")):
        replace_sections(RunConfig(), eval={"workers": -3})
    assert load_config(None, ["train.amp=off", "train.device=cuda:1"]).train.amp == "off"  # YAML reads off as False


@pytest.mark.parametrize("override", ["data.dataset=@x", "data.test_lists=[1,", "train.lr={"])
def test_overrides_that_are_not_yaml_fail_with_one_line(override: str, capsys) -> None:
    with pytest.raises(ValueError, match=re.escape(f"override {override!r}: the value is not valid YAML")):
        load_config(None, [override])
    assert cli.main(["train", "--config", str(CONFIGS / "smoke.yaml"), override]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and override in err[0] and "Traceback" not in err[0], err
    assert load_config(None, ["data.dataset='@x'"]).data.dataset == "@x"  # quoted, as the message says


def test_data_keys_reach_the_training_and_evaluation_datasets(smoke_args, tmp_path, capsys, monkeypatch) -> None:
    """Frame sampling goes to both datasets, RandAugment to the training one; mixup and smoothing train on."""
    from omniclip.data.dataset import VideoDataset
    from omniclip.protocols import runners
    from omniclip.train import loop

    made: list[dict] = []

    class Recorded(VideoDataset):
        def __init__(self, records, **kw) -> None:
            made.append(kw)
            super().__init__(records, **kw)

    monkeypatch.setattr(loop, "VideoDataset", Recorded)
    monkeypatch.setattr(runners, "VideoDataset", Recorded)
    keys = ["data.sampling=dense", "data.frame_interval=3", "data.rand_augment_ops=2", "data.rand_augment_magnitude=5"]
    keys += ["data.mixup_alpha=0.8", "data.label_smoothing=0.1", "train.max_steps=2", "data.test_lists=[test1.txt]"]
    keys += ["data.crop_scales=[1.0, 0.9]"]
    assert cli.main(["train", "--output", str(tmp_path / "run"), *smoke_args, *keys]) == 0
    trained, tested = made
    assert (trained["mode"], trained["sampling"], trained["frame_interval"]) == ("train", "dense", 3)
    assert (trained["rand_augment_ops"], trained["rand_augment_magnitude"]) == (2, 5)
    assert trained["crop_scales"] == (1.0, 0.9)
    assert (tested["mode"], tested["sampling"], tested["frame_interval"]) == ("test", "dense", 3)
    assert "rand_augment_ops" not in tested and "crop_scales" not in tested
    saved = load_config(tmp_path / "run" / "config.yaml").data
    assert (saved.mixup_alpha, saved.label_smoothing) == (0.8, 0.1)
