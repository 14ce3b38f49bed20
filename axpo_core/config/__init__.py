"""Every knob of an experiment, as pydantic models loaded from YAML, in three parts:

  schema.py   the sections, their fields, defaults and bounds
  checks.py   `Config` (the schema, checked across fields on every construction: `config_problems`) and
              what a machine lacks for a config (`environment_problems`)
  loading.py  `load_config(path, overrides)`, the one entry point: unknown keys and bad values fail with a
              single `ConfigError` that names the file and the dotted field (e.g. `configs/tiny.yaml:
              algorithm.budget_ratio: Input should be less than or equal to 1`)

Import from `axpo_core.config`; the parts are how it is kept, not what callers name.
"""

from axpo_core.config.checks import (
    REMOVED_KEYS,
    TINY_SCALE_NAMES,
    Config,
    ConfigProblems,
    Problem,
    config_problems,
    environment_problems,
    scaled_count,
    short,
)
from axpo_core.config.loading import (
    DEFAULT_CONFIG,
    MAX_CONFIG_BYTES,
    MAX_CONFIG_VALUES,
    MAX_ERROR_CHARS,
    ConfigError,
    load_config,
)
from axpo_core.config.schema import (
    REAL_BENCHMARKS,
    AlgorithmConfig,
    EvaluationConfig,
    ModelConfig,
    PipelineConfig,
    RolloutConfig,
    SamplingConfig,
    SFTConfig,
    Stage,
    StorageConfig,
    SweepConfig,
    ToolsConfig,
    TrackingConfig,
    TrainingConfig,
)

__all__ = [
    "DEFAULT_CONFIG",
    "MAX_CONFIG_BYTES",
    "MAX_CONFIG_VALUES",
    "MAX_ERROR_CHARS",
    "REAL_BENCHMARKS",
    "REMOVED_KEYS",
    "TINY_SCALE_NAMES",
    "AlgorithmConfig",
    "Config",
    "ConfigError",
    "ConfigProblems",
    "EvaluationConfig",
    "ModelConfig",
    "PipelineConfig",
    "Problem",
    "RolloutConfig",
    "SFTConfig",
    "SamplingConfig",
    "Stage",
    "StorageConfig",
    "SweepConfig",
    "ToolsConfig",
    "TrackingConfig",
    "TrainingConfig",
    "config_problems",
    "environment_problems",
    "load_config",
    "scaled_count",
    "short",
]
