"""The command line's error contract: one line and exit code 2 for a user error, before any work; ``-v`` adds the
traceback; unwritable outputs and meaningless integer flags are refused up front."""

from __future__ import annotations

from pathlib import Path

import pytest

from omniclip import cli

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory):
    """Two classes, one 4-frame 32 px video per class and split."""
    from omniclip.data.synthetic import write_synthetic_dataset

    return write_synthetic_dataset(
        tmp_path_factory.mktemp("data"), classes=["moving left", "moving right"], videos_per_class=1, num_frames=4,
        size=32, splits=("train", "test"),
    )  # fmt: skip


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, lines
    return lines[0]


# ---- -v -----------------------------------------------------------------------------------------------------------


def test_user_errors_are_one_line_and_verbose_adds_the_traceback(capsys) -> None:
    argv = ["train", "--config", str(SMOKE), "train.epochs=0"]
    assert cli.main(argv) == 2
    assert _one_line(capsys.readouterr().err) == (f"omniclip train: error: train.epochs must be >= 1, got 0 ({SMOKE})")
    for verbose in (["-v", *argv], [*argv, "-v"]):  # before or after the subcommand
        assert cli.main(verbose) == 2
        err = capsys.readouterr().err
        assert "Traceback (most recent call last)" in err and "ValueError: train.epochs must be >= 1" in err
        assert err.strip().splitlines()[-1].startswith("omniclip train: error: train.epochs must be >= 1")


def test_verbose_shows_where_a_missing_file_was_raised(tmp_path, capsys) -> None:
    assert cli.main(["-v", "train", "--config", str(tmp_path / "none.yaml")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "FileNotFoundError" in err and f"config file {tmp_path / 'none.yaml'}" in err


# ---- outputs that cannot be written: refused before any work -------------------------------------------------------


def _outputs(dataset, out: Path) -> dict[str, list[str]]:
    """Commands writing into the folder ``out`` (or one file in it), with inputs that would otherwise work."""
    lst, root = str(dataset.lists["train"]), str(dataset.root)
    return {
        "verify": ["verify", lst, "--root", root, "--out", str(out / "bad.txt"), "--no-progress"],
        "prepare": ["prepare", lst, "--root", root, "--out", str(out), "--no-progress"],
        "synthetic": ["synthetic", str(out), "--videos-per-class", "1", "--frames", "4", "--size", "32"],
        "splits": ["splits", "few-shot", lst, "--root", root, "--shots", "1", "--out", str(out)],
        "export": ["export", "--clip", "never-loaded.safetensors", "--classes", "a,b", "--out", str(out)],
        "bench": ["bench", "--json", str(out / "bench.json")],
        "bench-data": ["bench-data", "--json", str(out / "data.json")],
        "pretrain-tiny": ["pretrain-tiny", "--out", str(out / "tiny.safetensors")],
    }


@pytest.mark.parametrize("where", ["is a file", "under a file"])
@pytest.mark.parametrize("command", ["verify", "prepare", "synthetic", "splits", "export", "bench", "bench-data",
                                     "pretrain-tiny"])  # fmt: skip
def test_unwritable_outputs_fail_before_any_work(dataset, where: str, command: str, tmp_path, capsys) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    argv = _outputs(dataset, blocker if where == "is a file" else blocker / "sub" / "deeper")[command]
    assert cli.main(argv) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"omniclip {argv[0]}: error: ") and str(blocker) in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker"] and blocker.read_text() == "a file"


@pytest.mark.parametrize(
    ("command", "what"),
    [("verify", "bad list"), ("bench", "--json"), ("bench-data", "--json"), ("pretrain-tiny", "--out")],
)
def test_an_output_file_that_is_a_folder_is_refused(dataset, command: str, what: str, tmp_path, capsys) -> None:
    folder = tmp_path / "taken.safetensors"
    folder.mkdir()
    argv = _outputs(dataset, tmp_path)[command]
    argv[argv.index(next(a for a in argv if a.startswith(str(tmp_path))))] = str(folder)
    assert cli.main(argv) == 2
    line = _one_line(capsys.readouterr().err)
    assert line == f"omniclip {command}: error: {what} {folder} is a folder; give a file name"
    assert list(folder.iterdir()) == []


# ---- integer flags that make no sense at 0 or below --------------------------------------------------------------

FLAGS = [
    (["predict", "v.mp4", "--clip", "c"], "--frames", "0"),
    (["predict", "v.mp4", "--clip", "c"], "--top-k", "0"),
    (["export", "--clip", "c", "--out", "o"], "--frames", "-1"),
    (["verify", "l.txt"], "--workers", "0"),
    (["prepare", "l.txt", "--out", "o"], "--short-side", "0"),
    (["prepare", "l.txt", "--out", "o"], "--shards", "-1"),
    (["prepare", "l.txt", "--out", "o"], "--gop", "0"),
    (["prepare", "l.txt", "--out", "o"], "--crf", "52"),
    (["prepare", "l.txt", "--out", "o"], "--workers", "0"),
    (["synthetic", "o"], "--videos-per-class", "0"),
    (["synthetic", "o"], "--frames", "0"),
    (["synthetic", "o"], "--size", "-32"),
    (["synthetic", "o"], "--seed", "-1"),
    (["bench-data"], "--clips", "0"),
    (["bench-data"], "--workers", "-1"),
    (["bench"], "--frames", "0"),
    (["bench"], "--size", "0"),
    (["bench"], "--batch", "0"),
    (["bench"], "--classes", "0"),
    (["bench"], "--repeats", "0"),
    (["bench"], "--warmup", "-1"),
    (["bench"], "--batches", "0"),
    (["bench"], "--threads", "0"),
    (["bench"], "--max-batch-limit", "0"),
    (["bench"], "--max-batch-tolerance", "1"),
    (["splits", "few-shot", "l.txt", "--out", "o"], "--shots", "0"),
    (["splits", "zero-shot", "l.txt", "--classes", "c.csv", "--out", "o", "--size", "5"], "--num-splits", "0"),
    (["splits", "base-novel", "--train", "a", "--test", "b", "--classes", "c", "--out", "o"], "--seeds", "-1"),
    (["pretrain-tiny", "--out", "o.safetensors"], "--steps", "0"),
    (["pretrain-tiny", "--eval"], "--eval-images", "0"),
]


@pytest.mark.parametrize(("argv", "flag", "value"), FLAGS, ids=[f"{a[0]} {f} {v}" for a, f, v in FLAGS])
def test_meaningless_integer_flags_are_refused_when_parsed(argv, flag, value, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)  # nothing may be written, even by mistake
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*argv, flag, value])
    assert exit_info.value.code == 2
    line = _one_line(capsys.readouterr().err)
    assert f"argument {flag}" in line and value in line and f"see omniclip {argv[0]}" in line, line
    assert list(tmp_path.iterdir()) == []


def test_parser_errors_are_one_line(capsys) -> None:
    with pytest.raises(SystemExit):
        cli.main(["predict", "--clip", "c", "--frames", "eight", "v.mp4"])
    line = _one_line(capsys.readouterr().err)
    assert line == (
        "omniclip predict: error: argument --frames: expects an integer, got 'eight' (see omniclip predict --help)"
    )


def test_overrides_may_follow_flags(tmp_path, monkeypatch) -> None:
    seen: dict[str, object] = {}

    def load_config(path, overrides):
        seen["o"] = overrides
        raise ValueError("stop here")

    monkeypatch.setattr("omniclip.commands.train.load_config", load_config)
    argv = ["train", "--config", "c.yaml", "train.lr=0.1", "--output", str(tmp_path / "r"), "train.seed=3"]
    assert cli.main(argv) == 2
    assert seen["o"] == ["train.lr=0.1", "train.seed=3"]


def test_unknown_arguments_are_still_refused(capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        cli.main(["train", "--config", "c.yaml", "--no-such-flag"])
    assert stop.value.code == 2 and "unrecognized arguments: --no-such-flag" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["predict", "v.mp4", "--clip", "x", "a=1"])


def test_help_opens_with_a_sentence_for_users(capsys) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert "Recognise actions in videos" in out and "command line: one short function" not in out
