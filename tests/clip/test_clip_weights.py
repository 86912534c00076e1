"""Checkpoint loading: save/load round trip, name resolution, converters, and one clear error per bad input."""

from __future__ import annotations

import copy
import logging
import warnings
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from omniclip.clip import build_clip, get_preset, load_clip, save_clip
from omniclip.clip import weights as weights_mod
from omniclip.clip.formats import config_from_state_dict, hf_to_openai, mapped_key
from omniclip.clip.torchscript import read_torchscript
from omniclip.clip.weights import OPENAI_URLS, cache_dir, resolve_source


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture
def openai_pt(tmp_path: Path, tiny_clip) -> Path:
    """The tiny CLIP as a plain OpenAI-named state dict (heads are then width // 64 = 1)."""
    torch.save(tiny_clip.state_dict(), tmp_path / "tiny.pt")
    return tmp_path / "tiny.pt"


def test_save_clip_round_trip(tmp_path: Path, tiny_clip, caplog) -> None:
    path = save_clip(tiny_clip, tmp_path / "sub" / "tiny.safetensors")
    assert path.is_file() and not list(path.parent.glob(".*tmp"))
    with caplog.at_level(logging.INFO, logger="omniclip.clip.weights"):
        loaded = load_clip(path)
    assert loaded.cfg == tiny_clip.cfg  # heads (2 at width 64) come from the metadata, not the shapes
    assert _same_weights(loaded, tiny_clip)
    assert not loaded.training
    report = loaded.load_report
    assert (report.format, report.activation_from) == ("omniclip", "saved architecture")
    assert report.num_params == sum(p.numel() for p in tiny_clip.parameters())
    assert report.architecture.startswith("tiny (vision 64x2L/2h patch 8 @ 32px")
    assert "[omniclip]: tiny (vision" in caplog.text and "M params, quick_gelu" in caplog.text


def test_save_clip_leaves_out_injected_branches(tmp_path: Path, tiny_clip) -> None:
    block = tiny_clip.visual.transformer.resblocks[0]
    block.pta = nn.Linear(64, 64)  # stands in for an adapter: its keys are not CLIP's
    save_clip(tiny_clip, tmp_path / "x.safetensors")
    block.pta = None
    assert _same_weights(load_clip(tmp_path / "x.safetensors"), tiny_clip)


def test_dtype_device_and_requires_grad(tmp_path: Path, tiny_clip) -> None:
    save_clip(tiny_clip, tmp_path / "x.safetensors")
    model = load_clip(tmp_path / "x.safetensors", device="cpu", dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert all(p.device.type == "cpu" and p.requires_grad for p in model.parameters())
    out = model.encode_image(torch.randn(1, 3, 32, 32, dtype=torch.bfloat16))
    assert out.shape == (1, 32) and out.dtype == torch.bfloat16


def test_plain_state_dict_heads_and_activation_override(openai_pt: Path) -> None:
    model = load_clip(openai_pt)
    assert model.load_report.format == "openai" and model.cfg.activation == "quick_gelu"
    assert (model.cfg.vision.heads, model.cfg.text.heads) == (1, 1)  # OpenAI's rule width // 64, at least 1
    assert model.cfg.vision.image_size == 32 and model.cfg.text.vocab_size == 49408
    assert load_clip(openai_pt, activation="gelu").cfg.activation == "gelu"
    with pytest.raises(ValueError, match="activation 'relu' is not supported"):
        load_clip(openai_pt, activation="relu")


def test_openclip_custom_text_layout(tmp_path: Path, tiny_clip) -> None:
    """OpenCLIP's CustomTextCLIP keeps the text tower under ``text.``; it loads as the same CLIP."""
    own = tiny_clip.state_dict()
    sd = {(k if k.startswith(("visual.", "logit_scale")) else "text." + k): v for k, v in own.items()}
    assert "text.transformer.resblocks.0.attn.in_proj_weight" in sd
    torch.save({"state_dict": sd}, tmp_path / "custom_text.pt")
    model = load_clip(tmp_path / "custom_text.pt")
    assert model.load_report.format == "openclip" and model.cfg.activation == "gelu"
    assert _same_weights(model, tiny_clip)


def test_derived_architecture_of_vit_b16_shapes() -> None:
    with torch.device("meta"):
        sd = build_clip("ViT-B-16").state_dict()
    assert config_from_state_dict(sd, "quick_gelu") == get_preset("ViT-B-16")
    with torch.device("meta"):
        sd = build_clip("ViT-L-14-336").state_dict()
    assert config_from_state_dict(sd, "quick_gelu") == get_preset("ViT-L/14@336px")


def test_names_resolve_in_cache(tmp_path: Path, monkeypatch, tiny_clip) -> None:
    monkeypatch.setenv("OMNICLIP_CACHE", str(tmp_path))
    assert cache_dir() == tmp_path
    save_clip(tiny_clip, tmp_path / "ViT-B-16.safetensors")
    torch.save(tiny_clip.state_dict(), tmp_path / "ViT-L-14-336px.pt")  # OpenAI's own file name
    assert resolve_source("ViT-B/16") == tmp_path / "ViT-B-16.safetensors"
    assert resolve_source("ViT-B-16") == tmp_path / "ViT-B-16.safetensors"
    assert resolve_source("ViT-L/14@336px") == tmp_path / "ViT-L-14-336px.pt"
    assert _same_weights(load_clip("ViT-B/16"), tiny_clip)


def test_missing_name_says_where_and_url(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("OMNICLIP_CACHE", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError) as err:
        load_clip("ViT-B/16")
    msg = str(err.value)
    assert str(tmp_path / "cache" / "ViT-B-16.pt") in msg and str(tmp_path / "cache" / "ViT-B-16.safetensors") in msg
    assert OPENAI_URLS["ViT-B-16"] in msg and "OMNICLIP_CACHE" in msg
    assert "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt" in msg
    with pytest.raises(FileNotFoundError, match=r"ViT-L-14-336px\.pt"):
        load_clip("ViT-L/14@336px")
    with pytest.raises(FileNotFoundError, match=r"ViT-H-14\.pt.*put its weights in"):
        load_clip("ViT-H-14")
    with pytest.raises(FileNotFoundError, match=r"nowhere/x\.pt: no such checkpoint"):
        load_clip(tmp_path / "nowhere" / "x.pt")


def test_packaged_asset_name(tmp_path: Path, monkeypatch, tiny_clip) -> None:
    monkeypatch.setattr(weights_mod, "ASSETS", tmp_path)
    save_clip(tiny_clip, tmp_path / "omniclip-tiny.safetensors")
    monkeypatch.setenv("OMNICLIP_CACHE", str(tmp_path / "empty"))
    assert _same_weights(load_clip("omniclip-tiny"), tiny_clip)


@pytest.mark.skipif(
    not (weights_mod.ASSETS / "omniclip-tiny.safetensors").is_file(), reason="embedded CLIP not shipped yet"
)
def test_shipped_embedded_clip_loads() -> None:
    model = load_clip("omniclip-tiny")
    assert model.load_report.format == "omniclip"
    size = model.cfg.vision.image_size
    assert model.encode_image(torch.zeros(1, 3, size, size)).shape == (1, model.cfg.embed_dim)


def test_hf_converter_table() -> None:
    assert mapped_key("vision_model.encoder.layers.11.mlp.fc2.bias", weights_mod.formats.HF_KEYS) == (
        "visual.transformer.resblocks.11.mlp.c_proj.bias"
    )
    q, k, v = torch.full((4, 4), 1.0), torch.full((4, 4), 2.0), torch.full((4, 4), 3.0)
    out = hf_to_openai(
        {
            "text_model.encoder.layers.0.self_attn.q_proj.weight": q,
            "text_model.encoder.layers.0.self_attn.k_proj.weight": k,
            "text_model.encoder.layers.0.self_attn.v_proj.weight": v,
            "visual_projection.weight": torch.arange(6.0).view(2, 3),
            "vision_model.pre_layrnorm.weight": torch.ones(3),
            "text_model.embeddings.position_ids": torch.arange(4)[None],
        }
    )
    assert torch.equal(out["transformer.resblocks.0.attn.in_proj_weight"], torch.cat([q, k, v]))
    assert torch.equal(out["visual.proj"], torch.arange(6.0).view(2, 3).t())
    assert set(out) == {"transformer.resblocks.0.attn.in_proj_weight", "visual.proj", "visual.ln_pre.weight"}
    with pytest.raises(ValueError, match="unknown Hugging Face CLIP key 'vision_model.encoder.layers.0.foo.weight'"):
        hf_to_openai({"vision_model.encoder.layers.0.foo.weight": q})
    with pytest.raises(ValueError, match=r"missing key text_model.encoder.layers.0.self_attn.v_proj.weight"):
        hf_to_openai(
            {
                "text_model.encoder.layers.0.self_attn.q_proj.weight": q,
                "text_model.encoder.layers.0.self_attn.k_proj.weight": k,
            }
        )


# ---- TorchScript archives (OpenAI's release format), read without torch.jit.load ----


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4)
        self.proj = nn.Linear(4, 4, bias=False)  # a None parameter: absent from the state dict
        self.register_buffer("table", torch.arange(6.0).view(2, 3).half())  # fp16 storage
        self.register_buffer("steps", torch.tensor(7))  # int64 scalar
        self.cache = torch.zeros(3)  # a plain tensor attribute: not a parameter or buffer, not in the state dict
        self.name = "block"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(x)) + self.cache.sum()


class _Nested(nn.Module):
    """Nested submodules, a ModuleList, parameters, buffers, views of one storage and a tied weight."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones([]))
        self.blocks = nn.ModuleList([_Block(), _Block()])
        self.head = nn.Linear(4, 4)
        self.tail = nn.Linear(4, 4)
        self.tail.weight = self.head.weight
        whole = torch.randn(5, 6)
        self.register_buffer("whole", whole)
        self.register_buffer("part", whole.t()[1:3])  # a strided view sharing whole's storage
        self.register_buffer("mask", torch.ones(2, 2, dtype=torch.bool), persistent=False)
        self.sizes = [1, 2]  # a typed list attribute (torch.jit._pickle.build_intlist in data.pkl)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.tail(self.head(x)) * self.scale


def _jit_state_dict(path: Path) -> dict[str, torch.Tensor]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return dict(torch.jit.load(str(path)).state_dict())


def _assert_same_tensors(ours: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> None:
    assert list(ours) == list(ref)
    for key, value in ref.items():
        assert ours[key].dtype == value.dtype and ours[key].stride() == value.stride(), key
        assert ours[key].storage_offset() == value.storage_offset() and torch.equal(ours[key], value), key
        assert not ours[key].requires_grad and ours[key].device.type == "cpu"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_reader_equals_jit_load(tmp_path: Path) -> None:
    torch.jit.save(torch.jit.script(_Nested()), str(tmp_path / "nested.pt"))
    ours, ref = read_torchscript(tmp_path / "nested.pt"), _jit_state_dict(tmp_path / "nested.pt")
    _assert_same_tensors(ours, ref)
    assert "blocks.1.table" in ours and "blocks.0.cache" not in ours and "blocks.0.proj.bias" not in ours
    assert ours["blocks.0.table"].dtype == torch.float16 and ours["mask"].dtype == torch.bool
    assert ours["part"].untyped_storage().data_ptr() == ours["whole"].untyped_storage().data_ptr()
    assert not ours["part"].is_contiguous()
    assert ours["tail.weight"].data_ptr() == ours["head.weight"].data_ptr()


def test_openai_torchscript_archive(tmp_path: Path, tiny_clip, trace_openai_archive, monkeypatch) -> None:
    path = tmp_path / "ViT-T-8.pt"
    trace_openai_archive(copy.deepcopy(tiny_clip)).half().save(str(path))  # fp16, as OpenAI released ViT-B-16.pt
    ours = read_torchscript(path)
    _assert_same_tensors(ours, _jit_state_dict(path))
    assert ours["visual.conv1.weight"].dtype == torch.float16 and ours["input_resolution"].item() == 32

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("torch.jit.load must not be used to read weights")

    monkeypatch.setattr(torch.jit, "load", refuse)
    model = load_clip(path)
    assert model.load_report.format == "openai-torchscript" and model.cfg.activation == "quick_gelu"
    assert (model.cfg.vision.heads, model.cfg.text.heads) == (1, 1)  # width // 64, as for every OpenAI file
    expected = {k: v.half().float() for k, v in tiny_clip.state_dict().items()}
    got = model.state_dict()
    assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in expected)


def _rewrite_zip(src: Path, dst: Path, change: dict[str, bytes | None]) -> Path:
    """A copy of the zip ``src`` with entries ending in a key of ``change`` replaced (or dropped for None)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            hit = next((v for k, v in change.items() if info.filename.endswith(k)), b"")
            if hit is None:
                continue
            zout.writestr(info, hit or zin.read(info))
    return dst


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_corrupt_torchscript_archives(tmp_path: Path) -> None:
    good = tmp_path / "good.pt"
    torch.jit.save(torch.jit.script(_Nested()), str(good))
    short = _rewrite_zip(good, tmp_path / "short.pt", {"/data/0": b"\0\0"})  # entries keep the prefix good/
    with pytest.raises(ValueError, match=r"short\.pt: TorchScript storage good/data/0 holds 2 bytes, data\.pkl says 4"):
        load_clip(short)
    gone = _rewrite_zip(good, tmp_path / "gone.pt", {"/data/0": None})
    with pytest.raises(ValueError, match=r"gone\.pt: TorchScript archive lacks good/data/0 \(truncated\?\)$"):
        load_clip(gone)
    nopkl = _rewrite_zip(good, tmp_path / "nopkl.pt", {"/data.pkl": None})
    with pytest.raises(ValueError, match=r"nopkl\.pt: TorchScript archive has no <name>/data\.pkl"):
        load_clip(nopkl)
    with zipfile.ZipFile(good) as z:
        source = next(n for n in z.namelist() if n.endswith(".py") and b"class _Nested(" in z.read(n))
    nocode = _rewrite_zip(good, tmp_path / "nocode.pt", {source: b"class Other(Module):\n  pass\n"})
    with pytest.raises(ValueError, match=r"nocode\.pt: TorchScript archive has no source for class \S*_Nested \("):
        load_clip(nocode)


# ---- bad inputs: one clear error naming the file and what is wrong ----


def test_truncated_files(tmp_path: Path, openai_pt: Path, tiny_clip) -> None:
    cut = tmp_path / "cut.pt"
    cut.write_bytes(openai_pt.read_bytes()[: openai_pt.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"cut\.pt: cannot read it as safetensors, torch\.save or TorchScript"):
        load_clip(cut)
    st = save_clip(tiny_clip, tmp_path / "full.safetensors")
    cut_st = tmp_path / "cut.safetensors"
    cut_st.write_bytes(st.read_bytes()[: st.stat().st_size - 1000])
    with pytest.raises(ValueError, match=r"cut\.safetensors: cannot read.*truncated"):
        load_clip(cut_st)


def test_random_bytes(tmp_path: Path) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(1)).tolist()))
    with pytest.raises(ValueError, match=r"junk\.bin: cannot read"):
        load_clip(junk)


def test_missing_key(tmp_path: Path, tiny_clip) -> None:
    sd = tiny_clip.state_dict()
    del sd["visual.proj"]
    save_file(sd, str(tmp_path / "x.safetensors"))
    with pytest.raises(ValueError, match=r"x\.safetensors: missing key visual\.proj$"):
        load_clip(tmp_path / "x.safetensors")


def test_unexpected_key(tmp_path: Path, tiny_clip) -> None:
    torch.save({**tiny_clip.state_dict(), "visual.head.weight": torch.zeros(2)}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match=r"x\.pt: unexpected key visual\.head\.weight; not a CLIP ViT"):
        load_clip(tmp_path / "x.pt")


def test_shape_mismatch(tmp_path: Path, tiny_clip) -> None:
    sd = tiny_clip.state_dict()
    sd["visual.transformer.resblocks.1.mlp.c_fc.weight"] = torch.zeros(100, 64)
    torch.save(sd, tmp_path / "x.pt")
    with pytest.raises(ValueError, match=r"x\.pt: key visual\.transformer\.resblocks\.1\.mlp\.c_fc\.weight has shape"):
        load_clip(tmp_path / "x.pt")


def test_unknown_format(tmp_path: Path) -> None:
    other = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Linear(8, 2))
    torch.save(other.state_dict(), tmp_path / "resnet.pth")
    with pytest.raises(ValueError, match=r"resnet\.pth: unknown checkpoint format: no CLIP keys found \(first keys: 0"):
        load_clip(tmp_path / "resnet.pth")
    torch.save({"visual.layer1.0.conv1.weight": torch.zeros(1)}, tmp_path / "rn50.pt")
    with pytest.raises(ValueError, match=r"rn50\.pt: ResNet CLIP .* not supported"):
        load_clip(tmp_path / "rn50.pt")


def test_unsafe_pickle_is_refused(tmp_path: Path) -> None:
    torch.save({"weights": nn.Linear(2, 2)}, tmp_path / "module.pt")  # a pickled module, not a state dict
    with pytest.raises(ValueError, match=r"module\.pt: torch\.load\(weights_only=True\) refused it"):
        load_clip(tmp_path / "module.pt")


def test_folder_without_weights(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"no CLIP weights found; expected config\.json with one of"):
        load_clip(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"")
    (tmp_path / "config.json").write_text('{"model_type": "xclip"}')
    with pytest.raises(ValueError, match=r"config\.json: model_type 'xclip' is not supported"):
        load_clip(tmp_path)


def test_cli_help() -> None:
    from omniclip import cli

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
