import pytest

from axpo_core.config import ConfigError, load_config


def test_default_config_loads():
    config = load_config()
    assert config.model.scale == "tiny-s"
    assert config.algorithm.eps_low == 0.2 and config.algorithm.eps_high == 0.4
    assert config.rollout.max_turns == 3 and config.evaluation.max_turns == 5


def test_unknown_key_names_file_and_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  scal: tiny-s\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value) and "model.scal" in str(err.value) and "unknown key" in str(err.value)


def test_bad_value_names_file_and_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("algorithm:\n  budget_ratio: 2.5\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: algorithm\.budget_ratio: .*less than or equal to 1"):
        load_config(path)


def test_overrides_are_validated():
    assert load_config(None, ["rollout.group_size=4"]).rollout.group_size == 4
    with pytest.raises(ConfigError, match="rollout.group_size"):
        load_config(None, ["rollout.group_size=0"])
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(None, ["rollout.group_size"])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.yaml")
    path = tmp_path / "broken.yaml"
    path.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_pass_at_k_cannot_exceed_samples():
    with pytest.raises(ConfigError, match="pass@k needs k <= samples"):
        load_config(None, ["evaluation.samples=2"])


@pytest.mark.parametrize("name", ["tiny", "qwen3vl-2b", "qwen3vl-4b", "qwen3vl-8b", "qwen3vl-32b"])
def test_shipped_configs_validate(name):
    from axpo_core.config import DEFAULT_CONFIG

    config = load_config(DEFAULT_CONFIG.parent / f"{name}.yaml")
    assert config.experiment == name


def test_embedded_default_equals_the_model_defaults():
    """configs/tiny.yaml and Config() agree, so a deployment's `config: {}` is the embedded default."""
    from axpo_core.config import Config

    assert load_config() == Config()
