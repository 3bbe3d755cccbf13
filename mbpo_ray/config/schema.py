"""The typed config of a run: one dataclass per section, one docstring per field.

Each field's docstring is the string literal right after it. The values the paper's presets
give these fields, and where each comes from, are in docs/hyperparameters.md.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

# mbpo: the paper's algorithm. sac: the same SAC with no model (real_ratio 1, G = 1; raise
# mbpo.updates_per_step for the paper's "no model, same G" ablation). pets, steve: the
# baselines of docs/baselines.md. rllib-sac: RLlib's SAC as an external reference.
ALGOS = ("mbpo", "sac", "pets", "steve", "rllib-sac")
PROPAGATIONS = ("ts-inf", "ts-1", "expectation")
PRECISIONS = ("float32", "bf16", "auto")  # TrainConfig.precision; the rule is mbpo_ray.precision
RUNTIMES = ("local", "ray")
# mbpo.termination: the rule that ends model rollouts (docs/termination.md). Besides these
# names, "package.module:function" names a user's vectorised function.
TERMINATIONS = ("known", "none", "learned")
SCHEDULES = ("sync", "async")
# mbpo.rollout_uncertainty: which rollout transitions the ensemble's disagreement keeps
# (docs/mbpo_plus.md#uncertainty-aware-rollouts).
ROLLOUT_UNCERTAINTIES = ("none", "m2ac", "macura")


@dataclass
class ModelConfig:
    """Probabilistic ensemble and its trainer (docs/hyperparameters.md)."""

    num_members: int = 7
    """Networks in the ensemble."""
    num_elites: int = 5
    """Members with the lowest holdout MSE; model rollouts draw from these."""
    hidden_width: int = 200
    """Units per hidden layer."""
    num_hidden_layers: int = 4
    """Hidden layers per member."""
    learning_rate: float = 1e-3
    """Adam learning rate of the ensemble."""
    batch_size: int = 256
    """Transitions per gradient step of each member."""
    weight_decays: Tuple[float, ...] = (2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4)
    """L2 decay per layer (the hidden layers, then the output layer), weights only."""
    holdout_ratio: float = 0.2
    """Share of D_env held out to measure the fit."""
    max_holdout: int = 5000
    """Largest holdout set, in transitions."""
    early_stop_patience: int = 5
    """Stop after this many epochs in which no member improved its holdout MSE by more than
    improvement_threshold."""
    improvement_threshold: float = 0.01
    """Relative drop of a member's holdout MSE that counts as an improvement (early stopping)."""
    init_max_logvar: float = 0.5
    """Initial upper soft bound on the predicted log-variance."""
    init_min_logvar: float = -10.0
    """Initial lower soft bound on the predicted log-variance."""
    logvar_bound_penalty: float = 0.01
    """Weight of the penalty that keeps the log-variance bounds tight."""
    max_fit_epochs: Optional[int] = None
    """Optional cap on the epochs of one fit (the original code's max_model_t); null: no cap,
    as in the paper presets."""
    max_fit_seconds: Optional[float] = None
    """Optional cap on the seconds of one fit; null: no cap, as in the paper presets."""
    termination_hidden_width: int = 200
    """Units per hidden layer of the learned termination classifier (mbpo.termination=learned)."""
    termination_num_hidden_layers: int = 2
    """Hidden layers of the learned termination classifier."""
    termination_max_epochs: int = 50
    """Largest number of epochs of one fit of the termination classifier (it also stops early,
    as the ensemble does)."""
    compile: bool = False
    """torch.compile the ensemble's training loss (forward, Gaussian NLL, weight decay) of each
    fit step (for GPUs; slow to warm up on a CPU)."""
    cuda_graph: bool = False
    """Replay each full-batch fit step (forward, backward, Adam) from a CUDA graph captured once
    per trainer: one launch instead of hundreds on a GPU; on a CPU the same steps run eagerly
    (docs/architecture.md#cuda-graphs)."""
    normalize_targets: bool = False
    """MBPO+ (docs/mbpo_plus.md#scale-aware-model-targets): fit the ensemble to per-dimension
    standardised targets (reward and each state change by their mean and std on the fit's training
    data), so that the Gaussian NLL's log-variance bounds, early stopping and elite choice weigh
    every dimension alike instead of the largest-scale ones; predictions come back in env units.
    false: the paper's raw targets."""
    stacked_fit: str = "auto"
    """In a seed group (train --seeds): fit all seeds' ensembles as one stacked fit ("always"),
    seed after seed ("never"), or "auto": stacked on a CUDA device, seed after seed on a CPU, where
    the stacked tensors outgrow the caches (docs/seed_groups.md)."""


@dataclass
class SACConfig:
    """The SAC agent (docs/hyperparameters.md)."""

    hidden_width: int = 256
    """Units per hidden layer of the actor and the critics."""
    num_hidden_layers: int = 2
    """Hidden layers of the actor and the critics."""
    learning_rate: float = 3e-4
    """Adam learning rate of the actor, the critics and the temperature."""
    batch_size: int = 256
    """Transitions per SAC update."""
    discount: float = 0.99
    """Discount factor gamma."""
    tau: float = 0.005
    """Polyak rate of the target critics."""
    init_log_alpha: float = 0.0
    """Initial log temperature."""
    target_entropy: Optional[float] = None
    """Entropy target of the temperature; null means -action_dim (the SAC default). The presets
    set the paper's values."""
    critic_layer_norm: bool = False
    """MBPO+ (docs/mbpo_plus.md#critic-normalisation): LayerNorm (no learned scale or shift) after
    each hidden layer of the critics and their targets, before the ReLU. false: the paper's SAC."""
    policy_layer_norm: bool = False
    """MBPO+: the same LayerNorm in the policy's hidden layers."""
    num_critics: int = 2
    """Critics in the ensemble: 2 is SAC's twin Q; more with critic_subset < num_critics is REDQ
    (docs/mbpo_plus.md#critic-normalisation): mbpo and sac."""
    critic_subset: int = 2
    """REDQ's M: the TD target takes the min over a random subset of this many target critics,
    drawn anew each update; equal to num_critics, the min over all (SAC). With
    critic_subset < num_critics the policy loss takes the mean over all critics (REDQ), else
    the min."""
    replay_size: int = 1_000_000
    """Capacity of D_env (capped at total_steps)."""
    compile: bool = False
    """torch.compile the update (SAC's written-out update, STEVE's losses); compiles on the first
    update (docs/hyperparameters.md has what it bought on the machines measured)."""
    cuda_graph: bool = False
    """Replay the whole update (losses, backward, Adam, target lerp) from a CUDA graph captured at
    the first update: one launch instead of hundreds on a GPU; on a CPU the same steps run eagerly.
    SAC-based learners that draw their noise before the update only (sac, mbpo; not steve)
    (docs/architecture.md#cuda-graphs)."""


@dataclass
class MBPOConfig:
    """The MBPO loop; its loop fields also drive the other SAC-based algorithms."""

    epoch_length: int = 1000
    """Env steps per epoch (one evaluation and one metrics record each)."""
    rollout_schedule: Tuple[int, int, int, int] = (20, 150, 1, 15)
    """[start_epoch, end_epoch, min_k, max_k]: the rollout length k grows linearly from min_k
    to max_k."""
    updates_per_step: int = 20
    """G: SAC updates per env step."""
    model_train_freq: int = 250
    """Env steps between model fits."""
    rollout_batch_size: int = 100_000
    """Start states per model-retrain period (400 per env step at period 250)."""
    rollout_freq: Optional[int] = None
    """Env steps between rollout batches; null means model_train_freq (the released code)."""
    model_retain_epochs: int = 1
    """Epochs of model rollouts kept in D_model."""
    real_ratio: float = 0.05
    """Share of real transitions in each SAC batch."""
    init_random_steps: Optional[int] = 5000
    """Uniform-random env steps before the policy acts; null (the generic preset): 5 episodes
    of the env's time limit, at least 500 and at most 5000, filled in when the env is made."""
    min_real_before_updates: int = 256
    """SAC updates start once D_env holds this many transitions (at least one batch)."""
    rollout_uncertainty: str = "none"
    """MBPO+ (docs/mbpo_plus.md#uncertainty-aware-rollouts): none (the paper: every rollout runs k
    steps); m2ac (masked rollouts: at each step keep only the transitions with the lowest
    uncertainty, a share that decays with the step); macura (a rollout stops where its
    uncertainty crosses a threshold set from a quantile of the first step's uncertainty at real
    start states). Both read the mean pairwise Jensen-Shannon divergence of the elites' Gaussians;
    k of the rollout schedule is the longest rollout."""
    m2ac_keep_rate: float = 0.5
    """m2ac: the share of transitions kept when k = 1; for k > 1 step h (from 0) keeps
    (k - h) / (2 (k + 1)) of the start states, M2AC's decaying rate."""
    macura_quantile: float = 95.0
    """macura: the percentile (0-100] of the first step's uncertainty that sets the threshold."""
    macura_scale: float = 1.0
    """macura: the threshold is this times that percentile, averaged over the run's rollout
    batches so far."""
    uncertainty_penalty: float = 0.0
    """m2ac, macura: each kept transition's reward minus this times its uncertainty (M2AC's
    model-error penalty); 0: rewards as predicted."""
    model_reset_every: int = 0
    """MBPO+ (docs/mbpo_plus.md#resets): re-initialise the dynamics ensemble (weights, log-variance
    bounds, its Adam state) every this many env steps after the warm-up, right before that step's
    fit; a multiple of model_train_freq. 0: never."""
    agent_reset_every: int = 0
    """MBPO+: re-initialise the agent's policy, critics and target critics and their Adam state (the
    temperature and both buffers kept) every this many env steps after the warm-up. 0: never."""
    termination: str = "known"
    """What ends a model rollout (MBPO) or a particle (PETS): known (the paper env's rule),
    none (never), learned (a classifier fit on D_env's terminated flags with the ensemble;
    never terminates until D_env holds a terminal transition), or package.module:function (a
    vectorised function (obs, act, next_obs) -> bool [B]). docs/termination.md."""


@dataclass
class PETSConfig:
    """CEM model-predictive control over the ensemble (Chua et al. 2018; docs/baselines.md)."""

    horizon: int = 30
    """Env steps per plan."""
    population: int = 500
    """Plans sampled per CEM iteration."""
    num_elites: int = 50
    """CEM elites (the lowest-cost plans), not model elites."""
    iterations: int = 5
    """CEM iterations per env step."""
    smoothing: float = 0.1
    """new mean/variance = smoothing * old + (1 - smoothing) * elite statistics."""
    min_variance: float = 0.001
    """CEM stops early once the largest variance of the plan falls below this."""
    num_particles: int = 20
    """Particles propagated per plan."""
    propagation: str = "ts-inf"
    """How particles move through the ensemble: one of ts-inf, ts-1, expectation."""
    random_episodes: int = 1
    """Uniform-random episodes before the first planner episode."""
    nan_cost: float = 1e6
    """Cost given to a plan whose predicted return is not finite."""


@dataclass
class STEVEConfig:
    """STEVE's TD target on a SAC learner (Buckman et al. 2018; docs/baselines.md)."""

    horizon: int = 3
    """H: the candidate targets are T_0 .. T_H."""
    num_q: int = 4
    """Q-functions in the critic ensemble."""
    num_dynamics: int = 4
    """Dynamics models in the ensemble."""
    num_reward: int = 4
    """Reward models in the ensemble."""
    num_done: int = 4
    """Done (termination) models in the ensemble."""
    model_hidden_width: int = 200
    """Units per hidden layer of the dynamics, reward and done models (SiLU layers, fit inside
    each update)."""
    model_num_hidden_layers: int = 3
    """Hidden layers of the dynamics, reward and done models."""
    model_learning_rate: float = 1e-3
    """Adam learning rate of the dynamics, reward and done models."""


@dataclass
class RayConfig:
    """The Ray runtime: one run as a group of actors (docs/architecture.md)."""

    address: Optional[str] = None
    """Ray cluster to join ("auto", "ray://host:10001", ...); null: RAY_ADDRESS if set, else
    start Ray in-process on this machine."""
    schedule: str = "sync"
    """sync: the paper's order and ratios, step for step; async: collection, model fitting,
    rollouts and SAC updates overlap, with a rate limiter on updates per env step."""
    num_collectors: int = 1
    """Actors that step the real env."""
    num_rollout_workers: int = 2
    """Actors that run model rollouts."""
    collector_cpus: float = 1.0
    """Logical CPUs each collector asks Ray for."""
    rollout_worker_cpus: float = 1.0
    """Logical CPUs each rollout worker asks Ray for."""
    rollout_worker_gpus: float = 0.0
    """GPUs each rollout worker asks Ray for; it runs on the GPU Ray assigns it. A run asking
    for more than the cluster has stops at once."""
    model_trainer_cpus: float = 1.0
    """Logical CPUs the model trainer asks Ray for."""
    model_trainer_gpus: float = 0.0
    """GPUs the model trainer asks Ray for; it runs on the GPU Ray assigns it."""
    learner_cpus: float = 1.0
    """Logical CPUs the SAC learner asks Ray for."""
    learner_gpus: float = 0.0
    """GPUs the SAC learner asks Ray for; it runs on the GPU Ray assigns it."""
    buffer_cpus: float = 0.0
    """Logical CPUs the replay buffer actor asks Ray for."""
    worker_node_resource: Optional[str] = None
    """A custom Ray resource that collectors and rollout workers require (e.g. one that only
    worker nodes advertise), to keep them off the head node; null: anywhere."""
    learner_node_resource: Optional[str] = None
    """A custom Ray resource that the learner, the model trainer and the buffer actor require
    (e.g. one that only GPU nodes advertise), to keep them together on that kind of node;
    null: anywhere (GPUs they ask for still place them on a GPU node)."""
    object_store_mb: int = 512
    """Object store size, for an in-process start only."""
    max_actor_restarts: int = 5
    """Times the driver recreates a dead collector, rollout worker or model trainer."""
    collector_chunk: int = 50
    """async: env steps per collector call."""
    learner_chunk: int = 100
    """async: SAC updates per learner call."""
    min_updates_per_step: Optional[float] = None
    """async: lower bound of the rate limiter on SAC updates per env step; the collectors wait
    while the learner is below it. null: the upper bound (the ratio is held at it)."""
    max_updates_per_step: Optional[float] = None
    """async: upper bound of the rate limiter on SAC updates per env step; null means
    mbpo.updates_per_step (the paper's G)."""


@dataclass
class TrainConfig:
    """One run: the env, the algorithm, the budget, and a section per component."""

    env_id: str = "InvertedPendulum-v5"
    """A registered gymnasium id with 1-D Box observations and actions (the seven paper envs
    get their paper preset, `mbpo-ray envs`; any other gets the generic preset), or a custom
    env as package.module:ClassOrFactory."""
    env_kwargs: Dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for the env (gymnasium.make's, e.g. max_episode_steps, or the custom
    env's constructor); plain YAML values."""
    algo: str = "mbpo"
    """One of mbpo, sac, pets, steve, rllib-sac."""
    label: Optional[str] = None
    """The run's arm of a comparison beside its algorithm, e.g. an ablation's name (a study sets it
    to the trial's variant); `mbpo-ray report` groups runs by algorithm and label. Letters, digits,
    '_', '.' and '-'; null: no label."""
    seed: int = 0
    """Random seed, 0 <= seed < 2**32 (the seeds numpy accepts)."""
    total_steps: int = 20_000
    """Env-step budget of the run."""
    device: str = "auto"
    """auto (CUDA when there is a CUDA device, else the CPU), cpu, cuda, cuda:N or mps; see
    mbpo_ray.devices."""
    precision: str = "float32"
    """float32; bf16: the SAC update, the ensemble's fit and the model rollouts under bfloat16
    autocast (weights, optimiser state, losses and log-variances float32); auto: bf16 where the
    device has bfloat16 matrix units (AVX512-BF16 or AMX CPUs, CUDA GPUs with bf16), else
    float32. See docs/precision.md (why float32 is the default)."""
    torch_threads: Optional[int] = None
    """Intra-op CPU threads for torch; null keeps torch's default (all cores). Set 1 when several
    runs share a machine."""
    eval_episodes: int = 5
    """Deterministic-policy episodes per evaluation."""
    checkpoint_every_epochs: int = 1
    """Epochs between checkpoints (the last epoch is always saved)."""
    keep_checkpoints_every: int = 0
    """Every this many epochs, also keep the run's networks (the policy and the dynamics
    ensemble; no buffers or optimisers, so not resumable) as checkpoints/step_N.pt, N the env
    steps, for `mbpo-ray analyze exploitation` (docs/diagnostics.md); 0 keeps none. algo mbpo
    only; an epoch keeps a copy only when it also writes a checkpoint."""
    video_every_epochs: int = 0
    """Every this many epochs, a run logged to W&B (`train --wandb`, a sweep trial) also logs a
    video of its policy (one episode, at most 500 steps) and, for mbpo and pets, of the model's dream
    beside reality (100 steps), made from the checkpoint just written (docs/video.md); the files
    stay in RUN/videos/. 0 logs none; a multiple of checkpoint_every_epochs."""
    runtime: str = "local"
    """local: one process; ray: MBPO as a group of Ray actors (see RayConfig)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The probabilistic ensemble."""
    sac: SACConfig = field(default_factory=SACConfig)
    """The SAC agent."""
    mbpo: MBPOConfig = field(default_factory=MBPOConfig)
    """The MBPO loop."""
    pets: PETSConfig = field(default_factory=PETSConfig)
    """The PETS baseline."""
    steve: STEVEConfig = field(default_factory=STEVEConfig)
    """The STEVE baseline."""
    ray: RayConfig = field(default_factory=RayConfig)
    """The Ray runtime."""
