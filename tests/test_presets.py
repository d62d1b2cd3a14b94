"""The real-model preset's pieces that need no pretrained model: config checks, the table, the data refusal."""

import pytest

from llm_unlearn.presets import PresetConfig, preset_row, preset_table


def test_a_preset_config_names_what_is_wrong():
    with pytest.raises(ValueError, match="target_mode must be 'lora' or 'full'"):
        PresetConfig(target_mode="half")
    with pytest.raises(ValueError, match="unknown method.*nope"):
        PresetConfig(methods=("npo", "nope"))
    assert "hessian" in PresetConfig().methods  # the selection alias is a method here too


def _result(fqs, floor, distinguishable, retention):
    return {
        "forget_quality": fqs[0],
        "model_utility": 0.5,
        "summary": {"forget/rouge_l_recall": 0.25},
        "calibration": {
            "forget_quality_per_reference": fqs,
            "noise_floor": floor,
            "verdict": {"distinguishable": distinguishable},
            "utility_retention": retention,
        },
    }


def test_the_table_reads_the_median_over_references_and_the_worst_component():
    row = preset_row("npo (LoRA)", _result([0.2, 0.01, 0.5], 0.9, True, {"minimum": 0.8, "worst": "retain/x"}))
    assert row["forget_quality"] == 0.2 and row["noise_floor"] == 0.9 and row["min_retention"] == 0.8
    target = preset_row("target", _result([1e-9, 1e-8], 0.9, True, {}))
    meta = {"utility": {"world_facts_perturbed": {"candidates": 81, "known": 58, "kept": 24}}}
    table = preset_table([target, row], meta)
    assert "| npo (LoRA) | 0.2 | 0.9 | distinguishable | 0.5 | 0.8 (retain/x) | 0.25 |" in table
    assert "cannot tell the untouched target" not in table
    blind = preset_row("npo (LoRA)", _result([0.6], 1.0, None, {"minimum": 0.8, "worst": "retain/x"}))
    blind["informative"], blind["status"] = False, "undetermined"  # no test sees the target: the headline says so
    table = preset_table([target, blind], meta)
    assert "| undetermined |" in table and "cannot tell the untouched target" in table
    assert "| target | 5.5e-09 |" in table and "1 (by definition)" in table
    assert "world_facts 24 kept of 58 known / 81" in table


def test_every_preset_method_parses_into_a_lora_recipe_at_the_preset_budget(tmp_path):
    from llm_unlearn.presets import _unlearn_args
    from llm_unlearn.unlearn import parse_args

    cfg = PresetConfig()
    for method in cfg.methods:
        lora, _ = parse_args(_unlearn_args(tmp_path, method, cfg, full=False))
        full, _ = parse_args(_unlearn_args(tmp_path, method, cfg, full=True))
        assert lora.use_peft and not full.use_peft, method
        assert lora.max_steps == full.max_steps == cfg.unlearn_steps
        assert (lora.learning_rate, full.learning_rate) == (cfg.unlearn_lr, cfg.full_unlearn_lr)
        assert lora.output_dir != full.output_dir
