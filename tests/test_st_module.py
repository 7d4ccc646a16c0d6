"""One checkpoint, three loaders: AutoModel+AutoProcessor, SentenceTransformer, fresh processes elsewhere."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.conftest import make_image, run_python


@pytest.fixture(scope="module")
def loaded(nano_dir):
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoProcessor

    model, info = AutoModel.from_pretrained(str(nano_dir), trust_remote_code=True, output_loading_info=True)
    processor = AutoProcessor.from_pretrained(str(nano_dir), trust_remote_code=True)
    st = SentenceTransformer(str(nano_dir), trust_remote_code=True, device="cpu")
    return model.eval(), processor, st, info


def mixed_items(images):
    return [
        {"image": images[0], "bbox": [20, 30, 140, 160], "coords": (29.69, -81.99), "text": "the crown in the box"},
        "a barrier island with a sandy beach",
        {"image": images[1]},
        [images[0], "changed to", {"image": images[2]}],
        {"coords": (-33.8568, 151.2153)},
        [{"image": images[2]}, {"bbox": [0, 0, 210, 210]}, "north-west quarter"],
    ]


def test_checkpoint_layout(nano_dir):
    names = {p.name for p in nano_dir.iterdir()}
    expected = {
        "config.json", "model.safetensors", "modeling_vlm2geovec.py", "processing_vlm2geovec.py", "st_vlm2geovec.py",
        "processor_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
        "modules.json", "config_sentence_transformers.json",
    }
    assert expected <= names, expected - names
    config = json.loads((nano_dir / "config.json").read_text())
    assert config["model_type"] == "vlm2geovec"
    assert config["auto_map"] == {
        "AutoConfig": "modeling_vlm2geovec.VLM2GeoVecConfig",
        "AutoModel": "modeling_vlm2geovec.VLM2GeoVecModel",
    }
    assert config["pooling"] == "last" and config["normalize"] is True
    processor_config = json.loads((nano_dir / "processor_config.json").read_text())
    assert processor_config["auto_map"] == {"AutoProcessor": "processing_vlm2geovec.VLM2GeoVecProcessor"}
    modules = json.loads((nano_dir / "modules.json").read_text())
    assert modules == [{"idx": 0, "name": "0", "path": "", "type": "st_vlm2geovec.VLM2GeoVecEmbedder"}]


def test_remote_code_loads_every_weight(loaded):
    model, processor, st, info = loaded
    assert info["missing_keys"] == set() and info["unexpected_keys"] == set() and info["mismatched_keys"] == set()
    assert type(processor.image_processor).__name__ == "Qwen2VLImageProcessorPil"


def test_automodel_equals_sentence_transformer(loaded, images):
    model, processor, st, _ = loaded
    items = mixed_items(images)
    with torch.no_grad():
        hf = model(**processor(items=items)).embeddings
    st_vectors = st.encode(items, batch_size=4, convert_to_tensor=True)
    assert st_vectors.shape == hf.shape
    assert (hf - st_vectors).abs().max().item() <= 1e-5


def test_prompts_are_instructions(loaded, images):
    model, processor, st, _ = loaded
    instruction = "Represent the remote-sensing query for retrieval."
    items = ["river delta", {"image": images[0], "text": "fields"}]
    with torch.no_grad():
        hf = model(**processor(items=items, instruction=instruction)).embeddings
    st.prompts["query"] = instruction
    try:
        query = st.encode_query(items, convert_to_tensor=True)
        document = st.encode_document(items, convert_to_tensor=True)
    finally:
        st.prompts["query"] = ""
    assert (hf - query).abs().max().item() <= 1e-5
    assert (query - document).abs().max().item() > 1e-3
    explicit = st.encode(items, prompt=instruction, convert_to_tensor=True)
    assert (explicit - query).abs().max().item() <= 1e-6


def test_encode_order_batch_size_and_outputs(loaded, images):
    _, _, st, _ = loaded
    items = mixed_items(images) + ["x", "a longer sentence about a harbour and its cranes"]
    whole = st.encode(items, batch_size=32)
    assert isinstance(whole, np.ndarray) and whole.dtype == np.float32 and whole.shape[0] == len(items)
    one_by_one = np.stack([st.encode([item], batch_size=1)[0] for item in items])
    assert np.abs(whole - one_by_one).max() <= 1e-4  # caller's order, whatever the length sorting did
    small_batches = st.encode(items, batch_size=3, show_progress_bar=True)
    assert np.abs(whole - small_batches).max() <= 1e-4
    as_tensor = st.encode(items[:2], convert_to_tensor=True)
    assert isinstance(as_tensor, torch.Tensor)
    single = st.encode("just one string")
    assert single.shape == (whole.shape[1],)
    truncated = st.encode(items[:2], truncate_dim=32, normalize_embeddings=True)
    assert truncated.shape == (2, 32)
    assert np.allclose(np.linalg.norm(truncated, axis=1), 1.0, atol=1e-5)
    assert st.get_embedding_dimension() == whole.shape[1]


def test_length_estimate_sorts_images_after_short_text(loaded, images):
    _, _, st, _ = loaded
    assert st._input_length("short") < st._input_length({"image": images[0]})
    assert st._input_length({"image": make_image(64, 64)}) < st._input_length({"image": make_image(400, 400)})


def test_bad_input_is_reported_by_encode(loaded, images):
    _, _, st, _ = loaded
    # The caller's index, although ST sorts inputs by length before batching.
    with pytest.raises(ValueError, match=r"inputs\[2\]\.coords\.lat"):
        st.encode(["fine", {"image": images[0]}, {"coords": (95.0, 10.0)}])
    with pytest.raises(ValueError, match=r"inputs\[0\]\.coords\.lon"):
        st.encode_query({"coords": (5.0, 190.0)})
    with pytest.raises(ValueError, match=r"bbox"):
        st.encode([{"image": images[0], "bbox": [50, 50, 40, 60]}])


SUBPROCESS_CODE = """
import json, sys, numpy as np, torch
from PIL import Image
from transformers import AutoModel, AutoProcessor
from sentence_transformers import SentenceTransformer
path = sys.argv[1] if len(sys.argv) > 1 else {path!r}
items = json.loads(open({items_path!r}).read())
for item in items:
    if isinstance(item, dict) and "image" in item:
        item["image"] = Image.open(item["image"]).convert("RGB")
model = AutoModel.from_pretrained(path, trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)
with torch.no_grad():
    hf = model(**processor(items=items)).embeddings.numpy()
st = SentenceTransformer(path, trust_remote_code=True, device="cpu")
np.save({out_hf!r}, hf)
np.save({out_st!r}, st.encode(items))
print("modules:", type(model).__module__, type(processor).__module__, type(st[0]).__module__)
"""


@pytest.mark.slow
def test_save_load_roundtrip_in_fresh_process_elsewhere(_nano, tmp_path, images):
    """Save from this process, load in another process started in another directory: exact equality."""
    from vlm2geovec.checkpoint import save_checkpoint

    model, processor = _nano
    target = tmp_path / "elsewhere" / "ckpt"
    save_checkpoint(model, processor, target)
    image_paths = []
    for i, image in enumerate(images):
        image_paths.append(str(tmp_path / f"img{i}.png"))
        image.save(image_paths[-1])
    items = [
        {"image": image_paths[0], "bbox": [1, 2, 100, 150], "coords": (10.5, 20.25), "text": "t"},
        "text only",
        {"image": image_paths[2]},
    ]
    (tmp_path / "items.json").write_text(json.dumps(items))
    loaded_items = [dict(items[0], image=images[0].copy()), items[1], {"image": images[2]}]
    from PIL import Image

    loaded_items[0]["image"] = Image.open(image_paths[0]).convert("RGB")
    loaded_items[2]["image"] = Image.open(image_paths[2]).convert("RGB")
    with torch.no_grad():
        expected = model(**processor(items=loaded_items)).embeddings.numpy()
    workdir = tmp_path / "other_cwd"
    workdir.mkdir()
    code = SUBPROCESS_CODE.format(
        path=str(target),
        items_path=str(tmp_path / "items.json"),
        out_hf=str(tmp_path / "hf.npy"),
        out_st=str(tmp_path / "st.npy"),
    )
    # A fresh HF_HOME: the remote code must come from the checkpoint folder itself.
    fresh = tmp_path / "fresh_hf_home"
    stdout = run_python(code, cwd=workdir, env_extra={"HF_HOME": str(fresh), "HF_MODULES_CACHE": str(fresh / "modules")})
    # Without the package imported, all three classes come from the checkpoint's own remote code.
    modules_line = next(line for line in stdout.splitlines() if line.startswith("modules:"))
    assert all(name.startswith("transformers_modules") for name in modules_line.split()[1:]), modules_line
    hf = np.load(tmp_path / "hf.npy")
    st = np.load(tmp_path / "st.npy")
    assert np.array_equal(hf, expected), np.abs(hf - expected).max()
    assert np.abs(st - expected).max() <= 1e-6


@pytest.mark.parametrize("backend", ["thread", "process"])
def test_look_ahead_preprocessing_gives_identical_vectors(loaded, images, monkeypatch, backend):
    """With look-ahead workers the batches are preprocessed in threads or spawned processes (run from the
    checkpoint's remote code); vectors must not change at all."""
    import sys

    _, _, st, _ = loaded
    module = st[0]
    module.preprocess_backend = backend
    prefetcher_class = sys.modules[type(module).__module__]._Prefetcher
    items = mixed_items(images) * 3 + [f"caption number {i}" for i in range(7)]
    module.preprocess_workers = 0
    serial = st.encode(items, batch_size=4)
    served = []
    real_exit = prefetcher_class.__exit__

    def recording_exit(self, *exc):
        served.append((self.hits, len(self.batches)))
        return real_exit(self, *exc)

    monkeypatch.setattr(prefetcher_class, "__exit__", recording_exit)
    remote = sys.modules[type(module).__module__]
    estimates = []
    real_estimate = remote.estimate_item_tokens

    def counting_estimate(item, image_processor):
        estimates.append(id(item))
        return real_estimate(item, image_processor)

    monkeypatch.setattr(remote, "estimate_item_tokens", counting_estimate)
    module.preprocess_workers = 2
    try:
        threaded = st.encode(items, batch_size=4)
        assert len(estimates) == len(items)  # once per item: our batch plan and encode's sort share them
        threaded_query = st.encode_query(items, batch_size=4)
    finally:
        module.preprocess_workers = None
        module.preprocess_backend = "thread"
    assert np.array_equal(serial, threaded)
    assert np.abs(threaded_query - serial).max() <= 1e-6  # the query prompt is empty for this checkpoint
    # Every batch came from the look-ahead: our order matches the one sentence-transformers forms.
    assert served and all(hits == total for hits, total in served), served


def test_process_workers_follow_processor_changes_and_survive_copies(loaded, images, tmp_path):
    import copy

    _, _, st, _ = loaded
    module = st[0]
    items = mixed_items(images) * 2 + ["terrace fields " * 300]  # only this one is longer than 400 tokens
    module.preprocess_workers = 2
    try:
        threaded = st.encode(items, batch_size=2)
        module.preprocess_backend = "process"
        first = st.encode(items, batch_size=2)
        pool = module._process_pool.executor
        assert st.encode(items, batch_size=2).tolist() == first.tolist() and module._process_pool.executor is pool
        module.max_seq_length = 400  # the workers hold a copy of the processor: the pool is rebuilt
        shorter = st.encode(items, batch_size=2)
        assert module._process_pool.executor is not pool
        copied = copy.deepcopy(st)  # a live pool is not part of the copied state
        assert copied[0].preprocess_backend == "process" and copied[0]._process_pool.executor is None
        st.save(str(tmp_path / "saved"))
        config = json.loads((tmp_path / "saved" / "sentence_vlm2geovec_config.json").read_text())
        assert config == {"preprocess_workers": 2, "preprocess_backend": "process"}
    finally:
        module.max_seq_length = None
        module.preprocess_workers = None
        module.preprocess_backend = "thread"
    assert np.array_equal(first, threaded)
    module.max_seq_length = 400
    try:
        assert np.array_equal(shorter, st.encode(items, batch_size=2))
    finally:
        module.max_seq_length = None
    assert np.array_equal(shorter[:-1], first[:-1]) and not np.allclose(shorter[-1], first[-1], atol=1e-3)
    with pytest.raises(ValueError, match="preprocess_backend must be one of"):
        module.preprocess_backend = "gpu"


def test_preprocess_workers_default_by_device(loaded):
    _, _, st, _ = loaded
    module = st[0]
    assert module.resolved_preprocess_workers("cpu") == 0
    assert module.resolved_preprocess_workers("cuda") >= 1
    module.preprocess_workers = 3
    try:
        assert module.resolved_preprocess_workers("cpu") == 3
    finally:
        module.preprocess_workers = None
