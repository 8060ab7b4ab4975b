import pytest

from gamelab_export.config import TrainConfig, load_config


def test_overrides_take_the_declared_types(tmp_path):
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("units: 256\ndecoders: 2\n")
    config = load_config(yaml_file, ["--units=128", "--length_penalty=0.5", "--dev_data=none"])
    assert (config.units, config.decoders, config.length_penalty) == (128, 2, 0.5)
    assert config.dev_data is None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("--unit=128", "Unknown config keys: unit"),
        ("--units=many", "units='many' is not a valid int"),
        ("--decoders=0", "decoders must be >= 1"),
        ("--units", "must look like --key=value"),
        ("--member_units=1024,512", "member_units must list 1 positive widths"),
        ("--decoder_weights=int2", "decoder_weights must be one of int4, int8"),
        ("--animal_threshold=0", r"animal_threshold must be in \(0, 1\]"),
        ("--animal_threshold=1.5", r"animal_threshold must be in \(0, 1\]"),
    ],
)
def test_bad_settings_are_refused_by_name(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, [override])


def test_class_input_needs_an_encoder_with_an_imagenet_head():
    assert load_config(None, ["--class_input=true"]).class_input
    with pytest.raises(ValueError, match="class_input needs an EfficientNet-Lite encoder"):
        load_config(None, ["--class_input=true", "--encoder=inception_v3"])


def test_each_ensemble_member_has_its_own_seed_and_width():
    config = load_config(None, ["--decoders=3", "--member_units=1024,512,512", "--seed=7"])
    members = [config.member(index) for index in range(3)]
    assert [(m.seed, m.units) for m in members] == [(7, 1024), (8, 512), (9, 512)]
    assert load_config(None, ["--decoders=2", "--units=384"]).member(1).units == 384
    with pytest.raises(IndexError):
        config.member(3)


def test_a_saved_config_reads_back_without_the_keys_a_later_toolchain_dropped():
    saved = {**load_config(None, ["--units=128"]).to_dict(), "dropped_setting": 3}
    config = TrainConfig.from_saved(saved)
    assert config == load_config(None, ["--units=128"])
