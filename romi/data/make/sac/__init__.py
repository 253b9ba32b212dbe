"""SAC behaviour policies for the locomotion medium family, trained with RLlib (spec §7).

D4RL made `medium`, `medium-replay` and `expert` from one online SAC run per environment: "medium" is
the policy when it first reaches about a third of expert return, "medium-replay" is the replay buffer
up to that moment, "expert" is the converged policy. A `BehaviourRun` is that run for an (environment,
seed). The modules, from the bottom up:

    config.py     SACBehaviourConfig: how the run trains and how its policies are chosen
    selection.py  the medium / expert rule as pure functions of the evaluated checkpoints
    policy.py     a checkpointed policy as a numpy function of one observation
    recording.py  every transition the SAC samples (= its replay buffer, in order)
    rllib.py      the RLlib adapter: replay buffer, training step, D4RL's Q-networks, Ray session
    run.py        BehaviourRun: train, checkpoint, evaluate, resume, choose
"""

from romi.data.make.sac.config import SACBehaviourConfig, default_behaviour_root
from romi.data.make.sac.policy import SACPolicy, squashed_gaussian_action
from romi.data.make.sac.recording import Recorder, replay_episodes
from romi.data.make.sac.rllib import UniformReplay, quiet_rllib, unit_actions
from romi.data.make.sac.run import BehaviourRun, TrainingProgress, format_progress
from romi.data.make.sac.selection import (
    CheckpointRecord,
    ThresholdNotReachedError,
    best_checkpoint,
    choose_medium,
    closest_up_to_first_reaching,
    first_reaching,
)

__all__ = [
    "BehaviourRun", "CheckpointRecord", "Recorder", "SACBehaviourConfig", "SACPolicy", "ThresholdNotReachedError",
    "TrainingProgress", "UniformReplay", "best_checkpoint", "choose_medium", "closest_up_to_first_reaching",
    "default_behaviour_root", "first_reaching", "format_progress", "quiet_rllib",
    "replay_episodes", "squashed_gaussian_action", "unit_actions",
]
