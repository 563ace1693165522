import pytest

from cotdistill.io import atomic_dir
from cotdistill.models import convert_to_folder


def test_atomic_dir_replaces_only_on_success(tmp_path):
    out = tmp_path / "model"
    with atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("1")
    assert (out / "a.txt").read_text() == "1"
    with pytest.raises(RuntimeError), atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("half-written")
        raise RuntimeError("killed")
    assert (out / "a.txt").read_text() == "1"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temp folder left behind


def test_convert_to_folder_saves_a_loadable_model(tiny_gpt2, tmp_path):
    from transformers import AutoModelForCausalLM

    convert_to_folder({"source": "local", "path": str(tiny_gpt2)}, tmp_path / "hf")
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "hf").config.n_layer == 2
