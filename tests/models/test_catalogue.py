"""models.catalogue: the families' declarations without torch equal the registry's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from core.errors import UnknownActivation
from models import catalogue
from models.activations import ALIASES, families, get_activation

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("cls", families(), ids=lambda c: c.name)
def test_every_family_reads_the_same_through_the_catalogue_and_its_snapshot(cls: type) -> None:
    live = catalogue.family_info(cls.name)  # the registry is loaded here: read from it
    stored = catalogue._decode(catalogue._encode(catalogue._from_registry())).families[cls.name]
    for info in (live, stored):
        assert info.name == cls.name and info.trainable == cls.trainable
        assert info.space() == cls.space()  # every ParamSpec field, choices as tuples
        defaults = {p.name: p.default for p in cls.space()}
        assert info.resolve_params({}) == cls.resolve_params({}) == defaults
        assert info.structural_values({}) == cls.structural_values({})


def test_aliases_and_unknown_names_behave_as_the_registry() -> None:
    for alias in [*ALIASES, "K-WTA", "Swish"]:
        assert catalogue.family_info(alias).name == get_activation(alias).name
    with pytest.raises(UnknownActivation) as ours:
        catalogue.family_info("nope")
    with pytest.raises(UnknownActivation) as theirs:
        get_activation("nope")
    assert str(ours.value) == str(theirs.value)
    assert catalogue.family_names() == [c.name for c in families()]


def test_a_fresh_process_reads_the_snapshot_without_importing_torch() -> None:
    catalogue.write_snapshot()
    code = ("import sys; from models.catalogue import family_info; "
            "print(family_info('vaf').structural_values({}), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=ROOT, check=True)
    assert out.stdout.strip().endswith("False"), out.stderr
    assert str(get_activation("vaf").structural_values({})) in out.stdout


def test_an_edited_family_source_changes_the_fingerprint(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A stale snapshot is never read: the fingerprint hashes every declaring source."""
    copies = []
    for src in catalogue._SOURCES:
        dst = tmp_path / src.name
        dst.write_bytes(src.read_bytes())
        copies.append(dst)
    monkeypatch.setattr(catalogue, "_SOURCES", tuple(copies))
    before = catalogue.fingerprint()
    copies[-1].write_text(copies[-1].read_text() + "\n# edited\n")
    assert catalogue.fingerprint() != before


def test_a_search_spec_parses_without_torch() -> None:
    """What ``actsearch search`` does before its first population (validate the spec,
    size K) needs no torch (a fresh interpreter; the snapshot exists after the tests above)."""
    catalogue.write_snapshot()
    code = ("import sys; from search.spec import parse_spec; "
            "from models.sizing import auto_population_size; "
            "s = parse_spec({'dataset': 'digits', 'families': ['vaf', 'rational'], 'trials': 8}); "
            "auto_population_size(s.arch_spec(), 'relu', {}, 64, 10, 128); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False", out.stderr


@pytest.mark.parametrize("env", [{}, {"OMP_NUM_THREADS": "1"}, {"MKL_NUM_THREADS": "1"},
                                 {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "2"},
                                 {"OMP_NUM_THREADS": "64"}])
def test_the_default_thread_count_is_torchs_without_importing_it(env: dict[str, str]) -> None:
    import os

    code = ("from models.sizing import torch_threads; a = torch_threads(); import torch; "
            "print(a, torch.get_num_threads())")
    full = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=ROOT, env={**full, **env}, check=True)
    ours, torchs = out.stdout.split()
    assert ours == torchs
