"""The paper's RL data filter (App. A): SFT-solved questions dropped, teacher-failed questions dropped,
and no silently smaller rounds."""

from __future__ import annotations

import pytest

from axpo_core.rollout.factory import build_engine
from axpo_core.rollout.trajectory import Trajectory
from axpo_core.training.data import (
    filter_pool,
    filter_rl_pool,
    question_pool,
    question_pool_ids,
    round_question_ids,
    start_reward,
)


class ScriptedEngine:
    """Pure-logic stand-in for the rollout engine: `solved[id]` of the `group_size` rollouts are right."""

    def __init__(self, solved: dict[str, int]):
        self.solved, self.calls = solved, []

    def rollout(self, questions, group_size):
        self.calls.append([q.question_id for q in questions])
        return [
            Trajectory(
                q.question_id, i, [], [], [], [], 0, reward=float(i < self.solved.get(q.question_id, 0))
            )
            for q in questions
            for i in range(group_size)
        ]


def small(config, **training):
    return config.model_copy(update={"training": config.training.model_copy(update=training)})


def test_pool_ids_are_the_pool_without_generating_it(config) -> None:
    assert question_pool_ids(config) == [q.question_id for q in question_pool(config)]


def test_sft_and_teacher_filters_drop_what_the_paper_drops(config) -> None:
    cfg = small(config, pool_size=10, questions_per_round=2, filter_samples=4)
    ids = question_pool_ids(cfg)
    sft = ScriptedEngine({ids[0]: 4, ids[1]: 3, ids[2]: 4})  # 4/4: trivial for the SFT model
    teacher = ScriptedEngine({i: 1 for i in ids[3:]})  # fails ids[1] (0/4): unreachable
    kept, summary = filter_rl_pool(sft, cfg, lambda: teacher)
    assert kept == ids[3:]
    assert summary == {
        "questions": 10,
        "dropped_all_solved": 2,
        "mean_accuracy": 11 / 40,
        "dropped_teacher_all_failed": 1,
        "kept": 7,
        "start_accuracy": dict.fromkeys(ids[3:], 0.0),  # the SFT pass's, per kept question
    }
    assert teacher.calls == [ids[1:2] + ids[3:]]  # the teacher only sees what the SFT filter kept
    kept_no_teacher, summary = filter_rl_pool(ScriptedEngine({ids[0]: 4, ids[1]: 3, ids[2]: 1}), cfg)
    assert kept_no_teacher == ids[1:] and "dropped_teacher_all_failed" not in summary
    assert summary["start_accuracy"] == {ids[1]: 0.75, ids[2]: 0.25, **dict.fromkeys(ids[3:], 0.0)}


def test_a_rounds_start_reward_is_the_filter_accuracy_of_its_questions() -> None:
    accuracy = {"a": 0.75, "b": 0.25, "c": 0.0}
    assert start_reward(accuracy, ["a", "b"]) == 0.5 and start_reward(accuracy, ["c"]) == 0.0
    with pytest.raises(KeyError, match="no starting-policy accuracy for 1 round questions, e.g. 'd'"):
        start_reward(accuracy, ["a", "d"])


def test_filter_runs_in_chunks_and_keeps_order(config) -> None:
    cfg = small(config, pool_size=10)
    ids = question_pool_ids(cfg)
    engine = ScriptedEngine({})
    kept, _ = filter_pool(engine, ids, 2, drop=lambda c: False, chunk=4)
    assert kept == ids and [len(c) for c in engine.calls] == [4, 4, 2]


def test_a_pool_smaller_than_a_round_is_an_error(config) -> None:
    cfg = small(config, pool_size=10, questions_per_round=8)
    ids = question_pool_ids(cfg)
    with pytest.raises(ValueError, match="fewer than training.questions_per_round=8"):
        filter_rl_pool(ScriptedEngine({i: 4 for i in ids[:5]}), cfg)  # 5 kept < B = 8
    with pytest.raises(ValueError, match="has 3 questions"):
        round_question_ids(ids[:3], cfg, 0)
    assert len(round_question_ids(ids, cfg, 0)) == 8


def test_teacher_filter_with_a_real_checkpoint(config, tiny_model_dir) -> None:
    """training.teacher_path with a real (tiny) checkpoint: the teacher's engine is built and runs."""
    cfg = small(
        config, pool_size=3, questions_per_round=1, filter_samples=2, teacher_path=str(tiny_model_dir)
    )
    cfg = cfg.model_copy(update={"rollout": cfg.rollout.model_copy(update={"max_new_tokens_per_turn": 8})})
    built = []

    def teacher():
        built.append(1)
        return build_engine(cfg, model_path=cfg.training.teacher_path)[0]

    try:
        kept, summary = filter_rl_pool(build_engine(cfg, model_path=tiny_model_dir)[0], cfg, teacher)
    except ValueError as exc:  # an untrained tiny teacher may fail every question: then none is left
        assert built == [1] and "empty after the RL data filter" in str(exc)
        return
    assert built == [1] and summary["kept"] == len(kept) <= 3
    assert summary["questions"] == 3 and "dropped_teacher_all_failed" in summary
