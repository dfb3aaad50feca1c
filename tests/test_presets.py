"""Presets: Table 1's numbers and degradations, the shipped files, overrides and their types,
bad presets, the ``[everyday]`` table, the ``presets`` command and the wheel."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from deeprestore.config.presets import PresetError, available_presets, load_preset, parse_override
from deeprestore.config.settings import SettingsError

ROOT = Path(__file__).resolve().parent.parent


#: Table 1 of the paper, DeepRED's column per preset
TABLE_1 = {
    # preset: (σ_noise, LR, denoiser, σ_f, λ, µ, iterations)
    "denoise": (0.033, 0.01, "nlm", 3, 0.5, 0.5, 5000),
    "superres-x4": (0.02, 0.001, "bm3d", 5, 0.05, 0.06, 2000),
    "superres-x8": (0.02, 0.001, "bm3d", 5, 0.05, 0.06, 4000),
    "deblur-uniform": (0.005, 0.003, "nlm", 3, 0.01, 0.02, 15000),
    "deblur-gauss": (0.005, 0.002, "nlm", 2, 0.015, 0.02, 20000),
}


@pytest.mark.parametrize("name", sorted(TABLE_1))
def test_presets_reproduce_table_1(name):
    s = load_preset(name).settings_for("deepred")
    got = (s.sigma_noise, s.lr, s.denoiser, s.sigma_f, s.lam, s.mu, s.iterations)
    assert got == TABLE_1[name]
    assert (s.denoise_every, s.inner_steps, s.x_update) == (10, 1, "fixed-point")
    assert (s.input_channels, s.input_scale, s.ema) == (32, 0.1, 0.99)


def test_preset_degradations():
    assert load_preset("denoise").degradation["sigma"] == 25.0
    assert load_preset("deblur-uniform").degradation["kernel"] == "uniform9"
    assert load_preset("deblur-gauss").degradation["kernel"] == "gauss25"
    assert load_preset("deblur-gauss").degradation["sigma"] == pytest.approx(2**0.5)
    assert load_preset("superres-x4").degradation["factor"] == 4
    assert load_preset("superres-x8").degradation["factor"] == 8
    inpaint = load_preset("inpaint").settings_for("dip")
    assert (inpaint.lr, inpaint.sigma_noise, inpaint.skip_channels) == (0.01, 0.03, 128)


def test_methods_override_defaults():
    preset = load_preset("denoise")
    dip = preset.settings_for("dip")
    assert dip.method == "dip" and dip.runs == 2 and dip.iterations == 3000
    assert dip.lr == 0.01  # inherited from [defaults]
    assert preset.settings_for("dip-tv").tv_weight > 0
    assert preset.settings_for("nlm").sigma_f is None  # the input's σ


def test_every_shipped_preset_loads_for_every_method_it_names():
    presets = available_presets()
    assert {"denoise", "denoise-quick"} <= set(presets)
    for name in presets:
        preset = load_preset(name)
        for method in preset.methods:
            assert preset.settings_for(method).method == method


def test_overrides_and_their_types():
    preset = load_preset("denoise")
    settings = preset.settings_for("deepred", dict([parse_override("lam=0.25"),
                                                    parse_override("denoiser=bm3d"),
                                                    parse_override("iterations=7")]))
    assert (settings.lam, settings.denoiser, settings.iterations) == (0.25, "bm3d", 7)
    assert parse_override("clip_x=false") == ("clip_x", False)
    assert parse_override("lam=1") == ("lam", 1)  # ints are accepted for floats
    assert preset.settings_for("deepred", {"lam": 1}).lam == 1.0
    with pytest.raises(SettingsError, match="'lamda'"):
        parse_override("lamda=0.3")
    with pytest.raises(SettingsError, match="'iterations'.*int"):
        parse_override("iterations=2.5")
    with pytest.raises(SettingsError, match="KEY=VALUE"):
        parse_override("lam")
    with pytest.raises(SettingsError, match="denoiser"):
        preset.settings_for("deepred", {"denoiser": "wavelet"})
    with pytest.raises(SettingsError, match="lam"):
        preset.settings_for("deepred", {"lam": -1.0})


def test_a_user_copy_is_accepted(tmp_path: Path):
    copy = tmp_path / "mine.toml"
    copy.write_text(load_preset("denoise").text.replace("lam = 0.5", "lam = 0.7"))
    preset = load_preset(copy)
    assert preset.settings_for("deepred").lam == 0.7
    assert preset.path == copy


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[defaults]\nlamb = 1\n", "unknown setting 'lamb'"),
        ("[defaults]\niterations = 'many'\n", "'iterations'.*must be int"),
        ("[defaults]\nclip_x = 1\n", "'clip_x'.*must be bool"),
        ("colour = 'red'\n", "unknown key 'colour'"),
        ("[methods.dipp]\n", "unknown method 'methods.dipp'"),
        ("[methods.dip]\nlr = -1.0\n", "lr"),
        ("[degradation]\nsigma = 'high'\n", "degradation.sigma"),
        ("[degradation]\nblur = 3\n", "degradation.blur"),
        ("task = 'colourise'\n", "task"),
        ("[defaults\n", "does not parse"),
        ("[everyday]\nnet_channel = 32\n", "unknown setting 'net_channel'"),
        ("[everyday]\nnet_channels = 0\n", r"\[everyday\].*net_channels"),
    ],
)
def test_bad_presets_name_the_key(tmp_path: Path, text: str, message: str):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(PresetError, match=message) as info:
        load_preset(path)
    assert "\n" not in str(info.value).strip() or "does not parse" in message


def test_everyday_settings_apply_only_when_asked_and_overrides_still_win(tmp_path: Path):
    path = tmp_path / "photo.toml"
    path.write_text("[defaults]\nnet_channels = 128\nlr = 0.01\n[methods.dip]\nlr = 0.02\n"
                    "[everyday]\nnet_channels = 24\nlr = 0.005\n")
    preset = load_preset(path)
    table = preset.settings_for("dip")
    photo = preset.settings_for("dip", everyday=True)
    assert (table.net_channels, table.lr) == (128, 0.02)  # what reproduce runs
    assert (photo.net_channels, photo.lr) == (24, 0.005)  # over [methods] too
    assert preset.settings_for("dip", {"net_channels": 64}, everyday=True).net_channels == 64


def test_the_shipped_everyday_tables_leave_table_1_alone():
    for name in available_presets():
        preset = load_preset(name)
        for method in preset.methods:
            table, photo = preset.settings_for(method), preset.settings_for(method, everyday=True)
            changed = {key for key in vars(table) if getattr(table, key) != getattr(photo, key)}
            assert changed <= set(preset.everyday)  # nothing else moves


def test_unknown_preset_names_the_known_ones():
    with pytest.raises(PresetError, match="unknown preset 'nosuch'.*denoise"):
        load_preset("nosuch")
    with pytest.raises(PresetError, match="not found"):
        load_preset("missing/file.toml")


def test_the_presets_command_lists_and_prints_each_preset(run_cli):
    listing = run_cli("presets")
    assert listing.code == 0 and "denoise" in listing.out and "denoise-quick" in listing.out
    for name in available_presets():
        printed = run_cli("presets", name)
        assert printed.code == 0 and f'name = "{name}"' in printed.out
    denoise = run_cli("presets", "denoise").out
    assert "sigma_f = 3.0" in denoise and "[methods.deepred]" in denoise
    assert run_cli("presets", "nosuch").code == 2


def test_the_wheel_carries_every_preset(tmp_path: Path):
    """A non-editable install (the built wheel) must find every preset of presets/."""
    pytest.importorskip("hatchling")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path / "wheel"), str(ROOT)],
        check=True,
    )
    (wheel,) = (tmp_path / "wheel").glob("deeprestore-*.whl")
    shipped = {Path(p).name for p in (ROOT / "presets").glob("*.toml")}
    with zipfile.ZipFile(wheel) as archive:
        names = {Path(n).name for n in archive.namelist() if n.startswith("deeprestore/presets/")}
        archive.extractall(tmp_path / "site")
    assert shipped and shipped <= names
    probe = (
        "import deeprestore.config.presets as p, sys; "
        "found = p.available_presets(); "
        "assert all(str(v).startswith(sys.argv[1]) for v in found.values()), found; "
        "[p.load_preset(n) for n in found]; print(sorted(found))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path / "site")],
        cwd=tmp_path, env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, check=True,
    )
    assert sorted(p.removesuffix(".toml") for p in shipped) == eval(done.stdout)
